"""`parse_bounce` on flufl.bounce's real corpus, hand-made RFC 3464 reports, auto-replies and
garbage. Pure: no database, no network; the corpus is vendored in `data/`."""

from __future__ import annotations

import base64
import email
import json
import quopri
import random
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import flufl.bounce
import pytest

from bounces.parse import BounceReport, parse_bounce, valid_recipient

DATA = Path(__file__).parent / "data"
CORPUS = sorted(DATA.glob("*.txt"))
EXPECTATIONS = json.loads((DATA / "expectations.json").read_text())["expectations"]
KINDS = {"bounce", "delay", "auto_reply", "unknown"}
VERP = "bounces+42-0123456789abcdef@event.example"


def _parsed(name: str) -> BounceReport:
    return parse_bounce((DATA / name).read_bytes())


def _addresses(report: BounceReport, *, permanent: bool) -> set[str]:
    return {r.address.lower() for r in report.recipients if r.permanent is permanent}


def _assert_storable(report: BounceReport) -> None:
    """Every text field encodes as UTF-8: no surrogate escapes reach the database."""
    texts = [report.reporting_mta, report.original_message_id, report.subject, report.error]
    texts += report.verp_candidates
    for r in report.recipients:
        texts += [r.address, r.action, r.status, r.diagnostic, r.remote_mta, r.source]
    for text in texts:
        text.encode("utf-8")


def test_importable_without_django():
    # The parse layer is pure: the intake service brings Django, models and settings.
    code = "import sys, bounces.parse; print(sorted(m for m in sys.modules if 'django' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == "[]"


# --- flufl.bounce's corpus and its own expectations -------------------------------------------


def test_the_corpus_is_all_there():
    assert len(CORPUS) == 117
    assert {e["file"] for e in EXPECTATIONS} <= {path.name for path in CORPUS}
    assert len(EXPECTATIONS) == 128


@pytest.mark.parametrize("path", CORPUS, ids=[path.name for path in CORPUS])
def test_every_corpus_message_parses(path):
    report = parse_bounce(path.read_bytes())
    assert report.kind in KINDS
    assert report.error == ""
    _assert_storable(report)


@pytest.mark.parametrize(
    "expectation",
    EXPECTATIONS,
    ids=[f"{e['file']}-{e['detector']}-{'T' if e['temporary'] else 'P'}" for e in EXPECTATIONS],
)
def test_flufl_bounce_expectations(expectation):
    """What flufl.bounce's tests say about a message, our report says too.

    A "detector" expectation is about one of its detectors: the addresses it names are in our
    report with that permanence; one that names none says that detector finds nothing there,
    so our report has nothing from it. A "pipeline" expectation is about the whole message:
    our report has exactly those addresses with that permanence.
    """
    report = _parsed(expectation["file"])
    expected = {address.lower() for address in expectation["addresses"]}
    found = _addresses(report, permanent=not expectation["temporary"])
    if expectation["scope"] == "pipeline":
        assert found == expected
    elif expected:
        assert expected <= found
        assert report.kind == ("delay" if expectation["temporary"] else "bounce")
    else:
        assert expectation["detector"] not in {r.source.lower() for r in report.recipients}


@pytest.mark.parametrize("path", CORPUS, ids=[path.name for path in CORPUS])
def test_report_agrees_with_flufl_bounce_all_failures(path):
    """Our RFC 3464 reading and flufl.bounce's pipeline agree on every corpus message.

    Where all_failures() itself crashes (it re-raises a detector's error), there is nothing to
    compare; no corpus message does that.
    """
    raw = path.read_bytes()
    temporary, permanent = flufl.bounce.all_failures(email.message_from_bytes(raw))
    report = parse_bounce(raw)
    # What is no address (simple_42's "david...@gmail.com") is never a recipient of ours
    # (issue 16, item 4); flufl.bounce reports it.
    temporary = {a.decode().lower() for a in temporary if valid_recipient(a.decode())}
    permanent = {a.decode().lower() for a in permanent if valid_recipient(a.decode())}
    assert _addresses(report, permanent=False) == temporary
    assert _addresses(report, permanent=True) == permanent


