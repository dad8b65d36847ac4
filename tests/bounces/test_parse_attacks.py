"""Attacks on the bounce parser (issue 16), from an attacker's review of its text notices, RFC
3464 in text parts, boundary repair, own-address exclusion and valid_recipient. Each test drives
an attack towards its goal and asserts it fails; each failed before its fix (an out-of-office
reply flagging a colleague, a delay warning made permanent, cubic and quadratic regular
expressions, lone surrogates and a crash from a declared charset, valid addresses and Bcc
recipients hidden, an international domain refused, a boundary turned into a header)."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from bounces.models import IntakeState
from bounces.parse import parse_bounce
from bounces.services import bounce_ingest
from invoices.models import Invoice, SendState
from outbox.models import MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

DOMAIN = "event.test"
db = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _event_domain(settings):
    settings.EVENT_MAIL_DOMAIN = DOMAIN


def _sent(emails: list[str], bcc: list[str] = ()) -> OutgoingMessage:
    """One invoice mail to `emails` (the customer's addresses), sent (Reply-To mode, VERP)."""
    factories.company()
    user = factories.user("REPLY", email="reply@acme.example")
    factories.profile(user, mode=SenderMode.REPLY_TO)
    customer = invoice_factories.customer("Kowalski", emails=emails)
    invoice = invoice_factories.invoice(customer=customer, send_state=SendState.SENT)
    message = outbox_enqueue(
        user=user, to=customer.emails, bcc=bcc, subject="Invoice", body_text="x", related=invoice
    )
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.SENT, sent_at=timezone.now()
    )
    message.refresh_from_db()
    return message


def _ingest(raw: bytes, message: OutgoingMessage):
    return bounce_ingest(raw=raw, source="test", envelope_recipients=[message.envelope_from])


def _nothing_flagged():
    invoice = Invoice.objects.get()
    assert invoice.customer.bounced_emails == {}
    assert invoice.send_state == SendState.SENT


# --- Goal 1: a mail that is no failure marks a customer's address bounced ---------------------

OOO = {
    # Exchange/Outlook out-of-office: "Auto-Submitted: auto-generated", not "auto-replied".
    "exchange": b"""Auto-Submitted: auto-generated
Subject: Automatic reply: Invoice

I no longer work at Kowalski Ltd. Your message will not be delivered to me
personally; please write to anna@kowalski.example instead.
""",
    # RFC 3834 vacation reply: a phone number passes for "the server's reply".
    "rfc3834": b"""Auto-Submitted: auto-replied
Subject: Re: Invoice

I am on leave until 1 September; mail sent to me now cannot be delivered to me
personally. Invoices: anna@kowalski.example, tel. +48 555 123 456.
""",
}


@db
@pytest.mark.parametrize("kind", OOO)
def test_an_out_of_office_reply_naming_a_colleague_flags_nobody(kind):
    message = _sent(["jan@kowalski.example", "anna@kowalski.example"])
    raw = (
        f"From: Jan <jan@kowalski.example>\nTo: {message.envelope_from}\n"
        f"In-Reply-To: {message.message_id}\n"
    ).encode() + OOO[kind]

    mail = _ingest(raw, message)

    assert mail.state == IntakeState.AUTO_REPLY, (mail.state, mail.report["recipients"])
    _nothing_flagged()


SENDMAIL_WARNING = b"""From: Mail Delivery Subsystem <MAILER-DAEMON@mx.kowalski.example>
Subject: Warning: could not send message for past 4 hours

    **********************************************
    **      THIS IS A WARNING MESSAGE ONLY      **
    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **
    **********************************************

   ----- Transcript of session follows -----
<jan@kowalski.example>... Deferred: Connection timed out with mx.kowalski.example.
Warning: message still undelivered after 4 hours
Will keep trying until message is 5 days old
"""


@db
def test_a_text_delay_warning_is_not_a_permanent_failure():
    message = _sent(["jan@kowalski.example"])
    mail = _ingest(SENDMAIL_WARNING, message)
    assert mail.state == IntakeState.DELAYED, mail.report["recipients"]
    _nothing_flagged()


@db
def _timed(raw: bytes) -> float:
    start = time.perf_counter()
    parse_bounce(raw)
    return time.perf_counter() - start


def test_blank_lines_cost_linear_time():
    """formats._RETURNED was `^\\s*(?:[-=*_ ]*\\s*)`: cubic on blank lines (500 took ~3 s,
    2,000 ~200 s; a 16 KiB notice, a day). Not a speed measurement: a guard against unbounded
    work, with a bound a thousand times what it takes now (milliseconds)."""
    raw = b"From: a@b.example\nSubject: Delivery failed\n\n" + b"\n" * 16000 + b"x\n"
    assert _timed(raw) < 5


