"""The three doors of the bounce intake (S7.4): an MTA's pipe (`manage.py ingest_bounce`), the
SMTP listener (bounces/listener.py) and the ESP webhooks (bounces/webhooks.py). Each keeps what
arrives and answers the sender so that nothing is lost: "taken", or "try again later" when the
database is down."""

from __future__ import annotations

import datetime
import io
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from django.utils import timezone

from bounces.listener import BounceController
from bounces.models import InboundMail, IntakeState
from invoices.models import Invoice, SendState
from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.smtp_fixtures import HOST, _worker_database_url, free_port

DOMAIN = "event.test"
ADDRESS = "jan@kowalski.example"


@pytest.fixture(autouse=True)
def _event_domain(settings, monkeypatch):
    settings.EVENT_MAIL_DOMAIN = DOMAIN
    # No send task for the session's broker: a later test's worker would pick it up.
    monkeypatch.setattr("outbox.services._enqueue_on_commit", lambda pk: None)


@pytest.fixture
def sent_message() -> OutgoingMessage:
    """An invoice mail sent in Reply-To mode (signed VERP envelope), as the worker leaves it."""
    factories.company()
    user = factories.user("REPLY", email="reply@acme.example")
    factories.profile(user, mode=SenderMode.REPLY_TO)
    customer = invoice_factories.customer("Kowalski", emails=[ADDRESS])
    invoice = invoice_factories.invoice(customer=customer, send_state=SendState.SENT)
    message = outbox_enqueue(
        user=user, to=customer.emails, subject="Invoice", body_text="x", related=invoice
    )
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.SENT, sent_at=timezone.now()
    )
    message.refresh_from_db()
    assert message.envelope_from.startswith("bounces+")
    return message


def dsn(message: OutgoingMessage, *, report_id: str = "<dsn-1@mx.test>") -> bytes:
    """An RFC 3464 report of a hard bounce for `message`, as Postfix writes it."""
    return f"""\
From: MAILER-DAEMON@mx.test (Mail Delivery System)
To: {message.envelope_from}
Subject: Undelivered Mail Returned to Sender
Message-ID: {report_id}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.test

Final-Recipient: rfc822; {ADDRESS}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{ADDRESS}>: Recipient address rejected

--B
Content-Type: text/rfc822-headers

Message-ID: {message.message_id}
Subject: Invoice

--B--
""".replace("\n", "\r\n").encode()


def _assert_bounced(message: OutgoingMessage) -> None:
    [event] = Event.objects.filter(message=message)
    assert (event.kind, event.params["address"], event.params["status"]) == (
        EventKind.BOUNCED,
        ADDRESS,
        "5.1.1",
    )
    invoice = Invoice.objects.get()
    assert invoice.send_state == SendState.BOUNCED
    assert list(invoice.customer.bounced_emails) == [ADDRESS]


# --- The pipe: manage.py ingest_bounce ------------------------------------------------------------


@pytest.mark.django_db
def test_ingest_bounce_reads_stdin_records_and_prints_one_line(sent_message):
    out = io.StringIO()

    call_command(
        "ingest_bounce",
        "--sender=<>",
        f"--recipient={sent_message.envelope_from}",
        stdin=io.BytesIO(dsn(sent_message)),
        stdout=out,
    )

    mail = InboundMail.objects.get()
    assert (mail.source, mail.state, mail.message) == ("pipe", IntakeState.BOUNCED, sent_message)
    assert (mail.envelope_sender, mail.envelope_recipients) == ("", [sent_message.envelope_from])
    assert bytes(mail.raw) == dsn(sent_message)
    assert out.getvalue() == f"{mail.pk} bounced -\n"
    _assert_bounced(sent_message)


