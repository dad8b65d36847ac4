"""Attacks on the bounce intake (issue 11, items 6 and 7): what an outsider tries, and that the
goal fails.

- **Mark someone's invoice bounced.** Every recipient of an invoice mail has seen its
  Message-ID, and the Return-Path of their copy shows its signed VERP address. The attacker
  writes DSNs for invoice A: quoting A's Message-ID to the plain bounce address, with the VERP
  of a mail B they received themselves, with A's number and a made-up signature, with A's VERP
  only in the report's headers; through the MTA's pipe (`ingest_bounce`), the SMTP listener and
  the ESP webhook (an event anymail authenticated, without the VERP metadata). Counted: the
  attempts that changed an invoice, a customer, a message or added an Event. The same counter
  sees the change made by a genuine bounce (the control), and by the forgeries once the intake
  matches by Message-ID again (the defence taken away).
- **Take the intake's memory.** Several 10 MB DSNs of 60,000 recipient blocks each, sent at
  once over SMTP to the real `bounce_server` (a process of its own), and one on the stdin of
  `ingest_bounce`: each process's peak RSS (VmHWM, from wait4) against a stated bound, and the
  wall time. The control: the same run with the recipient limit lifted goes past the bound.
- **Hold every connection.** Connections from one peer and from several (127.0.0.x) to the
  real `bounce_server`, kept open: the ones accepted past the limits. The control: aiosmtpd's
  own server, without the limiter, accepts them.
- **Flood a message's Events with delay notices**, each with its own report Message-ID (so none
  is a replay): the delay Events past the cap. The control: with the cap lifted, they pile up.
"""

from __future__ import annotations

import datetime
import io
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone

from bounces import services
from bounces.listener import BounceController, ConnectionLimiter
from bounces.models import InboundMail, IntakeState
from bounces.parse import _PARSE_BYTES
from invoices.models import Customer, Invoice, SendState
from outbox.message import verp_address
from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.smtp_fixtures import HOST, _worker_database_url, free_port

DOMAIN = "event.test"
VICTIM = "jan@kowalski.example"
ATTACKER = "eve@attacker.example"
# Peak RSS an ingest_bounce process may reach while taking one huge DSN: the Django process
# itself (about 60-90 MB here, more with psycopg loaded) plus the mail (at most
# BOUNCE_MAX_BYTES, parsed with at most BOUNCE_MAX_RECIPIENTS blocks kept).
RSS_BOUND_MB = 150
# What a warmed-up bounce_server may grow by while taking CONCURRENT_DSNS huge DSNs at once:
# four mails in flight (two being received, two read) of at most BOUNCE_MAX_BYTES each, with
# room for a copy of each; it does not depend on how many recipients they name. Measured as
# growth over the server's own idle RSS, so the baseline of the database driver does not count
# (SQLite about 79 MB idle, PostgreSQL about 87).
GROWTH_BOUND_MB = 100
HUGE_RECIPIENTS = 60_000
HUGE_BYTES = 10 * 1024 * 1024
CONCURRENT_DSNS = 4


@pytest.fixture(autouse=True)
def _event_domain(settings, monkeypatch):
    settings.EVENT_MAIL_DOMAIN = DOMAIN
    # No send task for the session's broker: a later test's worker would pick it up.
    monkeypatch.setattr("outbox.services._enqueue_on_commit", lambda pk: None)


def _sent_invoice_mail(user, customer_name: str, address: str) -> OutgoingMessage:
    customer = invoice_factories.customer(customer_name, emails=[address])
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


@pytest.fixture
def victim_and_attacker():
    """Invoice A to the victim, invoice B to the attacker: both Reply-To mode (signed VERP)."""
    factories.company()
    user = factories.user("REPLY", email="reply@acme.example")
    factories.profile(user, mode=SenderMode.REPLY_TO)
    return (
        _sent_invoice_mail(user, "Kowalski", VICTIM),
        _sent_invoice_mail(user, "Eve", ATTACKER),
    )


def dsn(
    *,
    to: str,
    original_message_id: str,
    recipient: str = VICTIM,
    action: str = "failed",
    status: str = "5.1.1",
    report_id: str = "<dsn-1@mx.test>",
    returned_headers: str = "",
) -> bytes:
    """An RFC 3464 report as Postfix writes it."""
    return f"""\
From: MAILER-DAEMON@mx.test (Mail Delivery System)
To: {to}
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

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected

--B
Content-Type: text/rfc822-headers

{returned_headers}Message-ID: {original_message_id}
Subject: Invoice

--B--
""".replace("\n", "\r\n").encode()


