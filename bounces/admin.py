"""Django admin: the inbound mail, read-only (what the intake received is evidence)."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .models import InboundMail
from .selectors import inbound_mail_raw_text


@admin.register(InboundMail)
class InboundMailAdmin(admin.ModelAdmin):
    list_display = ["received_at", "source", "subject", "state", "reason", "message"]
    list_filter = ["state", "source"]
    search_fields = ["subject", "envelope_sender", "reason"]
    exclude = ["raw"]
    readonly_fields = ["raw_text"]

    @admin.display(description=_("raw message"))
    def raw_text(self, obj: InboundMail) -> str:
        return inbound_mail_raw_text(obj)  # escaped by the admin: shown, never rendered

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