@pytest.mark.django_db
def test_ingest_bounce_takes_a_text_stdin_and_recipients_as_postfix_expands_them(sent_message):
    out = io.StringIO()

    # `--recipient ${recipient}` expands to one argument per recipient after the option.
    call_command(
        "ingest_bounce",
        "--recipient",
        "other@event.test",
        sent_message.envelope_from,
        stdin=io.StringIO(dsn(sent_message).decode()),
        stdout=out,
    )

    mail = InboundMail.objects.get()
    assert mail.envelope_recipients == ["other@event.test", sent_message.envelope_from]
    assert mail.state == IntakeState.BOUNCED
    assert "Recipient address rejected" not in out.getvalue()  # never the content


@pytest.mark.django_db
def test_ingest_bounce_keeps_a_huge_mail_cut_and_marked(settings):
    settings.BOUNCE_MAX_BYTES = 1000
    stdin = io.BytesIO(b"Subject: big\r\n\r\n" + b"x" * 5000)

    call_command("ingest_bounce", stdin=stdin, stdout=io.StringIO())

    mail = InboundMail.objects.get()
    assert (len(bytes(mail.raw)), mail.truncated) == (1000, True)
    assert stdin.read() == b""  # all of it taken from the MTA


@pytest.mark.django_db
def test_ingest_bounce_exits_75_when_the_database_fails(sent_message, monkeypatch):
    def down(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("bounces.management.commands.ingest_bounce.bounce_ingest", down)

    with pytest.raises(CommandError) as failed:
        call_command("ingest_bounce", stdin=io.BytesIO(dsn(sent_message)), stdout=io.StringIO())

    assert failed.value.returncode == 75


def _manage(database_url: str, raw: bytes, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "EVENT_MAIL_DOMAIN": DOMAIN,
        "LANGUAGE_CODE": "en",
        # The VERP signature is keyed by SECRET_KEY: the process must use this one.
        "DJANGO_SECRET_KEY": django_settings.SECRET_KEY,
        "DJANGO_SETTINGS_MODULE": "directo_mail.settings",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "ingest_bounce", *args],
        cwd=django_settings.BASE_DIR,
        env=env,
        input=raw,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.django_db(transaction=True)
def test_ingest_bounce_as_an_mta_runs_it(sent_message):
    """A real process, stdin as bytes, on the test database: exit 0 and the mail recorded."""
    raw = dsn(sent_message)

    done = _manage(_worker_database_url(), raw, f"--recipient={sent_message.envelope_from}")

    assert done.returncode == 0, done.stderr.decode()
    mail = InboundMail.objects.get()
    assert done.stdout.decode() == f"{mail.pk} bounced -\n"
    assert (mail.state, mail.message, bytes(mail.raw)) == (IntakeState.BOUNCED, sent_message, raw)
    _assert_bounced(sent_message)


def test_ingest_bounce_without_a_database_exits_75_for_a_retry():
    raw = b"Subject: Undelivered Mail\r\n\r\nsecret body text\r\n"

    done = _manage("postgres://postgres@127.0.0.1:1/x", raw, "--sender=<>")

    assert done.returncode == 75, done.stderr.decode()
    # The command's own last word, not a crash (the intake logs its attempt above it).
    assert done.stderr.decode().splitlines()[-1] == (
        "CommandError: The database is not available; the mail stays with the MTA for a retry."
    )
    assert b"secret body text" not in done.stdout + done.stderr


# --- The SMTP listener ----------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[BounceController]:
    controller = BounceController(hostname=HOST, port=free_port())
    controller.start()
    yield controller
    controller.stop()


def _smtp(listener: BounceController) -> smtplib.SMTP:
    return smtplib.SMTP(listener.hostname, listener.port, timeout=10)


@pytest.mark.django_db
def test_the_listener_takes_mail_only_for_the_event_domain(listener):
    with _smtp(listener) as smtp:
        smtp.ehlo()
        # No SIZE refusal at MAIL: a bounce refused there is lost, a long one is kept cut.
        assert not smtp.has_extn("size")
        assert smtp.mail("")[0] == 250  # the null sender: every bounce comes from it
        code, reply = smtp.rcpt("someone@example.org")
        assert code == 550
        assert reply.startswith(b"5.1.1 <someone@example.org>")
        assert f"@{DOMAIN}".encode() in reply
        assert smtp.rcpt(f"BOUNCES+1-abc@{DOMAIN.upper()}")[0] == 250  # domains have no case
    assert not InboundMail.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_dsn_through_the_listener_becomes_an_event_on_its_message(listener, sent_message):
    with _smtp(listener) as smtp:
        refused = smtp.sendmail("<>", [sent_message.envelope_from], dsn(sent_message))
        reply = smtp.noop()  # the connection is still fine after the DATA reply

    assert refused == {}
    assert reply[0] == 250
    mail = InboundMail.objects.get()
    assert (mail.source, mail.envelope_sender) == ("smtp", "")
    assert mail.envelope_recipients == [sent_message.envelope_from]
    assert (mail.state, mail.message) == (IntakeState.BOUNCED, sent_message)
    _assert_bounced(sent_message)


@pytest.mark.django_db(transaction=True)
def test_garbage_through_the_listener_is_taken_and_kept(listener):
    binary = bytes(b for b in range(256) if b not in b"\r\n")
    garbage = b"\r\n".join(binary[i : i + 50] for i in range(0, len(binary), 50)) + b"\r\n"
    # What the email package cannot parse at all (nested too deep): kept with its error.
    nested = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(2000)
    )

    with _smtp(listener) as smtp:
        smtp.ehlo()
        for raw in (garbage, nested):
            smtp.mail("")
            smtp.rcpt(f"bounces@{DOMAIN}")
            code, reply = smtp.data(raw)
            assert code == 250, reply

    first, second = InboundMail.objects.order_by("pk")
    assert bytes(first.raw) == garbage
    assert (first.state, first.reason) == (IntakeState.UNMATCHED, "no_reference")
    assert bytes(second.raw) == nested
    assert (second.state, second.reason) == (IntakeState.UNREADABLE, "parse_error")
    assert second.error.startswith("RecursionError")
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_listener_keeps_a_long_mail_cut_and_marked(listener, settings):
    settings.BOUNCE_MAX_BYTES = 1000
    # Dot-stuffed lines, a line far past aiosmtpd's 1001-byte line limit, and the end.
    body = b"Subject: big\r\n\r\n..starts with a dot\r\n" + b"y" * 5000 + b"\r\n"

    with _smtp(listener) as smtp:
        smtp.ehlo()
        smtp.mail("")
        smtp.rcpt(f"bounces@{DOMAIN}")
        smtp.send(b"DATA\r\n")
        assert smtp.getreply()[0] == 354
        smtp.send(body + b"z" * 100_000 + b"\r\n.\r\n")  # smtplib would refuse the long line
        code, reply = smtp.getreply()
        assert code == 250, reply
        assert smtp.noop()[0] == 250

    mail = InboundMail.objects.get()
    assert (len(bytes(mail.raw)), mail.truncated) == (1000, True)
    unstuffed = body.replace(b"\r\n..starts", b"\r\n.starts")
    assert bytes(mail.raw) == (unstuffed + b"z" * 1000)[:1000]


