"""Microsoft 365 (S5): OAuth in the card's popup (msal), then SMTP XOAUTH2 to the platform's
M365_SMTP_SERVER with StartTLS. Its flow is `oauth.py`; what Exchange Online answers is
explained here."""

from django.utils.translation import gettext_lazy as _

from smtp_settings.catalogue import Explanation, Rule
from smtp_settings.catalogue import phrase as _p
from smtp_settings.models import SenderMode

from ..base import Preset, Provider


def _preset(email: str) -> Preset:
    return Preset(
        {"mode": SenderMode.MICROSOFT365, "login": email},
        _("Filled in for Microsoft 365. Save, then authenticate with Microsoft 365."),
    )


PROVIDER = Provider(
    key="microsoft365",
    name=_("Microsoft 365"),
    mode=SenderMode.MICROSOFT365,
    oauth_module="smtp_settings.providers.microsoft365.oauth",
    server_setting="M365_SMTP_SERVER",
    security="starttls",
    mx=_p(r"\.mail\.protection\.outlook\.com$"),
    spf_include="include:spf.protection.outlook.com",
    preset=_preset,
    reconnect_event="m365_reconnect",
    reconnect_explanation="m365_reconnect",
    explanations=(
        Explanation(
            "m365_smtp_auth_disabled",
            _(
                "Microsoft 365 has SMTP sign-in (SMTP AUTH) turned off for this mailbox or "
                "organisation."
            ),
            _(
                "Ask your Microsoft 365 administrator to enable “Authenticated SMTP” in the "
                "Microsoft 365 admin center: for the whole organisation, or for this user under "
                "Users → Active users → the user → Mail → Manage email apps. Check also that the "
                "user has the right to send mail."
            ),
            transient=False,
        ),
        Explanation(
            "m365_basic_auth",
            _("Microsoft 365 no longer accepts a password for sending mail."),
            _(
                "Choose “Microsoft 365 OAUTH” as the mail sender, save, and click “Authenticate "
                "with Microsoft 365”. App passwords do not work any more either."
            ),
            transient=False,
        ),
        Explanation(
            "m365_reconnect",
            _("Microsoft 365 no longer accepts the platform's sign-in for this account."),
            _(
                "Open your user card and click “Authenticate with Microsoft 365” again "
                "(%(login)s). This happens when the consent was withdrawn, the password changed "
                "or the sign-in expired. Microsoft said: %(error)s"
            ),
            transient=False,
        ),
        Explanation(
            "m365_graph_consent",
            _("Microsoft Graph did not let the platform send mail for this account."),
            _(
                "Open your user card and click “Authenticate with Microsoft 365” again, and "
                "accept the permission to send mail as you (Mail.Send). If your organisation "
                "requires it, an administrator must grant consent to the application first."
            ),
            transient=False,
        ),
        Explanation(
            "m365_graph_mailbox",
            _("This Microsoft 365 account has no mailbox that Microsoft Graph can send from."),
            _(
                "Ask your Microsoft 365 administrator to give the account an Exchange Online "
                "mailbox (a licence with Exchange), or choose another mail sender."
            ),
            transient=False,
        ),
    ),
    rules=(
        # Microsoft: "550 5.7.30 Basic authentication is not supported for Client Submission"
        # (S5.1); "535 5.7.139 Authentication unsuccessful, basic authentication is
        # disabled"; security defaults block legacy sign-in the same way.
        Rule(
            "m365_basic_auth",
            classes="5",
            statuses=("5.7.30",),
            phrases=_p(r"basic auth\w* is (not supported|disabled)|security defaults"),
        ),
        # "535 5.7.139 Authentication unsuccessful, the user credentials were incorrect."
        Rule(
            "auth_failed",
            classes="5",
            phrases=_p(r"credentials were incorrect|too many failed logon"),
        ),
        # "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the
        # Tenant. Visit https://aka.ms/smtp_auth_disabled" (or "... for the Mailbox"; S5.2, S5.5).
        Rule(
            "m365_smtp_auth_disabled",
            classes="5",
            statuses=("5.7.139",),
            phrases=_p(r"smtpclientauthentication|smtp_auth_disabled"),
        ),
    ),
)
