"""App config for invoices: customers, invoices and the bulk-send button (issue 5)."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InvoicesConfig(AppConfig):
    name = "invoices"
    verbose_name = _("Invoices")

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the receivers)