@pytest.mark.django_db(transaction=True)
def test_the_listener_keeps_a_mail_at_the_limit_whole(listener, settings):
    settings.BOUNCE_MAX_BYTES = 1000
    body = b"Subject: x\r\n\r\n" + b"w" * 98 + b"\r\n"
    body = body * (1000 // len(body))
    body += b"v" * (998 - len(body)) + b"\r\n"
    assert len(body) == 1000

    with _smtp(listener) as smtp:
        smtp.sendmail("<>", [f"bounces@{DOMAIN}"], body)

    mail = InboundMail.objects.get()
    assert (bytes(mail.raw), mail.truncated) == (body, False)


@pytest.mark.django_db
def test_the_listener_takes_at_most_100_recipients_a_transaction(listener):
    with _smtp(listener) as smtp:
        smtp.ehlo()
        smtp.mail("")
        codes = [smtp.rcpt(f"bounces+{n}-x@{DOMAIN}")[0] for n in range(101)]

    assert codes == [250] * 100 + [452]


@pytest.mark.django_db
def test_the_listener_refuses_connections_past_its_limits(settings):
    """Per peer and in all: one more connection is answered 421 and closed; a closed one
    frees its place."""
    from bounces.listener import ConnectionLimiter

    limiter = ConnectionLimiter(per_peer=2, total=3)
    controller = BounceController(hostname=HOST, port=free_port(), limiter=limiter)
    controller.start()
    try:
        first, second = _smtp(controller), _smtp(controller)
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            _smtp(controller)
        assert refused.value.smtp_code == 421
        assert b"Too many connections" in refused.value.smtp_error
        first.quit()
        for _ in range(50):  # the server sees the close a moment later
            if limiter.open.total() < 2:
                break
            time.sleep(0.01)
        third = _smtp(controller)
        assert third.noop()[0] == 250
        # In all: another peer key, but the total is reached.
        limiter.per_peer = 10
        fourth = _smtp(controller)
        with pytest.raises(smtplib.SMTPConnectError):
            _smtp(controller)
        for smtp in (second, third, fourth):
            smtp.quit()
    finally:
        controller.stop()
    assert limiter.refused == 2


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("192.0.2.1", 25), "192.0.2.1"),
        (("2001:db8:1:2:3:4:5:6", 25, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 25, 0, 0), "2001:db8:1:2::/64"),
        (("::ffff:192.0.2.7", 25, 0, 0), "192.0.2.7"),
        (("fe80::1%eth0", 25, 0, 2), "fe80::/64"),
    ],
)
def test_a_peer_is_its_ipv4_address_or_its_ipv6_64(peer, key):
    from bounces.listener import peer_key

    assert peer_key(peer) == key


