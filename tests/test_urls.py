"""Top-level URLs: only the relay ESP's tracking webhook is mounted."""

from directo_mail.urls import esp_tracking_urls


def test_no_esp_no_webhook(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    assert esp_tracking_urls() == []


def test_only_the_configured_esps_tracking_webhook(settings):
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    [pattern] = esp_tracking_urls()
    assert (str(pattern.pattern), pattern.name) == ("mailgun/tracking/", "mailgun_tracking_webhook")