@pytest.mark.parametrize(
    "name", ["simple_38.txt", "simple_39.txt", "simple_41.txt", "simple_45.txt"]
)
def test_bounces_that_say_auto_replied_are_bounces(name):
    # RFC 3834's Auto-Submitted: auto-replied is on real bounces too: alone, it is no
    # out-of-office sign.
    report = _parsed(name)
    assert "auto-replied" in (DATA / name).read_text(errors="replace")
    assert report.kind == "bounce"


def test_corpus_auto_reply_is_no_bounce():
    # qmail_08.txt: "Precedence: auto_reply", "Subject: Auto reply", a Spanish thank-you note.
    report = _parsed("qmail_08.txt")
    assert report.kind == "auto_reply"
    assert report.recipients == ()


def test_corpus_dsn_fields():
    report = _parsed("dsn_10.txt")
    assert report.kind == "bounce"
    assert report.reporting_mta == "brainy.example.com"
    assert report.original_message_id == "<200210211625.12753.b.a.dude@example.com>"
    [recipient] = report.recipients
    assert (recipient.address, recipient.status, recipient.action) == (
        "anne.person@dom.ain",
        "5.0.0",
        "failed",
    )
    assert "550 {mx001-rz3} <anne.person@dom.ain>... User unknown" in recipient.diagnostic
    assert not recipient.diagnostic.startswith("X-Postfix")


def test_corpus_delay_with_nonstandard_headers_part():
    # dsn_05.txt returns the original's header as "message/rfc822-headers" (not a registered type).
    report = _parsed("dsn_05.txt")
    assert report.kind == "delay"
    [recipient] = report.recipients
    assert (recipient.address, recipient.permanent, recipient.status) == (
        "userx@example.cz",
        False,
        "4.4.1",
    )
    assert report.original_message_id == "<pfchbtkf3j0p7prf0sp45vi21fro3bs7ad@4ax.com>"


# --- Hand-made RFC 3464 reports -----------------------------------------------------------------

ORIGINAL_HEADERS = f"""\
Return-Path: <{VERP}>
From: Anna Nowak <anna@example.com>
To: jan.kowalski@example.pl
Subject: Faktura 12/2026
Message-ID: <original.1@directo.example>
"""


def _dsn(*blocks: str, headers: str = "", returned: str = ORIGINAL_HEADERS) -> bytes:
    """A delivery status notification as Postfix writes one (RFC 3464 §2, RFC 3462)."""
    status = "\n".join(blocks)
    return f"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: {VERP}
Subject: Undelivered Mail Returned to Sender
{headers}MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Fri, 27 Nov 2026 10:00:00 +0100

{status}
--B
Content-Type: text/rfc822-headers

{returned}
--B--
""".encode()


FAILED = """\
Final-Recipient: rfc822; jan.kowalski@example.pl
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.example.pl
Diagnostic-Code: smtp; 550 5.1.1 <jan.kowalski@example.pl>: Recipient address
    rejected: User unknown in virtual mailbox table
