"""Error reports hide EMAIL_URL's password, ANYMAIL's keys and every configured secret, with
DEBUG on too (directo_mail.reporting); tests/reliability/test_attacks_defaults.py tries it
on a real dev server."""

from __future__ import annotations

import json
import secrets

import pytest
from django.test import RequestFactory
from django.views.debug import technical_500_response

from directo_mail.reporting import secrets_scrub


def _page(settings, meta: dict) -> str:
    request = RequestFactory().post("/x/", {"password": "typed-" + "p" * 12}, **meta)
    request.sensitive_post_parameters = ["password"]
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        return technical_500_response(
            request, type(error), error, error.__traceback__
        ).content.decode()


@pytest.fixture
def known(settings) -> dict[str, str]:
    values = {
        "relay": "relay-" + secrets.token_hex(8),
        "esp key": "key-" + secrets.token_hex(8),
        "hook": "hook:" + secrets.token_hex(8),
    }
    settings.DEBUG = True
    settings.EMAIL_HOST_PASSWORD = values["relay"]
    settings.ANYMAIL = {
        "POSTMARK_SERVER_TOKEN": values["esp key"],
        "WEBHOOK_SECRET": values["hook"],
    }
    return values


def test_the_debug_page_hides_settings_environment_and_typed_passwords(settings, known):
    anymail = json.dumps({"WEBHOOK_SECRET": known["hook"]})
    meta = {"EMAIL_URL": f"smtp+tls://u:{known['relay']}@relay.example:587", "ANYMAIL": anymail}
    page = _page(settings, meta)

    assert "RuntimeError" in page
    assert [name for name, value in known.items() if value in page] == []
    assert "typed-" + "p" * 12 not in page
    assert settings.SECRET_KEY not in page


def test_django_s_own_reporter_would_show_them(settings, known):
    """Control: the detector above sees the leak with Django's own filter and reporter."""
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = "django.views.debug.SafeExceptionReporterFilter"
    settings.DEFAULT_EXCEPTION_REPORTER = "django.views.debug.ExceptionReporter"
    anymail = json.dumps({"WEBHOOK_SECRET": known["hook"]})  # the dev server copies os.environ
    meta = {"EMAIL_URL": f"smtp+tls://u:{known['relay']}@relay.example:587", "ANYMAIL": anymail}
    page = _page(settings, meta)
    assert known["relay"] in page and known["hook"] in page


def test_scrub_replaces_plain_and_escaped_forms(settings):
    secret = "a&b<c>" + secrets.token_hex(6)
    settings.EMAIL_HOST_PASSWORD = secret
    from html import escape
    from urllib.parse import quote

    text = secrets_scrub(f"{secret} {escape(secret)} {quote(secret, safe='')}")
    assert secret not in text and escape(secret) not in text and quote(secret, safe="") not in text