def _state() -> tuple:
    """What a bounce can change: invoices, customers' flags, messages' bounce time, Events."""
    return (
        sorted(Invoice.objects.values_list("pk", "send_state")),
        sorted(
            (pk, sorted(flags))
            for pk, flags in Customer.objects.values_list("pk", "bounced_emails")
        ),
        sorted(OutgoingMessage.objects.values_list("pk", "bounced_at")),
        Event.objects.count(),
    )


# --- the doors, as an outsider reaches them -----------------------------------------------------


def _pipe(raw: bytes, recipient: str) -> None:
    call_command(
        "ingest_bounce",
        "--sender=<>",
        f"--recipient={recipient}",
        stdin=io.BytesIO(raw),
        stdout=io.StringIO(),
    )


@contextmanager
def _listener(**limits: int) -> Iterator[BounceController]:
    limiter = ConnectionLimiter(per_peer=limits.get("per_peer", 50), total=limits.get("total", 50))
    controller = BounceController(hostname=HOST, port=free_port(), limiter=limiter)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def _smtp_door(controller: BounceController):
    def send(raw: bytes, recipient: str) -> None:
        with smtplib.SMTP(controller.hostname, controller.port, timeout=30) as smtp:
            smtp.sendmail("<>", [recipient], raw)

    return send


def _webhook(message: OutgoingMessage, *, verp: str | None, event_id: str) -> None:
    """What anymail's view does with an event it authenticated (the signal)."""
    metadata = {"message_id": message.message_id}
    if verp is not None:
        metadata["verp"] = verp
    event = AnymailTrackingEvent(
        event_type="bounced",
        timestamp=datetime.datetime(2026, 11, 3, 10, 0, tzinfo=datetime.UTC),
        event_id=event_id,
        recipient=VICTIM,
        metadata=metadata,
        mta_response="550 5.1.1 no such user",
    )
    tracking.send(sender=object, event=event, esp_name="Mailgun")


def _forgeries(a: OutgoingMessage, b: OutgoingMessage) -> list[tuple[str, bytes, str]]:
    """(name, raw, envelope recipient): each aims at invoice A's customer and message."""
    pk = a.pk
    bad_hmac = f"bounces+{pk}-0123456789abcdef@{DOMAIN}"
    return [
        (
            "message-id only",
            dsn(to=f"bounces@{DOMAIN}", original_message_id=a.message_id),
            f"bounces@{DOMAIN}",
        ),
        (
            "another mail's VERP",
            dsn(to=b.envelope_from, original_message_id=a.message_id),
            b.envelope_from,
        ),
        ("bad HMAC", dsn(to=bad_hmac, original_message_id=a.message_id), bad_hmac),
        (
            "A's number, B's signature",
            dsn(to="x", original_message_id=a.message_id),
            verp_address(b.pk, DOMAIN).replace(f"+{b.pk}-", f"+{pk}-"),
        ),
        (
            "VERP in the headers only",
            dsn(
                to=a.envelope_from,
                original_message_id=a.message_id,
                returned_headers=f"Return-Path: <{a.envelope_from}>\r\n",
            ),
            f"bounces@{DOMAIN}",
        ),
    ]


def _attack_every_door(a, b, pipe, smtp, *, between=None) -> tuple[int, int, list[str]]:
    """(attempts, attempts that changed something, their names); `between` runs after each."""
    attempts = changed = 0
    names = []
    for door_name, door in (("pipe", pipe), ("smtp", smtp)):
        for n, (name, raw, recipient) in enumerate(_forgeries(a, b)):
            before = _state()
            door(raw.replace(b"<dsn-1@mx.test>", f"<{door_name}-{n}@mx.test>".encode()), recipient)
            attempts += 1
            if _state() != before:
                changed += 1
                names.append(f"{door_name}: {name}")
            if between:
                between()
    for n, verp in enumerate([None, b.envelope_from, f"bounces+{a.pk}-0123456789abcdef@{DOMAIN}"]):
        before = _state()
        _webhook(a, verp=verp, event_id=f"evt-{n}")
        attempts += 1
        if _state() != before:
            changed += 1
            names.append(f"webhook: verp={verp}")
        if between:
            between()
    return attempts, changed, names


