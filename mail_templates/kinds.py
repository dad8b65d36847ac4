"""What each kind of mail template may use: its placeholders, its shipped default text and a
sample record to try it on.

Pure data and gettext, no query and no other app: `invoices` and `outbox` import this app, so
it imports neither of them (the real records' contexts are built where the records live:
invoices.mail.invoice_mail_context, invoices.letters.letter_context, mail_test_context here).
A default is written in the placeholder language itself, so staff see in the editor exactly
what a customer gets, and is built with gettext: call it under translation.override(language).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.utils import formats
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .models import MailTemplateKind


@dataclass(frozen=True)
class Kind:
    placeholders: tuple[str, ...]
    default: Callable[[], tuple[str, str]]  # (subject, body) in the active language
    sample: Callable[[], dict[str, str]]  # a made-up record's values, in the active language
    record_label: Promise  # what the preview asks for to show a real record
    purpose: Promise  # where the template is used, for the editor


def _ph(name: str) -> str:
    return f"{{{{ {name} }}}}"


# -- the invoice mail: the composer's prefill and every bulk invoice job ------------------------
INVOICE_PLACEHOLDERS = (
    "invoice.number",
    "invoice.total",  # the gross total, formatted in the customer's language
    "invoice.currency",
    "invoice.issue_date",  # YYYY-MM-DD
    "invoice.due_date",  # YYYY-MM-DD
    "customer.name",
    "company.name",
    "user.name",  # the sender's name from the user card
)


def _invoice_default() -> tuple[str, str]:
    # The very msgids of the former templates/emails/invoice/*.txt: their translations stay.
    subject = gettext("Invoice %(number)s") % {"number": _ph("invoice.number")}
    body = (
        gettext("Dear %(name)s,") % {"name": _ph("customer.name")}
        + "\n\n"
        + gettext(
            "please find attached invoice %(number)s for %(amount)s %(currency)s, due on %(due)s."
        )
        % {
            "number": _ph("invoice.number"),
            "amount": _ph("invoice.total"),
            "currency": _ph("invoice.currency"),
            "due": _ph("invoice.due_date"),
        }
        + "\n\n"
        + gettext("Kind regards")
        + "\n"
    )
    return subject, body


def _invoice_sample() -> dict[str, str]:
    return {
        "invoice.number": "FV/1/2026",
        "invoice.total": formats.localize(Decimal("1230.00")),
        "invoice.currency": "PLN",
        "invoice.issue_date": "2026-01-15",
        "invoice.due_date": "2026-01-29",
        "customer.name": gettext("Sample customer Ltd"),
        "company.name": gettext("Sample company"),
        "user.name": gettext("Sample user"),
    }


# -- a new letter: what the letter form starts with (rendered per customer when sent) -----------
LETTER_PLACEHOLDERS = ("customer.name", "customer.address", "customer.emails")  # = invoices.letters


def _letter_default() -> tuple[str, str]:
    subject = gettext("Information for our customers")
    body = (
        gettext("Dear %(name)s,") % {"name": _ph("customer.name")}
        + "\n\n\n\n"
        + gettext("Kind regards")
        + "\n"
    )
    return subject, body


def _letter_sample() -> dict[str, str]:
    return {
        "customer.name": gettext("Sample customer Ltd"),
        "customer.address": "Przykładowa 1\n00-001 Warszawa",
        "customer.emails": "first@customer.example, second@customer.example",
    }


# -- the test e-mail of the user card ----------------------------------------------------------
TEST_EMAIL_PLACEHOLDERS = ("user.name", "user.email", "company.name")


def _test_email_default() -> tuple[str, str]:
    return (
        gettext("Test e-mail: your mail sender works"),
        gettext("This is a test e-mail. If you can read it, your mail sender works.\n"),
    )


def _test_email_sample() -> dict[str, str]:
    return {
        "user.name": gettext("Sample user"),
        "user.email": "user@company.example",
        "company.name": gettext("Sample company"),
    }


def mail_test_context(*, user, company) -> dict[str, str]:
    """The test e-mail's placeholders for `user` (a User) and `company` (or None): strings."""
    return {
        "user.name": str(user.name or ""),
        "user.email": str(user.email or ""),
        "company.name": str(company.name) if company is not None else "",
    }


KINDS: dict[str, Kind] = {
    MailTemplateKind.INVOICE: Kind(
        INVOICE_PLACEHOLDERS,
        _invoice_default,
        _invoice_sample,
        _("Invoice number"),
        _("Sent with an invoice: prefilled in “Send by e-mail” and used by bulk invoice jobs."),
    ),
    MailTemplateKind.LETTER: Kind(
        LETTER_PLACEHOLDERS,
        _letter_default,
        _letter_sample,
        _("Customer name"),
        _("What a new letter to customers starts with; its placeholders are filled when sent."),
    ),
    MailTemplateKind.TEST_EMAIL: Kind(
        TEST_EMAIL_PLACEHOLDERS,
        _test_email_default,
        _test_email_sample,
        _("User code"),
        _("The test e-mail a user sends from the user card to check their mail sender."),
    ),
}
