"""App config for smtp_settings."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SmtpSettingsConfig(AppConfig):
    name = "smtp_settings"
    verbose_name = _("Mail sending")

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the deploy checks)