"""

DELAYED = """\
Final-Recipient: rfc822; ewa@example.ee
Action: delayed
Status: 4.4.1
Remote-MTA: dns; mx.example.ee
Diagnostic-Code: smtp; 421 4.4.1 Connection timed out
Will-Retry-Until: Mon, 30 Nov 2026 10:00:00 +0100
"""


def test_permanent_dsn_has_every_field():
    report = parse_bounce(_dsn(FAILED))
    assert report.kind == "bounce"
    assert report.reporting_mta == "mx.example.net"
    assert report.original_message_id == "<original.1@directo.example>"
    assert report.subject == "Undelivered Mail Returned to Sender"
    assert report.error == ""
    [recipient] = report.recipients
    assert recipient.address == "jan.kowalski@example.pl"
    assert recipient.permanent is True
    assert recipient.action == "failed"
    assert recipient.status == "5.1.1"
    assert recipient.remote_mta == "mail.example.pl"
    assert recipient.diagnostic == (
        "550 5.1.1 <jan.kowalski@example.pl>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert recipient.source == "dsn"
    assert report.permanent_failures == (recipient,)
    assert report.delays == ()


def test_delayed_dsn_is_a_delay_not_a_failure():
    report = parse_bounce(_dsn(DELAYED))
    assert report.kind == "delay"
    [recipient] = report.recipients
    assert (recipient.address, recipient.permanent, recipient.action, recipient.status) == (
        "ewa@example.ee",
        False,
        "delayed",
        "4.4.1",
    )
    assert recipient.diagnostic == "421 4.4.1 Connection timed out"
    assert report.permanent_failures == ()


def test_a_failure_beside_a_delay_makes_a_bounce():
    report = parse_bounce(_dsn(FAILED, DELAYED))
    assert report.kind == "bounce"
    assert [r.address for r in report.permanent_failures] == ["jan.kowalski@example.pl"]
    assert [r.address for r in report.delays] == ["ewa@example.ee"]


@pytest.mark.parametrize(
    ("block", "permanent", "action"),
    [
        # The MTA gave up after retrying a temporary error: a failure all the same (§2.3.3).
        ("Action: failed\nStatus: 4.4.7", True, "failed"),
        # OpenSMTPD writes the non-standard "error"; some MTAs add a comment.
        ("Action: error\nStatus: 5.0.0", True, "failed"),
        ("Action: failed (bad address)\nStatus: 5.1.1", True, "failed"),
        ("Action: Delayed\nStatus: 4.2.2", False, "delayed"),
        # No Action: the status class decides (RFC 3463 §3.1).
        ("Status: 5.2.2", True, "failed"),
        ("Status: 4.2.2", False, "delayed"),
    ],
)
def test_permanence_from_action_then_status(block, permanent, action):
    report = parse_bounce(_dsn(f"Final-Recipient: rfc822; a@example.org\n{block}\n"))
    [recipient] = report.recipients
    assert (recipient.permanent, recipient.action) == (permanent, action)


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded"])
def test_success_reports_name_no_recipient(action):
    report = parse_bounce(_dsn(f"Final-Recipient: rfc822; a@example.org\nAction: {action}\n"))
    assert report.recipients == ()
    assert report.kind == "unknown"


def test_status_missing_is_taken_from_the_diagnostic():
    block = (
        "Final-Recipient: rfc822; a@example.org\nAction: failed\n"
        "Diagnostic-Code: smtp; 550 5.7.1 spam\n"
    )
    [recipient] = parse_bounce(_dsn(block)).recipients
    assert recipient.status == "5.7.1"


def test_original_recipient_is_the_address_we_sent_to():
    # Final-Recipient is what the reporting MTA tried after aliasing; Original-Recipient is ours
    # (§2.3.1), and flufl.bounce prefers it too. An X.400 Final-Recipient is no address at all.
    block = (
        "Original-Recipient: rfc822;Jan.Kowalski@Example.pl\n"
        "Final-Recipient: x400; /C=PL/ADMD= /PRMD=EXAMPLE/S=KOWALSKI/\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    [recipient] = parse_bounce(_dsn(block)).recipients
    assert recipient.address == "Jan.Kowalski@Example.pl"


def test_untyped_angle_address_is_accepted():
    # SMTP-GATEWAY01.intra.home.dk (flufl.bounce's dsn_14.txt) writes no address type.
    block = "Final-Recipient: <a@example.org>\nAction: failed\nStatus: 5.1.1\n"
    [recipient] = parse_bounce(_dsn(block)).recipients
    assert recipient.address == "a@example.org"


@pytest.mark.parametrize(
    "headers",
    [
        "Auto-Submitted: auto-replied\n",
        "Auto-Submitted: auto-generated (failure)\n",
        "X-Autoreply: yes\nPrecedence: auto_reply\n",
    ],
)
def test_a_dsn_is_a_bounce_whatever_auto_reply_signs_it_carries(headers):
    # RFC 3834 §5: a DSN may say Auto-Submitted: auto-replied. It is still a bounce.
    report = parse_bounce(_dsn(FAILED, headers=headers))
    assert report.kind == "bounce"
    assert [r.address for r in report.recipients] == ["jan.kowalski@example.pl"]


def test_a_dsn_with_an_out_of_office_subject_is_a_bounce():
    raw = _dsn(FAILED).replace(
        b"Subject: Undelivered Mail Returned to Sender", b"Subject: Automatic reply: Faktura"
    )
    assert parse_bounce(raw).kind == "bounce"


def test_message_id_from_a_returned_message():
    raw = _dsn(FAILED, returned="").replace(
        b"Content-Type: text/rfc822-headers\n\n",
        b"Content-Type: message/rfc822\n\n" + ORIGINAL_HEADERS.encode() + b"\nDzien dobry.\n",
    )
    assert parse_bounce(raw).original_message_id == "<original.1@directo.example>"


@pytest.mark.parametrize("encoding", ["8bit", "base64", "quoted-printable"])
def test_utf8_delivery_status(encoding):
    # RFC 6533: message/global-delivery-status carries UTF-8 and may be encoded.
    status = (
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: utf-8; jürgen@exämple.de\nAction: failed\nStatus: 5.1.1\n"
    )
    body = status.encode()
    if encoding == "base64":
        body = base64.encodebytes(body)
    elif encoding == "quoted-printable":
        body = quopri.encodestring(body)
    raw = (
        b"Subject: Undelivered Mail Returned to Sender\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nDelivery failed.\n"
        b"--B\nContent-Type: message/global-delivery-status\n"
        b"Content-Transfer-Encoding: " + encoding.encode() + b"\n\n" + body + b"\n--B--\n"
    )
    report = parse_bounce(raw)
    assert report.kind == "bounce"
    assert report.reporting_mta == "mx.example.net"
    assert [r.address for r in report.recipients] == ["jürgen@exämple.de"]


def test_eight_bit_address_in_a_plain_dsn_is_read_as_utf8():
    raw = _dsn("Final-Recipient: rfc822; jürgen@example.com\nAction: failed\nStatus: 5.1.1\n")
    report = parse_bounce(raw)
    assert [r.address for r in report.recipients] == ["jürgen@example.com"]
    _assert_storable(report)


# --- Auto-replies (RFC 3834) --------------------------------------------------------------------


def _reply(subject: str, body: str = "Jestem na urlopie do 5 maja.", **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Jan Kowalski <jan.kowalski@example.pl>"
    message["To"] = VERP
    message["Subject"] = subject
    message["In-Reply-To"] = "<original.1@directo.example>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message.as_bytes()


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        # Gmail's vacation responder: the user's own subject, RFC 3834's header.
        ("Urlop", {"Auto_Submitted": "auto-replied"}),
        ("Away", {"Auto_Submitted": "auto-replied (zimbra; vacation)"}),
        # Outlook / Exchange: the subject in the user's language, no Auto-Submitted.
        ("Automatic reply: Invoice 12/2026", {}),
        ("Automatyczna odpowiedź: Faktura 12/2026", {}),
        ("Automaatne vastus: Arve 12/2026", {}),
        ("Abwesenheitsnotiz: Rechnung 12/2026", {}),
        ("Autosvar: Faktura 12/2026", {}),
        ("Réponse automatique : Facture 12/2026", {}),
        ("Out of Office AutoReply: Invoice", {}),
        ("RE: Out of office", {}),
        # Other responders' own headers.
        ("Re: Invoice 12/2026", {"X_Autoreply": "yes"}),
        ("Thank you for your message", {"X_Autorespond": "Thank you"}),
        ("Thank you for your message", {"Precedence": "auto_reply"}),
    ],
)
def test_out_of_office_replies_are_no_bounce(subject, headers):
    report = parse_bounce(_reply(subject, **headers))
    assert report.kind == "auto_reply"
    assert report.recipients == ()
    assert report.subject == subject
    # In-Reply-To names the message it answers (RFC 3834 §3.1.5).
    assert report.original_message_id == "<original.1@directo.example>"
    assert report.verp_candidates == (VERP,)


def test_out_of_office_quoting_an_address_is_no_bounce():
    body = (
        "I am out of the office until Monday.\n"
        "The following address will handle urgent matters:\n\n<office@example.com>\n"
    )
    report = parse_bounce(_reply("Automatic reply: Invoice", body))
    assert report.kind == "auto_reply"


def test_a_bounce_about_an_out_of_office_subject_is_a_bounce():
    # The subject rule looks at the start only: a report quoting the original subject stays a
    # bounce (qmail's format, read by flufl.bounce).
    raw = b"""\