@pytest.mark.django_db(transaction=True)
def test_bounces_accepted_without_a_signed_verp(victim_and_attacker, figures):
    a, b = victim_and_attacker
    with _listener() as controller:
        attempts, changed, names = _attack_every_door(a, b, _pipe, _smtp_door(controller))

        assert attempts == 13
        assert InboundMail.objects.count() == attempts  # every one kept, for an administrator
        assert not InboundMail.objects.filter(
            state__in=[IntakeState.BOUNCED, IntakeState.DELAYED]
        ).exists()
        figures.add("attacks", "bounces accepted without a signed VERP", changed, "= 0")
        assert changed == 0, names

        # The control: a genuine bounce through the same doors is seen by the same counter.
        doors = [
            _pipe,
            _smtp_door(controller),
            lambda raw, verp: _webhook(a, verp=verp, event_id="evt-genuine"),
        ]
        for n, door in enumerate(doors):
            before = _state()
            raw = dsn(to=a.envelope_from, original_message_id=a.message_id, report_id=f"<ok{n}@x>")
            door(raw, a.envelope_from)
            assert _state() != before, n
            Event.objects.all().delete()  # a second bounce for the same address is a replay
        assert Invoice.objects.get(customer__name="Kowalski").send_state == SendState.BOUNCED


def _message_id_decides(envelope_recipients, report):
    """The intake before issue 11: the Message-ID alone found the message."""
    found = services.OutgoingMessage.objects.filter(message_id=report.original_message_id).first()
    return (found, "", "") if found else (None, "no_reference", "")


@pytest.mark.django_db(transaction=True)
def test_the_forgery_counter_sees_them_once_the_message_id_decides(
    victim_and_attacker, monkeypatch
):
    """The defence taken away: the same forgeries now change the victim's invoice."""
    a, b = victim_and_attacker
    monkeypatch.setattr(services, "_find_message", _message_id_decides)
    with _listener() as controller:
        _attempts, changed, names = _attack_every_door(
            a,
            b,
            _pipe,
            _smtp_door(controller),
            # Each attempt on its own: a second bounce of one address would be a replay.
            between=lambda: Event.objects.all().delete(),
        )

    assert changed >= 6, names
    assert Invoice.objects.get(customer__name="Kowalski").send_state == SendState.BOUNCED


# --- memory: 10 MB DSNs of 60,000 recipients --------------------------------------------------


def huge_dsn(*, to: str, n: int = 0) -> bytes:
    """A DSN of HUGE_RECIPIENTS recipient blocks, just under HUGE_BYTES."""
    head = (
        f"From: MAILER-DAEMON@mx.test\r\nTo: {to}\r\nSubject: Undelivered\r\n"
        f"Message-ID: <huge-{n}@mx.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nNo.\r\n\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n"
    ).encode()
    tail = b"\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <x@y>\r\n\r\n--B--\r\n"
    size = (HUGE_BYTES - len(head) - len(tail) - 1000) // HUGE_RECIPIENTS
    blocks = []
    for i in range(HUGE_RECIPIENTS):
        block = (
            f"\r\nFinal-Recipient: rfc822; user{i}@kowalski.example\r\nAction: failed\r\n"
            "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 "
        )
        blocks.append((block + "x" * (size - len(block) - 2) + "\r\n").encode())
    raw = head + b"".join(blocks) + tail
    assert 10_000_000 < len(raw) <= HUGE_BYTES  # 10 MB, within BOUNCE_MAX_BYTES (10 MiB)
    return raw


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _worker_database_url(),
        "EVENT_MAIL_DOMAIN": DOMAIN,
        "LANGUAGE_CODE": "en",
        "DJANGO_SECRET_KEY": django_settings.SECRET_KEY,
        "DJANGO_SETTINGS_MODULE": "directo_mail.settings",
        **extra,
    }


# manage.py, run so that the process writes its own peak RSS (VmHWM) to PEAK_RSS_FILE as it
# exits: wait4's ru_maxrss would count the test process it was forked from, before its exec.
_MEASURED = """
import atexit, os, runpy, sys

def _peak():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    with open(os.environ["PEAK_RSS_FILE"], "w") as out:
        out.write(line.split()[1])

atexit.register(_peak)
sys.argv = ["manage.py", *sys.argv[1:]]
runpy.run_path("manage.py", run_name="__main__")
"""


# Put before _MEASURED: the whole mail parsed, as before the parse window (bounces.parse).
UNBOUNDED_PARSE = "import bounces.parse\nbounces.parse._PARSE_BYTES = 1 << 40\n"


