"""Django admin for customers and invoices; the send state is the worker's, so read-only."""

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .letters import LetterForm
from .models import Customer, Invoice, InvoiceLine, Letter
from .unsubscribe import customers_letters_resubscribe


class LettersOptOutFilter(admin.SimpleListFilter):
    title = _("letters")
    parameter_name = "letters"

    def lookups(self, request, model_admin):
        return [("opted_out", _("opted out")), ("subscribed", _("receive letters"))]

    def queryset(self, request, queryset):
        if self.value() == "opted_out":
            return queryset.filter(letters_opted_out_at__isnull=False)
        if self.value() == "subscribed":
            return queryset.filter(letters_opted_out_at__isnull=True)
        return queryset


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "emails", "language", "letters_opted_out_at"]
    list_filter = ["language", LettersOptOutFilter]
    search_fields = ["name", "address"]
    # The customer's own choice (a letter's unsubscribe link): staff clear it with the action
    # below when the customer asks for letters again, never by editing the date.
    readonly_fields = ["letters_opted_out_at", "letters_opted_out_letter"]
    actions = ["resubscribe_letters"]

    @admin.action(description=_("Re-subscribe to letters (the customer asked for them again)"))
    def resubscribe_letters(self, request, queryset) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = customers_letters_resubscribe(customer_ids=ids)
        self.message_user(
            request,
            ngettext(
                "%(count)s customer receives letters again.",
                "%(count)s customers receive letters again.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 1


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = [
        "number",
        "customer",
        "issue_date",
        "due_date",
        "total_gross",
        "currency",
        "send_state",
        "sent_at",
    ]
    list_filter = ["send_state", "currency", "issue_date"]
    search_fields = ["number", "customer__name"]
    date_hierarchy = "issue_date"
    raw_id_fields = ["customer"]
    inlines = [InvoiceLineInline]
    # Sending changes these (invoices.signals), never a hand; totals follow the lines.
    readonly_fields = ["send_state", "sent_at", "total_net", "total_vat", "total_gross", "pdf"]

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        invoice = form.instance
        invoice.recalculate()
        invoice.save(update_fields=["total_net", "total_vat", "total_gross"])


@admin.register(Letter)
class LetterAdmin(admin.ModelAdmin):
    form = LetterForm  # the same placeholder check as the letter page: no template slips in here
    list_display = ["subject", "created_by", "created_at"]
    search_fields = ["subject", "body"]
