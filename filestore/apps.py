"""App config for filestore: files in the database, shared by every machine (issue 13)."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FilestoreConfig(AppConfig):
    name = "filestore"
    verbose_name = _("Stored files")
    default_auto_field = "django.db.models.BigAutoField"
