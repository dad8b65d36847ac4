"""Regression (issue 7, bad input): NUL from the envelope or a bounce's fields is never stored.

SQLite keeps NUL in text and JSON; PostgreSQL refuses it in text (and `\\u0000` in jsonb), so
the row would fail to save, the intake's fallback save would fail the same way, and the
exception would reach the door. tests/reliability/test_bad_input.py found it.
"""

from __future__ import annotations

import json

import pytest

from bounces.models import IntakeState
from bounces.services import bounce_ingest

pytestmark = pytest.mark.django_db

DSN = b"""\
From: MAILER-DAEMON@mx.test
To: bounces@event.test
Subject: Undelivered\x00 Mail
Message-ID: <dsn\x00-1@mx.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.test

Final-Recipient: rfc822; jan@kowalski.example
Action: failed
Status: 5.1.1\x00
Remote-MTA: dns; mx\x00.kowalski.example
Diagnostic-Code: smtp; 550 5.1.1 unknown\x00 user

--B--
""".replace(b"\n", b"\r\n")


def _has_nul(value: object) -> bool:
    text = value if isinstance(value, str) else json.dumps(value)
    return "\x00" in text or "\\u0000" in text


def test_no_nul_is_stored_from_the_envelope_or_the_report():
    mail = bounce_ingest(
        raw=DSN,
        source="smtp",
        envelope_sender="MAILER-DAEMON\x00@mx.test",
        envelope_recipients=["bounces+1-00\x00@event.test", "x\x00@y.test"],
    )

    mail.refresh_from_db()
    assert mail.state == IntakeState.UNMATCHED
    stored = {
        name: getattr(mail, name)
        for name in ["envelope_sender", "envelope_recipients", "subject", "report_id"]
    }
    stored["report"], stored["error"] = mail.report, mail.error
    assert not [name for name, value in stored.items() if _has_nul(value)], stored
    assert mail.envelope_sender == "MAILER-DAEMON@mx.test"
    assert mail.report["recipients"][0]["status"] == "5.1.1"


def test_an_unreadable_mail_keeps_no_nul_in_its_error(monkeypatch):
    from bounces import parse

    def explode(raw, envelope_recipients, max_recipients):
        raise ValueError("bad byte \x00 here")

    monkeypatch.setattr(parse, "_parse", explode)

    mail = bounce_ingest(raw=b"x", source="pipe")

    mail.refresh_from_db()
    assert (mail.state, mail.reason) == (IntakeState.UNREADABLE, "parse_error")
    assert mail.error == "ValueError: bad byte  here"
