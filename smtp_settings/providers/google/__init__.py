"""Google (Gmail and Google Workspace): "Sign in with Google" in the card's popup (Authlib, the
issuer's OpenID configuration), then SMTP XOAUTH2 to GOOGLE_SMTP_SERVER over SSL; or, without a
Google client on the platform, its SMTP server with an app password. Its flow is `oauth.py`;
what Gmail answers is explained here."""

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from smtp_settings.catalogue import Explanation, Rule
from smtp_settings.catalogue import phrase as _p
from smtp_settings.models import Security, SenderMode

from ..base import Preset, Provider


def configured() -> bool:
    return bool(settings.GOOGLE_CLIENT_ID and settings.GOOGLE_CLIENT_SECRET)


def _preset(email: str) -> Preset:
    if configured():
        return Preset(
            {"mode": SenderMode.GOOGLE, "login": email},
            _("Filled in for Gmail / Google Workspace. Save, then click “Sign in with Google”."),
        )
    return Preset(
        {
            "mode": SenderMode.SMTP,
            "server": settings.GOOGLE_SMTP_SERVER,
            "security": Security.SSL,
            "login": email,
        },
        _(
            "Filled in for Gmail / Google Workspace. Create an app password in your Google "
            "account (2-Step Verification must be on), paste it below as Google shows it, then "
            "Save and press “Test connection”."
        ),
    )


PROVIDER = Provider(
    key="google",
    name=_("Google"),
    mode=SenderMode.GOOGLE,
    oauth_module="smtp_settings.providers.google.oauth",
    server_setting="GOOGLE_SMTP_SERVER",
    security=Security.SSL,
    mx=_p(r"(^|\.)(google\.com|googlemail\.com)$"),
    spf_include="include:_spf.google.com",
    preset=_preset,
    reconnect_event="google_reconnect",
    reconnect_explanation="google_reconnect",
    explanations=(
        Explanation(
            "gmail_app_password",
            _("Gmail wants an app password, not your Google account password."),
            _(
                "Turn on 2-Step Verification in your Google account, create an app password there "
                "and enter it here as the password (16 letters, without the spaces). Your usual "
                "Google password does not work for sending."
            ),
            transient=False,
        ),
        Explanation(
            "google_reconnect",
            _("Google no longer accepts the platform's sign-in for this account."),
            _(
                "Open your user card and click “Sign in with Google” again (%(login)s). This "
                "happens when the access was removed in the Google account, the password "
                "changed, or the Workspace administrator blocked the application. Google said: "
                "%(error)s"
            ),
            transient=False,
        ),
    ),
    rules=(
        # Gmail: "534-5.7.9 Application-specific password required. For more information, go to
        # 534 5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor"; an account Google wants
        # to see sign in first: "534-5.7.14 <...> Please log in via your web browser".
        Rule(
            "gmail_app_password",
            classes="5",
            phrases=_p(
                r"application-specific password|invalidsecondfactor|log in via your web browser"
            ),
        ),
    ),
)
