"""Error reports (the DEBUG page, the admins' error mail) that never show a configured secret.

Django's SafeExceptionReporterFilter hides settings whose names match API|TOKEN|KEY|SECRET|PASS|
SIGNATURE, but not EMAIL_URL (the relay's password in its URL), ANYMAIL (the ESP's keys under
names of their own) or the other URLs with credentials that the dev server copies from the
environment into request.META; and with DEBUG on it ignores `sensitive_post_parameters`. The
filter below hides those too, and the reporter replaces every configured secret that is left
anywhere in the finished report (an exception message, a local variable) with stars.
https://docs.djangoproject.com/en/5.2/howto/error-reporting/#custom-error-reports
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from urllib.parse import quote, unquote

from django.conf import settings
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

SUBSTITUTE = SafeExceptionReporterFilter.cleansed_substitute
# user:password@ in any URL (smtp+tls://relay:pw@host, postgres://app:pw@db, redis://:pw@cache)
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@")
# Names whose values are secrets, inside ANYMAIL and the like (the ESPs name their own keys).
_SECRET_NAME = re.compile("TOKEN|KEY|SECRET|PASS|SIGNATURE|CREDENTIAL", re.I)
# Shorter "secrets" would blank out ordinary words of the page; real ones are long.
_MIN_SECRET_LENGTH = 6


class SecretsHiddenFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|CREDENTIAL|ANYMAIL|_URL$|^CACHES$",
        flags=re.I,
    )

    def is_active(self, request) -> bool:
        # Django's filter steps aside when DEBUG is on; a developer's page must not show a
        # password typed into a form marked sensitive either.
        return True

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            cleansed = _USERINFO.sub(rf"\g<scheme>\g<user>:{SUBSTITUTE}@", cleansed)
        return cleansed


class SecretsHiddenReporter(ExceptionReporter):
    def get_traceback_html(self) -> str:
        return secrets_scrub(super().get_traceback_html())

    def get_traceback_text(self) -> str:
        return secrets_scrub(super().get_traceback_text())


def secrets_scrub(text: str) -> str:
    """`text` with every configured secret, as written or escaped, replaced by stars."""
    for secret in sorted(_known_secrets(), key=len, reverse=True):
        for form in {secret, html.escape(secret), quote(secret, safe=""), repr(secret)[1:-1]}:
            text = text.replace(form, SUBSTITUTE)
    return text


def _known_secrets() -> set[str]:
    values: list[str] = [
        settings.SECRET_KEY,
        *getattr(settings, "SECRET_KEY_FALLBACKS", []),
        *settings.FIELD_ENCRYPTION_KEYS,
        settings.EMAIL_HOST_PASSWORD,
        # Every setting named like a secret (M365_CLIENT_SECRET, GOOGLE_CLIENT_SECRET, …).
        *(
            value
            for name in dir(settings)
            if name.isupper() and _SECRET_NAME.search(name)
            for value in _flat(getattr(settings, name, None))
        ),
        *(database.get("PASSWORD") or "" for database in settings.DATABASES.values()),
        *_named_secrets(settings.ANYMAIL),
    ]
    urls = [*os.environ.values(), settings.CELERY_BROKER_URL]
    urls += [str(cache.get("LOCATION", "")) for cache in settings.CACHES.values()]
    for url in urls:
        for match in _USERINFO.finditer(url):
            values += [match["pw"], unquote(match["pw"])]
    return {str(value) for value in values if value and len(str(value)) >= _MIN_SECRET_LENGTH}


def _flat(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _flat(item)


def _named_secrets(value, secret: bool = False) -> Iterator[str]:
    """String leaves of a settings structure that sit under a secret-sounding name."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _named_secrets(item, secret or bool(_SECRET_NAME.search(str(key))))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _named_secrets(item, secret)
    elif secret and value:
        yield str(value)
