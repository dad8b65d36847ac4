"""The connection test: DNS → TCP → TLS → EHLO → AUTH → MAIL FROM / RCPT TO → RSET/QUIT.

Nothing is sent: the envelope is offered and then reset. Each step's outcome is reported with
the server's words and, on failure, the explanation in the reader's language.

What it may show is limited (issue 11, item 10): for the platform relay only whether it
answers (its address, banner and replies are the platform's, not the user's business); RCPT
only for the user's own address unless staff asks (no probing which addresses exist); never a
private address a name resolved to.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext_lazy as _

from .errors import SendError
from .explain import error_from_exception, explain
from .models import Security
from .resolve import SenderConfig, SenderConfigError, TransportKind
from .transports import SmtpTransport, relay_transport, transport_for

STEPS = {
    "dns": _("Server name lookup (DNS)"),
    "connect": _("Connection (TCP)"),
    "tls": _("Encryption (TLS)"),
    "ehlo": _("Greeting (EHLO)"),
    "auth": _("Login (AUTH)"),
    "envelope": _("Sender and recipient check (MAIL FROM / RCPT TO)"),
    "quit": _("Closing without sending (RSET / QUIT)"),
}
RELAY_STEP = "relay"
RELAY_LABEL = _("The platform's mail server answers")
API_STEP = "api"
API_LABEL = _("Sign-in to the provider's sending service (API)")
# Which step a transport stage belongs to.
_STAGE_STEP = {"starttls": "tls", "mail": "envelope", "rcpt": "envelope"}

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class Step:
    name: str
    outcome: str = SKIPPED
    detail: str = ""
    reply: str = ""
    explanation: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.name == API_STEP:
            return str(API_LABEL)
        return str(RELAY_LABEL if self.name == RELAY_STEP else STEPS[self.name])


@dataclass
class ConnectionTest:
    steps: list[Step]
    config_error: str = ""

    @property
    def passed(self) -> bool:
        """Every step that ran passed, through to the end."""
        return not self.config_error and self.steps[-1].outcome == OK

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "config_error": self.config_error,
            "steps": [
                {
                    "step": s.name,
                    "label": s.label,
                    "outcome": s.outcome,
                    "detail": s.detail,
                    "reply": s.reply,
                    "explanation": s.explanation,
                }
                for s in self.steps
            ],
        }


def connection_test(
    sender: SenderConfig, *, to: str, own_address: str | None = None
) -> ConnectionTest:
    """Run every step against the sender's server; stop at the first failure.

    With `own_address` (a user who is not staff), RCPT TO may only name that address.
    """
    if sender.transport == TransportKind.RELAY:
        return _relay_test()
    steps = {name: Step(name) for name in STEPS}
    result = ConnectionTest(list(steps.values()))
    try:
        validate_email(to)
    except ValidationError:
        result.config_error = str(
            _("“%(address)s” is not a valid e-mail address.") % {"address": to}
        )
        return result
    if own_address is not None and to.strip().lower() != own_address.strip().lower():
        result.config_error = str(
            _(
                "The connection test checks the recipient only for your own address "
                "(%(address)s): which other addresses a server accepts is not shown."
            )
            % {"address": own_address}
        )
        return result
    try:
        transport = transport_for(sender)
    except SenderConfigError as error:
        result.config_error = str(error.message)
        return result
    except SendError as error:  # e.g. the password was entered for another server
        explained = explain(error.explanation, error.params)
        result.config_error = f"{explained['title']} {explained['fix']}"
        return result
    if callable(getattr(transport, "check", None)):  # a provider's API (Microsoft Graph)
        return _api_test(transport)
    if not isinstance(transport, SmtpTransport):  # an ESP relay: an API, no SMTP conversation
        result.config_error = str(_("This mail sender cannot be tested here yet."))
        return result
    try:
        transport.open()
        _record_progress(steps, transport)
        smtp = transport.smtp
        transport.stage = "mail"
        transport._expect(*smtp.mail(sender.envelope_sender), 250)
        transport.stage = "rcpt"
        code, reply = smtp.rcpt(to)
        if code != 251:  # 251: "user not local; will forward" is a yes
            transport._expect(code, reply, 250)
        steps["envelope"].outcome = OK
        steps["envelope"].detail = f"{sender.envelope_sender} → {to}"
        steps["envelope"].reply = f"{code} {reply.decode(errors='replace')}"
        transport.stage = "quit"
        smtp.rset()
        smtp.quit()
        transport.smtp = None
        steps["quit"].outcome = OK
    except SendError as error:
        _record_failure(steps, transport, error)
    except (OSError, smtplib.SMTPException) as error:
        failure = error_from_exception(error, stage=transport.stage, params=transport.params)
        _record_failure(steps, transport, failure)
    finally:
        transport.close()
    if sender.security != Security.SSL and sender.security != Security.STARTTLS:
        steps["tls"].detail = str(_("not used: the connection is unencrypted"))
    if not transport.authenticates:
        steps["auth"].detail = str(_("not used: no user name"))
    return result


def _relay_test() -> ConnectionTest:
    """Whether the platform relay answers: connect, greet, sign in as the platform, quit.

    Nothing else is shown, not even the explanation's details: the relay's address and
    replies belong to the platform.
    """
    step = Step(RELAY_STEP)
    result = ConnectionTest([step])
    transport = relay_transport()
    if not isinstance(transport, SmtpTransport):  # an ESP relay: an API, no SMTP conversation
        result.config_error = str(_("This mail sender cannot be tested here yet."))
        return result
    try:
        transport.open()
        step.outcome = OK
    except (SendError, OSError, smtplib.SMTPException):
        step.outcome = FAILED
        step.explanation = explain("relay_unavailable")
    finally:
        transport.close()
    return result


def _api_test(transport) -> ConnectionTest:
    """A provider's API: a token for sending is taken, nothing is sent (its `check()` says
    what was checked)."""
    step = Step(API_STEP)
    result = ConnectionTest([step])
    try:
        step.detail = transport.check()
        step.outcome = OK
    except SendError as error:
        step.outcome = FAILED
        step.reply = error.reply
        step.explanation = explain(error.explanation, error.params)
    finally:
        transport.close()
    return result


def _record_progress(steps: dict[str, Step], transport: SmtpTransport) -> None:
    for stage, detail in getattr(transport, "progress", []):
        step = steps[_STAGE_STEP.get(stage, stage)]
        step.outcome, step.detail = OK, detail


def _record_failure(steps: dict[str, Step], transport: SmtpTransport, error: SendError) -> None:
    _record_progress(steps, transport)
    step = steps[_STAGE_STEP.get(transport.stage, transport.stage)]
    step.outcome = FAILED
    step.reply = error.reply
    step.explanation = explain(error.explanation, error.params)
