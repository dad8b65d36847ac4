"""App config for outbox: outgoing messages, bulk jobs, tasks and events (issue 3 on)."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OutboxConfig(AppConfig):
    name = "outbox"
    verbose_name = _("Outbox")
