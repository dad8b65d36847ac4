"""The direct MIME writer (outbox.mimewrite, issue 13 item 6) makes the message the `email`
package makes, never lets a value add a header line, and its bytes arrive intact through a
real SMTP server (dots at line starts included)."""

from __future__ import annotations

import datetime
import re
from email import message_from_bytes, policy
from types import SimpleNamespace

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from outbox import mimewrite
from outbox.message import build_message, message_bytes
from outbox.models import OutgoingMessage
from smtp_settings.errors import PermanentSendError
from smtp_settings.resolve import SenderConfig
from smtp_settings.transports import CrlfBytes, SmtpTransport
from tests.smtp_fixtures import HOST

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def _sender(**fields) -> SenderConfig:
    values = {
        "mode": "smtp",
        "transport": "smtp",
        "host": HOST,
        "port": 25,
        "security": "none",
        "login": "",
        "secret": None,
        "from_email": "anna@acme.test",
        "from_name": "Anna Kowalska",
        "reply_to": "",
        "envelope_sender": "anna@acme.test",
        "verp": False,
        "bcc": "",
        "signature": "",
    }
    return SenderConfig(**(values | fields))


def _message(**fields) -> OutgoingMessage:
    values = {
        "to": ["jan@klient.test"],
        "cc": [],
        "bcc": [],
        "subject": "Invoice FV/1/2026",
        "body_text": "Good morning,\nthe invoice is attached.\n",
        "body_html": "",
        "extra_headers": {},
        "message_id": "<1.abc@acme.test>",
        "created_at": timezone.now(),
    }
    return OutgoingMessage(**(values | fields))


def _file(content: bytes, name: str, content_type: str = "application/pdf"):
    return SimpleNamespace(file=ContentFile(content), filename=name, content_type=content_type)


def _reference(message, sender, attachments) -> bytes:
    return build_message(message, sender, attachments=attachments).as_bytes(policy=policy.SMTP)


def _shape(data: bytes) -> dict:
    """What a reader sees: each header decoded (boundaries aside) and each part's content."""
    parsed = message_from_bytes(data, policy=policy.default)
    # In any order (a reader does not care); the boundary is random.
    headers = sorted((name, str(value)) for name, value in parsed.items() if name != "Content-Type")
    parts = []
    for part in parsed.walk():
        ctype = part.get_content_type()
        if part.is_multipart():
            parts.append((ctype,))
        else:
            parts.append((ctype, part.get_filename(), part.get_content()))
    return {"headers": headers, "parts": parts}