From: MAILER-DAEMON@mx.example.net
Subject: Undeliverable: Out of office next week
Content-Type: text/plain

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<jan.kowalski@example.pl>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Message-ID: <original.1@directo.example>
Subject: Out of office next week
"""
    report = parse_bounce(raw)
    assert report.kind == "bounce"
    assert [r.address for r in report.recipients] == ["jan.kowalski@example.pl"]
    assert report.recipients[0].source == "Qmail"
    assert report.original_message_id == "<original.1@directo.example>"


# --- Garbage never stops the intake -------------------------------------------------------------


def test_empty_message():
    report = parse_bounce(b"")
    assert (report.kind, report.error, report.recipients) == ("unknown", "", ())


def test_random_bytes():
    generator = random.Random(6)
    for _ in range(50):
        raw = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 4000)))
        report = parse_bounce(raw)
        assert report.kind in KINDS
        _assert_storable(report)


@pytest.mark.parametrize("from_header", [b"From: \n", b""])
def test_non_multipart_without_from(from_header):
    # flufl.bounce's Yale detector raises IndexError on these (shared/TESTING-NOTES.md).
    report = parse_bounce(from_header + b"Subject: hello\n\nJust text.\n")
    assert (report.kind, report.error) == ("unknown", "")


def test_a_broken_detector_does_not_hide_the_others():
    # Without From the Yale detector crashes before qmail's gets its turn; all_failures() would
    # stop there. We skip the broken one and still find the bounce.
    raw = b"""\
