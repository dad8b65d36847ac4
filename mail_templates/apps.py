"""App config for mail templates: a company's subject and body of each kind of mail."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MailTemplatesConfig(AppConfig):
    name = "mail_templates"
    verbose_name = _("Mail templates")