@pytest.mark.django_db
def test_the_listener_says_try_later_when_the_database_fails(listener, monkeypatch):
    def down(**kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr("bounces.listener.bounce_ingest", down)

    with _smtp(listener) as smtp:
        smtp.ehlo()
        smtp.mail("")
        smtp.rcpt(f"bounces@{DOMAIN}")
        code, reply = smtp.data(b"Subject: x\r\n\r\nx\r\n")

    assert (code, reply[:5]) == (451, b"4.3.0")


def test_bounce_server_serves_until_sigterm():
    """The command itself: listens, refuses other domains, stops cleanly on SIGTERM."""
    port = free_port()
    env = {
        **os.environ,
        "EVENT_MAIL_DOMAIN": DOMAIN,
        "DJANGO_SETTINGS_MODULE": "directo_mail.settings",
    }
    server = subprocess.Popen(
        [sys.executable, "manage.py", "bounce_server", "--host", HOST, "--port", str(port)],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stdout.readline() == f"bounce_server: listening on {HOST}:{port}\n".encode()
        with smtplib.SMTP(HOST, port, timeout=10) as smtp:
            assert smtp.ehlo()[1].startswith(DOMAIN.encode())  # no DNS lookup for the banner
            smtp.mail("")
            assert smtp.rcpt("someone@example.org")[0] == 550
            assert smtp.rcpt(f"bounces@{DOMAIN}")[0] == 250
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err.decode()
    assert out == b"bounce_server: stopped\n"


# --- ESP webhooks (anymail's tracking signal) -----------------------------------------------


def _tracking(message: OutgoingMessage, event_type: str, **fields) -> list:
    """What anymail's webhook view does with a verified event: the tracking signal."""
    fields.setdefault("recipient", ADDRESS)
    event = AnymailTrackingEvent(
        event_type=event_type,
        timestamp=datetime.datetime(2026, 11, 3, 10, 0, tzinfo=datetime.UTC),
        event_id=fields.pop("event_id", f"evt-{event_type}"),
        message_id="esp-0001",  # the ESP's own id: not ours, never used to match
        # As EspTransport must send it (see bounces/webhooks.py).
        metadata={"verp": message.envelope_from, "message_id": message.message_id},
        esp_event={"event": event_type, "recipient": fields["recipient"]},
        **fields,
    )
    return tracking.send(sender=object, event=event, esp_name="Mailgun")


@pytest.mark.django_db
def test_a_webhook_bounce_is_an_event_on_its_message_once(sent_message):
    for _ in range(2):  # the ESP sends the event again when it missed our answer
        _tracking(
            sent_message,
            "bounced",
            mta_response="550 5.1.1 The email account that you tried to reach does not exist",
            description="Not delivering to previously bounced address",
        )

    first, again = InboundMail.objects.order_by("pk")
    assert (first.source, first.state, first.message) == (
        "webhook:Mailgun",
        IntakeState.BOUNCED,
        sent_message,
    )
    assert first.envelope_recipients == [sent_message.envelope_from]
    assert (again.state, again.reason) == (IntakeState.REFUSED, "replayed")
    _assert_bounced(sent_message)
    [event] = Event.objects.all()
    assert event.explanation == "recipient_unknown"
    assert "does not exist" in event.reply


@pytest.mark.django_db
def test_a_webhook_rejection_without_a_reply_is_a_bounce(sent_message):
    _tracking(sent_message, "rejected", event_id="evt-2", description="Suppressed")

    mail = InboundMail.objects.get()
    assert (mail.state, mail.message) == (IntakeState.BOUNCED, sent_message)
    [bounced] = Event.objects.all()
    assert (bounced.kind, bounced.params["status"]) == (EventKind.BOUNCED, "5.0.0")
    assert bounced.reply == "Suppressed"


@pytest.mark.django_db
def test_a_webhook_event_without_the_verp_metadata_decides_nothing(sent_message):
    """The Message-ID in the metadata alone (issue 11: it used to find the message) is kept,
    unmatched: only the signed VERP names a message."""
    event = AnymailTrackingEvent(
        event_type="rejected",
        event_id="evt-2",
        recipient=ADDRESS,
        metadata={"message_id": sent_message.message_id},
        description="Suppressed",
    )

    tracking.send(sender=object, event=event, esp_name="Postmark")

    mail = InboundMail.objects.get()
    assert (mail.state, mail.reason, mail.message, mail.envelope_recipients) == (
        IntakeState.UNMATCHED,
        "no_signed_address",
        None,
        [],
    )
    assert not Event.objects.exists()
    assert Invoice.objects.get().send_state == SendState.SENT


@pytest.mark.django_db
def test_a_webhook_deferral_is_a_delay(sent_message):
    _tracking(sent_message, "deferred", mta_response="451 4.2.2 Mailbox full, try again later")

    mail = InboundMail.objects.get()
    assert mail.state == IntakeState.DELAYED
    [event] = Event.objects.all()
    assert (event.kind, event.params["status"]) == (EventKind.DELIVERY_DELAYED, "4.2.2")
    assert Invoice.objects.get().send_state == SendState.SENT


@pytest.mark.django_db
def test_a_complaint_is_kept_but_is_no_bounce(sent_message):
    for _ in range(2):
        _tracking(sent_message, "complained")

    mail = InboundMail.objects.get()  # once, although sent twice
    assert (mail.source, mail.state, mail.message) == (
        "webhook:Mailgun",
        IntakeState.COMPLAINT,
        sent_message,
    )
    assert sent_message.message_id.encode() in bytes(mail.raw)
    [event] = Event.objects.all()  # the same intake as an ARF report by mail
    assert (event.kind, event.explanation) == (EventKind.COMPLAINT, "complaint")
    assert Invoice.objects.get().send_state == SendState.SENT
    sent_message.refresh_from_db()
    assert sent_message.bounced_at is None


@pytest.mark.django_db
def test_other_tracking_events_are_ignored(sent_message):
    _tracking(sent_message, "delivered")
    _tracking(sent_message, "opened")

    assert not InboundMail.objects.exists()
    assert not Event.objects.exists()
