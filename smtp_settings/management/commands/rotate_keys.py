"""`manage.py rotate_keys`: re-encrypt every stored secret under the first key.

Rotation: put the new key first in FIELD_ENCRYPTION_KEYS (keep the old ones after it),
run this command, then remove the old keys.
"""

from django.core.management.base import BaseCommand, CommandError

from ...crypto import SecretDecryptionError
from ...services import secrets_rotate


class Command(BaseCommand):
    help = "Re-encrypt all stored secrets with the first key of FIELD_ENCRYPTION_KEYS."

    def handle(self, *args, **options) -> None:
        try:
            counts = secrets_rotate()
        except SecretDecryptionError as error:
            raise CommandError(str(error)) from None
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"{sum(counts.values())} secrets re-encrypted."))
