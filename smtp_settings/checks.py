"""Deploy checks: production must configure its own encryption keys and event domain."""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def check_encryption_keys(app_configs, **kwargs) -> list[Warning]:
    if not settings.FIELD_ENCRYPTION_KEYS:
        return [
            Warning(
                "FIELD_ENCRYPTION_KEYS is not set: secrets are encrypted with a key derived "
                "from SECRET_KEY.",
                hint="Generate one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`.",
                id="directo_mail.W001",
            )
        ]
    errors = []
    for index, key in enumerate(settings.FIELD_ENCRYPTION_KEYS):
        try:
            Fernet(key.encode())
        except ValueError:
            errors.append(
                Warning(
                    f"FIELD_ENCRYPTION_KEYS entry {index + 1} is not a valid Fernet key.",
                    id="directo_mail.W002",
                )
            )
    return errors


@register(Tags.security, deploy=True)
def check_event_domain(app_configs, **kwargs) -> list[Warning]:
    if settings.EVENT_MAIL_DOMAIN.endswith(".localhost"):
        return [
            Warning(
                "EVENT_MAIL_DOMAIN is a .localhost domain: Reply-To mode mail and bounces "
                "need a real domain whose MX points at the platform.",
                id="directo_mail.W003",
            )
        ]
    return []