def test_a_long_line_of_atext_costs_linear_time():
    """formats._ADDRESS was quadratic on a long run of address characters (16,000 '!' took
    ~3.6 s, 15 such parts 53 s): tokens are split now. A guard against unbounded work."""
    line = b"!" * 16000 + b"@" + b"a" * 16000
    parts = b"".join(b"--B\nContent-Type: text/plain\n\n" + line + b"\n" for _ in range(15))
    raw = (
        b"From: a@b.example\nSubject: Delivery failed\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="B"\n\n' + parts + b"--B--\n"
    )
    assert _timed(raw) < 5


# --- Goal 3: text that cannot be stored, a crash --------------------------------------------


def _notice(charset: bytes, diagnostic: bytes) -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=" + charset + b"\n\n"
        b"Delivery failed for <jan@kowalski.example>: " + diagnostic + b"\n"
    )


def test_a_utf7_notice_returns_no_lone_surrogate():
    [recipient] = parse_bounce(_notice(b"utf-7", b"550 5.1.1 unknown +2AA-")).recipients
    recipient.diagnostic.encode("utf-8")  # UnicodeEncodeError: '\ud800'


@db
def test_a_utf7_notice_for_a_real_recipient_is_recorded():
    """SQLite: the Event's reply cannot be encoded; PostgreSQL also refuses the report's jsonb
    ("\\ud800"), so the fallback save fails too and the exception reaches the door."""
    message = _sent(["jan@kowalski.example"])
    mail = _ingest(_notice(b"utf-7", b"550 5.1.1 unknown +2AA-"), message)
    assert (mail.state, mail.reason) == (IntakeState.BOUNCED, "")


def test_an_idna_charset_part_leaves_the_report_readable():
    report = parse_bounce(_notice(b"idna", b"550 5.1.1 unknown user"))
    assert report.error == "" and report.kind == "bounce", report.error


# --- Goal 4: a real bounce hidden ------------------------------------------------------------


def _dsn(message: OutgoingMessage, recipient: str) -> bytes:
    return f"""From: MAILER-DAEMON@mx.test
To: {message.envelope_from}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.test

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1

--B
Content-Type: text/rfc822-headers

Message-ID: {message.message_id}

--B--
""".encode()


@db
@pytest.mark.parametrize(
    ("customer", "final_recipient"),
    [
        # RFC 5322 atext; validate_email and the outbox accept it; valid_recipient does not.
        ("{jan}@kowalski.example", "{jan}@kowalski.example"),
        ("jan|ksiegowosc@kowalski.example", "jan|ksiegowosc@kowalski.example"),
        # outbox.message._ascii_domain sends RCPT TO in IDNA form; the DSN names that form,
        # _their_recipients compares with the Unicode form (intake, pre-existing).
        ("jan@bücher.pl", "jan@xn--bcher-kva.pl"),
    ],
)
def test_a_real_dsn_for_a_valid_address_is_recorded(customer, final_recipient):
    message = _sent([customer])
    mail = _ingest(_dsn(message, final_recipient), message)
    assert mail.state == IntakeState.BOUNCED, (mail.state, mail.reason, mail.report["recipients"])


@db
def test_a_notice_bounce_for_a_bcc_recipient_is_recorded():
    """formats.notice keeps only the returned message's To/Cc: a Bcc never fails there."""
    message = _sent(["jan@kowalski.example"], bcc=["archive@kowalski.example"])
    raw = f"""From: MAILER-DAEMON@mx.kowalski.example
To: {message.envelope_from}
Subject: Mail delivery failed
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B"

--B
Content-Type: text/plain

There was an error delivering your mail to <archive@kowalski.example>.
550 5.2.2 Mailbox full

--B
Content-Type: message/rfc822

From: reply@acme.example
To: jan@kowalski.example
Message-ID: {message.message_id}
Subject: Invoice

x
--B--
""".encode()
    mail = _ingest(raw, message)
    assert mail.state == IntakeState.BOUNCED, (mail.state, mail.reason, mail.report)


# --- Goal 5: _with_body_boundary's re.sub templates ----------------------------------------

BROKEN_BOUNDARY = b"""From: MAILER-DAEMON@mx.example
Content-Type: multipart/mixed; boundary="DECLARED"
Subject: Undelivered Mail

--%s
Content-Type: text/plain

hello
--%s--
"""


def test_a_backslash_n_in_the_body_boundary_injects_no_header():
    raw = BROKEN_BOUNDARY % (rb"X\nSubject:Injected", rb"X\nSubject:Injected")
    assert parse_bounce(raw).subject == "Undelivered Mail"  # reads 'Injected"'


def test_a_group_reference_in_the_body_boundary_is_harmless():
    raw = BROKEN_BOUNDARY % (rb"X\1", rb"X\1")
    assert parse_bounce(raw).error == ""  # "error: invalid group reference 1"