Subject: failure notice

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.

<jan.kowalski@example.pl>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.
"""
    report = parse_bounce(raw)
    assert report.kind == "bounce"
    assert [(r.address, r.source) for r in report.recipients] == [
        ("jan.kowalski@example.pl", "Qmail")
    ]


def test_five_megabytes():
    raw = b"From: x@example.org\nSubject: big\n\n" + (b"x" * 76 + b"\n") * 70_000
    assert len(raw) > 5_000_000
    report = parse_bounce(raw)
    assert (report.kind, report.error) == ("unknown", "")


def test_what_the_email_package_cannot_parse_is_kept_with_its_error():
    # 2,000 nested multiparts exhaust the stdlib parser's recursion: a real crash, caught.
    raw = b"Content-Type: multipart/mixed; boundary=b0\n\n" + b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(2000)
    )
    report = parse_bounce(raw, envelope_recipients=[VERP])
    assert report.kind == "unknown"
    assert report.error.startswith("RecursionError")
    # What finds the message survives: the intake can still file it under its message.
    assert report.verp_candidates == (VERP,)


def test_broken_encoded_subject():
    report = parse_bounce(b"Subject: =?x-no-such-charset?q?abc?= =?utf-8?b?////?=\n\nx\n")
    assert report.error == ""
    assert report.subject
    _assert_storable(report)


# --- What finds the message ---------------------------------------------------------------------


def test_verp_candidates_from_the_envelope_and_the_delivery_headers():
    raw = _dsn(FAILED, headers="Delivered-To: Bounces+7-AAAA@Event.Example\n").replace(
        b"To: " + VERP.encode(), b'To: "Bounces" <bounces+8-bbbb@event.example>'
    )
    raw = b"X-Original-To: bounces+9-cccc@event.example\n" + raw
    report = parse_bounce(raw, envelope_recipients=["<bounces+6-dddd@event.example>"])
    assert report.verp_candidates == (
        "bounces+6-dddd@event.example",  # the envelope first: the receiving server saw it
        "bounces+7-aaaa@event.example",  # Delivered-To, lower-cased
        "bounces+9-cccc@event.example",  # X-Original-To
        "bounces+8-bbbb@event.example",  # To
        VERP,  # the returned message's Return-Path
    )


def test_verp_candidates_lead_to_the_message():
    from outbox.message import verp_address, verp_message_pk

    domain = "event.example"
    ours = verp_address(42, domain)
    forged = "bounces+43-0123456789abcdef@event.example"
    raw = _dsn(FAILED).replace(VERP.encode(), ours.encode())
    report = parse_bounce(raw, envelope_recipients=[forged])
    pks = [verp_message_pk(address, domain) for address in report.verp_candidates]
    assert [pk for pk in pks if pk is not None] == [42]


# --- bounded cost (issue 11): what a report holds does not decide what it costs ------------------


def _report_of(count: int, *, block: bytes = b"") -> bytes:
    head = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n"
    )
    blocks = b"".join(
        b"\r\nFinal-Recipient: rfc822; user%d@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        % n
        + block
        for n in range(count)
    )
    return head + blocks + b"\r\n--B--\r\n"


def test_recipients_past_the_limit_are_counted_not_kept():
    report = parse_bounce(_report_of(1000), max_recipients=10)

    assert [r.address for r in report.recipients] == [f"user{n}@example.com" for n in range(10)]
    assert (report.kind, report.recipients_ignored) == ("bounce", 990)


def test_parts_past_the_limit_are_counted_not_kept():
    raw = (
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        + b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 500
        + b"--B--\r\n"
    )

    report = parse_bounce(raw)

    assert report.parts_ignored == 500 - 200


def _parse_peak(raw: bytes, max_recipients: int) -> tuple[BounceReport, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        report = parse_bounce(raw, max_recipients=max_recipients)
        return report, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_report_of_many_recipients_costs_what_one_of_100_does(monkeypatch):
    """Issue 11: a 10 MB DSN of 60,000 recipient blocks held them all (about 100 MB a mail).
    Here 6,000 (tracemalloc is slow), against the same report with every block kept; the parse
    window is widened to hold them all (the recipient limit holds within any window)."""
    monkeypatch.setattr("bounces.parse._PARSE_BYTES", 1 << 30)
    raw = _report_of(6_000, block=b"Diagnostic-Code: smtp; 550 5.1.1 " + b"x" * 90 + b"\r\n")

    report, bounded = _parse_peak(raw, 100)
    _everything, unbounded = _parse_peak(raw, 6_000)

    assert (len(report.recipients), report.recipients_ignored) == (100, 5_900)
    # Measured here: about 0.7 MB against 9.7 MB.
    assert bounded < 1.5 * 1024 * 1024, bounded
    assert unbounded > 5 * bounded, (bounded, unbounded)


def test_only_the_first_256_kib_are_parsed():
    """A review of issue 11: 10 MB of short lines cost 270-340 MB in the email package, whatever
    the recipient limit. What lies past _PARSE_BYTES is kept with the mail but never read."""
    from bounces.parse import _PARSE_BYTES

    padding = b"X-Padding: x\r\n" * (_PARSE_BYTES // 14 + 1)
    late = padding + _report_of(3)

    report = parse_bounce(late)

    assert (report.kind, report.recipients) == ("unknown", ())
    assert report.unread_bytes == len(late) - _PARSE_BYTES
    assert parse_bounce(_report_of(3)).unread_bytes == 0


def test_delivery_headers_give_at_most_100_candidates():
    header = b"X-Failed-Recipients: " + b",\r\n ".join(
        b"user%d@example.com" % n for n in range(5_000)
    )
    report = parse_bounce(header + b"\r\n\r\nx\r\n", envelope_recipients=[VERP])

    assert len(report.verp_candidates) == 100
    assert report.verp_candidates[0] == VERP.lower()
