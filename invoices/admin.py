"""Django admin for customers and invoices; the send state is the worker's, so read-only."""

from django.contrib import admin

from .letters import LetterForm
from .models import Customer, Invoice, InvoiceLine, Letter


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "emails", "language"]
    list_filter = ["language"]
    search_fields = ["name", "address"]


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
