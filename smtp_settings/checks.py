"""System checks: an ESP relay's bounce webhook must be authenticated; production needs a real
event domain. (The encryption keys are required by the settings themselves.)"""

import warnings

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured


@register(Tags.security)
def check_esp_webhook_secret(app_configs, **kwargs) -> list[Error]:
    """The relay ESP's tracking webhook (/anymail/<esp>/tracking/) feeds the bounce intake: a
    webhook nobody authenticates lets anyone mark invoices bounced. Its view is built the way
    the URL builds it, so anymail itself says whether it is secured: basic auth from ANYMAIL's
    WEBHOOK_SECRET, or the ESP's own signing key where the ESP signs (Mailgun, Mandrill, Postal,
    Resend, MailerSend, ...). https://anymail.dev/en/stable/tips/securing_webhooks/"""
    from anymail.exceptions import AnymailInsecureWebhookWarning

    from directo_mail.urls import esp_tracking_urls

    errors = []
    for pattern in esp_tracking_urls():
        view = pattern.callback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnymailInsecureWebhookWarning)
            try:
                instance = view.view_class(**view.view_initkwargs)
            except ImproperlyConfigured as missing:  # a required signing key is not set
                errors.append(
                    Error(
                        f"The ESP relay's bounce webhook /anymail/{pattern.pattern} cannot "
                        f"verify its callers: {missing}",
                        hint="Set the ESP's webhook signing key in ANYMAIL (see the ESP's page "
                        "at https://anymail.dev/en/stable/esps/).",
                        id="directo_mail.E001",
                    )
                )
                continue
        if getattr(instance, "warn_if_no_basic_auth", False) and not instance.basic_auth:
            errors.append(
                Error(
                    f"The ESP relay's bounce webhook /anymail/{pattern.pattern} is open to "
                    "anyone: ANYMAIL has no WEBHOOK_SECRET and this ESP signs nothing that "
                    "anymail checks.",
                    hint='Add "WEBHOOK_SECRET": "<random user>:<random password>" to ANYMAIL '
                    "and put the same credentials in the ESP's webhook URL "
                    "(https://user:password@host/anymail/<esp>/tracking/).",
                    id="directo_mail.E002",
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