SHAPES = {
    "text only": ({}, {}, []),
    "text and html": ({"body_html": "<p>Good morning</p>"}, {}, []),
    "with a pdf": ({}, {}, [_file(PDF, "FV-1-2026.pdf")]),
    "all of it": (
        {
            "body_html": "<html><body><p>Dzień dobry, zażółć</p></body></html>",
            "cc": ["ksiegowosc@klient.test", "szef@klient.test"],
            "subject": "Faktura FV/1/2026 — zażółć gęślą jaźń, a long subject that must fold "
            "over more than one line of the header",
            "body_text": "Dzień dobry,\n.a line with a dot\n.\nend with blanks   \n\ttab\n",
            "extra_headers": {
                "List-Unsubscribe": "<https://erp.test/u/" + "x" * 150 + ">",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        },
        {
            "from_name": "Zażółć Sp. z o.o.",
            "reply_to": "biuro@acme.test",
            "signature": "Anna\nAcme",
        },
        [_file(PDF, "FV-1-2026.pdf"), _file(b"a;b\r\n1;2\r\n", "Zestawienie ż.csv", "text/csv")],
    ),
    "many recipients": ({"to": [f"person{n}@klient.test" for n in range(40)]}, {}, []),
    "a name with specials": ({}, {"from_name": 'Anna "the boss" Kowalska, Acme'}, []),
    "text that is not ASCII and not printable": (
        {
            "subject": "Faktura\u00a0FV/1/2026 \u202f\u200b\u00ad\u200f 👩\u200d💻 a\tb",
            "body_text": "Dzień\u00a0dobry\n",
        },
        {"from_name": "Acme\u00a0Sp. z\u00a0o.o."},
        [_file(PDF, "Faktura\u00a0FV-1.pdf")],
    ),
    "the longest file name": ({}, {}, [_file(PDF, "ż" * 146 + ".pdf")]),
    "CRLF and CR in the body": ({"body_text": "one\r\ntwo\rthree\n\n"}, {}, []),
    # The bytes are sent without looking for bare line ends again (CrlfBytes): every kind of
    # line end a body may have becomes CRLF.
    "every kind of line end": (
        {
            "body_text": "a\r\r\nb\n\rc\u2028d\x85e\x0bf\x0cg\r",
            "body_html": "<p>a\r\r\nb\n\rc</p>\r.\r\n.\n",
        },
        {"signature": "Anna\r\nAcme\rB"},
        [_file(b"x\ry\nz", "raw.bin", "application/octet-stream")],
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_direct_writer_makes_the_email_packages_message(shape):
    fields, sender_fields, attachments = SHAPES[shape]
    message, sender = _message(**fields), _sender(**sender_fields)

    direct = message_bytes(message, sender, attachments=attachments)

    assert _written_directly(message, sender, attachments)
    assert type(direct) is CrlfBytes  # sent as is: its line ends are not looked at again
    assert _shape(direct) == _shape(_reference(message, sender, attachments))
    lines = direct.split(b"\r\n")
    # Dots are doubled on the wire only where the writer says a line begins with one.
    assert direct.dot_lines == any(line.startswith(b".") for line in lines)
    assert b"\r" not in direct.replace(b"\r\n", b"") and b"\n" not in direct.replace(b"\r\n", b"")
    assert max(len(line) for line in lines) <= 998
    headers = direct.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert max(len(line) for line in headers) <= 78 or shape == "all of it"  # the long URL


def _written_directly(message, sender, attachments) -> bool:
    calls = []
    original = mimewrite.write

    def spy(**kwargs):
        calls.append(result := original(**kwargs))
        return result

    mimewrite.write, saved = spy, mimewrite.write
    try:
        message_bytes(message, sender, attachments=attachments)
    finally:
        mimewrite.write = saved
    return calls[0] is not None


@pytest.mark.parametrize(
    ("fields", "sender_fields", "attachments"),
    [
        ({"to": ['"jan kowalski"@klient.test']}, {}, []),  # a quoted local part
        ({"to": ["jan@bücher.test"]}, {}, []),  # a domain not in ASCII
        ({"subject": "=?utf-8?q?looks_encoded?="}, {}, []),
        ({}, {"from_name": "=?utf-8?q?Anna?="}, []),
        ({}, {}, [_file(PDF, "x.bin", "application/pdf; name=evil")]),
        ({}, {}, [_file(PDF, "=?utf-8?q?a.pdf?=")]),  # the email package decodes it
    ],
)
def test_other_shapes_go_to_the_email_package(fields, sender_fields, attachments):
    message, sender = _message(**fields), _sender(**sender_fields)

    assert not _written_directly(message, sender, attachments)
    data = message_bytes(message, sender, attachments=attachments)
    assert re.fullmatch(rb"(?:[^\r\n]*\r\n)*[^\r\n]*", data)  # CRLF only, as sent
    assert type(data) is CrlfBytes


INJECTIONS = [
    ("subject", "Invoice\r\nBcc: spy@evil.test"),
    ("subject", "Invoice\nBcc: spy@evil.test"),
    ("subject", "Invoice\x85Bcc: spy@evil.test"),
    ("subject", "Invoice\u2028Bcc: spy@evil.test"),
    ("subject", "=?utf-8?q?Invoice=0D=0ABcc=3A_spy=40evil.test?="),
    ("from_name", "Anna\r\nBcc: spy@evil.test"),
    ("from_name", "=?utf-8?q?Anna=0D=0ABcc=3A_spy=40evil.test?="),
    ("filename", 'x.pdf"\r\nBcc: spy@evil.test'),
    ("filename", "x.pdf\u2028Bcc: spy@evil.test"),
    ("filename", "=?utf-8?q?a.pdf=0D=0ABcc:_spy@evil.test?=.pdf"),
    ("filename", "=?utf-8?q?a.pdf=0D=0AContent-Type:_text=2Fhtml=0D=0A=0D=0A<h1>hi<=2Fh1>?=.pdf"),
]


@pytest.mark.parametrize("to", ["jan@klient.test", "jan@bücher.test"])  # direct / email package
@pytest.mark.parametrize(("where", "value"), INJECTIONS)
def test_no_value_adds_a_header_line(where, value, to):
    """The attacker's goal is a Bcc (or any header, or a part of their own) in the sent
    message: whatever the writer does with the value (writes it encoded, leaves it to the email
    package, or refuses the message), the result has no such header and the PDF stays a PDF."""
    fields = {"to": [to]} | ({"subject": value} if where == "subject" else {})
    message = _message(**fields)
    sender = _sender(**({"from_name": value} if where == "from_name" else {}))
    attachments = [_file(PDF, value if where == "filename" else "FV.pdf")]
    try:
        data = message_bytes(message, sender, attachments=attachments)
    except PermanentSendError as error:
        assert error.explanation == "header_line_break"
        return
    parsed = message_from_bytes(data, policy=policy.default)
    assert "Bcc" not in parsed
    for part in parsed.walk():
        assert "Bcc" not in part
        assert len(part.get_all("Content-Type") or []) <= 1
    assert b"\nBcc:" not in data
    (attachment,) = parsed.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == PDF


def test_dots_at_line_starts_arrive_intact_through_a_real_server(smtp_servers):
    """DATA doubles a leading dot itself (no regular expression over the message): a line that
    is only "." would otherwise end the message early, a ".." lose a dot."""
    server = smtp_servers.plain
    body = ".\n..\n.starts with a dot\nend\n"
    message = _message(body_text=body)
    sender = _sender()
    data = message_bytes(message, sender, attachments=[_file(PDF, "FV.pdf")])
    envelope = SimpleNamespace(mail_from="anna@acme.test", recipients=("jan@klient.test",))
    transport = SmtpTransport(
        host=server.host, port=server.port, security="none", login="", password=""
    )
    with transport:
        reply = transport.send(data, envelope)

    assert reply.startswith("250")
    (received,) = server.wait_for(1)
    assert received.content.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n")
    text = received.message.get_body(("plain",)).get_content()
    assert text.replace("\r\n", "\n") == body


@pytest.mark.parametrize("zone", ["Europe/Warsaw", "Europe/Tallinn", "Asia/Kathmandu", "UTC"])
def test_the_date_header_is_the_creation_time_in_the_active_zone(zone):
    from email.utils import format_datetime

    from outbox.message import _date

    moments = [
        timezone.now(),
        datetime.datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=datetime.UTC),
    ]
    with timezone.override(zone):
        for moment in moments:
            assert _date(moment) == format_datetime(timezone.localtime(moment))
        with pytest.raises(ValueError, match="naive"):  # as timezone.localtime() refuses it
            _date(datetime.datetime(2026, 3, 29, 2, 30))
