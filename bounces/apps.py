"""The bounces app: mail coming back to the event domain, read and matched to its message."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BouncesConfig(AppConfig):
    name = "bounces"
    verbose_name = _("Bounces")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the receiver of anymail's tracking signal (the ESP webhook door).
        from . import webhooks  # noqa: F401