def _manage(*args: str, peak_file: Path, script: str = _MEASURED, **popen) -> subprocess.Popen:
    env = popen.pop("env", None) or _env()
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=django_settings.BASE_DIR,
        env={**env, "PEAK_RSS_FILE": str(peak_file)},
        **popen,
    )


def _peak_mb(peak_file: Path) -> float:
    return int(peak_file.read_text()) / 1024


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _bounce_server_run(
    script: str = _MEASURED, mails: Callable[[int], bytes] | None = None, **extra_env: str
) -> dict[str, float]:
    """The real bounce_server takes CONCURRENT_DSNS huge DSNs (or `mails(n)`) at once: its peak
    RSS (MB), its RSS before them, the wall time (s) and the mails kept."""
    port = free_port()
    peak_file = Path(tempfile.mkdtemp()) / "peak"
    server = _manage(
        "bounce_server",
        "--host",
        HOST,
        "--port",
        str(port),
        peak_file=peak_file,
        script=script,
        env=_env(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stdout.readline().startswith(b"bounce_server: listening")
        with smtplib.SMTP(HOST, port, timeout=30) as smtp:  # every module loaded, one mail kept
            smtp.sendmail("<>", [f"bounces@{DOMAIN}"], b"Subject: warm-up\r\n\r\nx\r\n")
        idle = _vm_hwm_mb(server.pid)
        mails = mails or (lambda n: huge_dsn(to=f"bounces@{DOMAIN}", n=n))
        raws = [mails(n) for n in range(CONCURRENT_DSNS)]
        start = time.monotonic()

        def send(raw: bytes) -> dict:
            with smtplib.SMTP(HOST, port, timeout=120) as smtp:
                return smtp.sendmail("<>", [f"bounces@{DOMAIN}"], raw)

        with ThreadPoolExecutor(CONCURRENT_DSNS) as pool:
            refused = list(pool.map(send, raws))
        wall = time.monotonic() - start
        del raws
        assert refused == [{}] * CONCURRENT_DSNS
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return {"peak": _peak_mb(peak_file), "idle": idle, "wall": wall}


def _ingest_bounce_run(raw: bytes) -> dict[str, float]:
    peak_file = Path(tempfile.mkdtemp()) / "peak"
    start = time.monotonic()
    process = _manage(
        "ingest_bounce",
        f"--recipient=bounces@{DOMAIN}",
        peak_file=peak_file,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    process.communicate(raw, timeout=120)
    assert process.returncode == 0
    return {"peak": _peak_mb(peak_file), "wall": time.monotonic() - start}


@pytest.mark.django_db(transaction=True)
def test_intake_memory_on_huge_dsns(figures):
    server = _bounce_server_run()
    pipe = _ingest_bounce_run(huge_dsn(to=f"bounces@{DOMAIN}", n=99))

    kept = InboundMail.objects.filter(report__report_id__startswith="<huge-")
    assert kept.count() == CONCURRENT_DSNS + 1
    for mail in kept:  # read as far as the limits, and said so
        assert len(mail.report["recipients"]) == django_settings.BOUNCE_MAX_RECIPIENTS
        # The blocks in the parse window past the recipient limit are counted; the rest unread.
        assert mail.recipients_ignored > 0
        assert mail.report["unread_bytes"] > HUGE_BYTES - 2 * _PARSE_BYTES
    growth = server["peak"] - server["idle"]
    past = max(0.0, growth - GROWTH_BOUND_MB) + max(0.0, pipe["peak"] - RSS_BOUND_MB)
    figures.add(
        "attacks",
        "intake memory past its bound on a 10 MB / 60,000-recipient DSN, MB",
        round(past),
        "= 0",
    )
    figures.add(
        "attacks",
        f"bounce_server RSS growth, {CONCURRENT_DSNS} such DSNs at once "
        f"(idle {server['idle']:.0f}, peak {server['peak']:.0f}), MB",
        round(growth),
        f"≤ {GROWTH_BOUND_MB}",
    )
    figures.add(
        "attacks",
        "ingest_bounce peak RSS, one such DSN, MB",
        round(pipe["peak"]),
        f"≤ {RSS_BOUND_MB}",
    )
    figures.add(
        "attacks",
        f"bounce_server wall time, {CONCURRENT_DSNS} such DSNs at once, s",
        round(server["wall"], 1),
        "≤ 30",
    )
    assert round(past) == 0, (server, pipe)
    assert server["wall"] <= 30, server


@pytest.mark.django_db(transaction=True)
def test_the_memory_detector_sees_an_unbounded_intake():
    """The control: with the recipient limit and the parse window lifted, the same run goes
    past the bound."""
    server = _bounce_server_run(
        UNBOUNDED_PARSE + _MEASURED, BOUNCE_MAX_RECIPIENTS=str(10 * HUGE_RECIPIENTS)
    )

    assert server["peak"] - server["idle"] > GROWTH_BOUND_MB, server


# --- connections ----------------------------------------------------------------------------------


def _probe(port: int, sources: list[str], per_source: int) -> tuple[list, int]:
    """Open `per_source` connections from each source address and keep them: the open ones,
    and how many were greeted 220."""
    held, greeted = [], 0
    for source in sources:
        for _ in range(per_source):
            try:
                smtp = smtplib.SMTP(HOST, port, timeout=10, source_address=(source, 0))
            except smtplib.SMTPConnectError as refused:
                assert refused.smtp_code == 421
                continue
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                continue
            greeted += 1
            held.append(smtp)
    return held, greeted


PER_PEER, TOTAL = 3, 5
SOURCES = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


@pytest.mark.django_db(transaction=True)
def test_connections_beyond_the_limit(figures):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "bounce_server", "--host", HOST, "--port", str(port)],
        cwd=django_settings.BASE_DIR,
        env=_env(BOUNCE_MAX_CONNECTIONS_PER_PEER=str(PER_PEER), BOUNCE_MAX_CONNECTIONS=str(TOTAL)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stdout.readline().startswith(b"bounce_server: listening")
        held, greeted = _probe(port, SOURCES[:1], 10)  # one peer
        one_peer = greeted
        more, greeted = _probe(port, SOURCES[1:], 10)  # then others, up to the total
        held += more
        beyond = max(0, one_peer - PER_PEER) + max(0, one_peer + greeted - TOTAL)
        # The held connections still work; closing them frees the places.
        assert all(smtp.noop()[0] == 250 for smtp in held)
        for smtp in held:
            smtp.quit()
        time.sleep(0.2)
        again, greeted_again = _probe(port, SOURCES[:1], PER_PEER)
        assert greeted_again == PER_PEER
        for smtp in again:
            smtp.quit()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    figures.add("attacks", "bounce_server connections beyond the limit accepted", beyond, "= 0")
    assert (one_peer, one_peer + greeted) == (PER_PEER, TOTAL)
    assert beyond == 0


def test_the_connection_probe_sees_a_server_without_limits():
    """The control: aiosmtpd's own server, no limiter, accepts every connection."""
    from aiosmtpd.controller import Controller

    from bounces.listener import BounceHandler

    controller = Controller(BounceHandler(), hostname=HOST, port=free_port())
    controller.start()
    try:
        held, greeted = _probe(controller.port, SOURCES[:1], 10)
        for smtp in held:
            smtp.close()
    finally:
        controller.stop()
        controller.handler.close()
    assert greeted - PER_PEER > 0


# --- delay notices ------------------------------------------------------------------------------


def _delay_flood(a: OutgoingMessage, count: int) -> int:
    """`count` delay notices for A, each its own report: through the pipe and the listener."""
    with _listener() as controller:
        smtp = _smtp_door(controller)
        for n in range(count):
            raw = dsn(
                to=a.envelope_from,
                original_message_id=a.message_id,
                action="delayed",
                status="4.4.1",
                report_id=f"<delay-{n}@mx.test>",
            )
            (_pipe if n % 2 else smtp)(raw, a.envelope_from)
    assert InboundMail.objects.filter(state=IntakeState.DELAYED).count() == count  # all kept
    return Event.objects.filter(
        message=a, kind=EventKind.DELIVERY_DELAYED, params__address=VICTIM
    ).count()


@pytest.mark.django_db(transaction=True)
def test_delay_events_beyond_the_cap(victim_and_attacker, figures):
    a, _b = victim_and_attacker
    cap = django_settings.BOUNCE_MAX_DELAY_EVENTS

    events = _delay_flood(a, 20)

    beyond = max(0, events - cap)
    figures.add("attacks", "delay Events beyond the cap (20 delay notices)", beyond, "= 0")
    assert events == cap
    assert beyond == 0


@pytest.mark.django_db(transaction=True)
def test_the_delay_counter_sees_a_flood_without_the_cap(victim_and_attacker, settings):
    a, _b = victim_and_attacker
    cap = settings.BOUNCE_MAX_DELAY_EVENTS
    settings.BOUNCE_MAX_DELAY_EVENTS = 1000

    assert _delay_flood(a, 20) - cap == 20 - cap
