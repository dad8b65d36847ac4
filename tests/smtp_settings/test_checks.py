"""System checks: an ESP relay's bounce webhook that nobody authenticates is an error."""

from __future__ import annotations

import pytest

from smtp_settings.checks import check_esp_webhook_secret


def _ids(settings, backend: str, anymail: dict) -> list[str]:
    settings.EMAIL_BACKEND = backend
    settings.ANYMAIL = anymail
    return [error.id for error in check_esp_webhook_secret(None)]


def test_an_smtp_relay_has_no_webhook_to_secure(settings):
    assert _ids(settings, "django.core.mail.backends.smtp.EmailBackend", {}) == []


@pytest.mark.parametrize("esp", ["postmark", "sparkpost", "brevo", "mailjet"])
def test_an_esp_without_webhook_secret_is_an_error(settings, esp):
    backend = f"anymail.backends.{esp}.EmailBackend"
    assert _ids(settings, backend, {}) == ["directo_mail.E002"]
    assert _ids(settings, backend, {"WEBHOOK_SECRET": "bounces:s3cret-s3cret"}) == []


def test_an_esp_that_signs_needs_its_signing_key(settings):
    backend = "anymail.backends.mailgun.EmailBackend"
    assert _ids(settings, backend, {}) == ["directo_mail.E001"]
    # Mailgun's signature is the check: no basic auth needed once its key is set.
    assert _ids(settings, backend, {"MAILGUN_WEBHOOK_SIGNING_KEY": "key-abc"}) == []
