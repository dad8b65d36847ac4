"""The private Postfix of tests/postfix_fixtures.py writes real DSNs and delivers them locally.

Each test hands mail to Postfix's smtpd and watches where the DSN goes: an aiosmtpd listener
routed as `event.test`, the domain of the VERP envelope sender, as in the app's Reply-To mode.
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from tests.postfix_fixtures import DEFAULT_ROUTES, PostfixInstance, delivery_status
from tests.smtp_fixtures import HOST

BOUNCE_ADDRESS = "bounces+1-abc@event.test"


def _message(to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Alice <alice@event.test>"
    message["To"] = to
    message["Subject"] = "Faktura 7/2025"
    message["Message-ID"] = make_msgid(domain="directo.test")
    message.set_content("Dzień dobry,\nw załączeniu faktura.\n")
    return message


def _route(server) -> str:
    return f"smtp:[{HOST}]:{server.port}"


@pytest.fixture
def bounce_listener(postfix: PostfixInstance, smtp_listener):
    """An aiosmtpd server receiving the mail for event.test (the envelope sender's domain)."""
    listener = smtp_listener("bounce_listener")
    postfix.set_routes({"event.test": _route(listener)})
    return listener


def test_error_route_bounces_to_the_verp_envelope_sender(postfix, bounce_listener):
    message = _message("someone@bad.test")
    started = time.monotonic()
    assert postfix.send(message, BOUNCE_ADDRESS, ["someone@bad.test"]) == {}

    (dsn,) = bounce_listener.wait_for(1, timeout=10)
    latency = time.monotonic() - started
    assert dsn.rcpt_tos == [BOUNCE_ADDRESS]
    assert dsn.mail_from == "<>"  # the null sender (aiosmtpd keeps the brackets): no loops
    assert dsn.message.get_content_type() == "multipart/report"
    assert dsn.message.get_param("report-type") == "delivery-status"
    per_message, (recipient,) = delivery_status(dsn.message)
    assert per_message["Reporting-MTA"] == "dns; postfix.directo.test"
    assert recipient["Final-Recipient"] == "rfc822; someone@bad.test"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert message["Message-ID"].encode() in dsn.content  # the original's header comes back
    assert latency < 5, f"the DSN took {latency:.2f} s"


def test_remote_550_gives_a_dsn_with_the_remote_reply(postfix, bounce_listener, smtp_listener):
    rejecting = smtp_listener("rejecting")
    rejecting.script("RCPT", "550 5.1.1 no such user", times=None)
    postfix.set_routes({"rejected.test": _route(rejecting)})

    postfix.send(_message("nobody@rejected.test"), BOUNCE_ADDRESS, ["nobody@rejected.test"])

    (dsn,) = bounce_listener.wait_for(1, timeout=10)
    _, (recipient,) = delivery_status(dsn.message)
    assert recipient["Final-Recipient"] == "rfc822; nobody@rejected.test"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert recipient["Remote-MTA"] == f"dns; {HOST}"
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert rejecting.messages == []


def test_remote_451_gives_a_delayed_dsn_within_seconds(postfix, bounce_listener, smtp_listener):
    """delay_warning_time = 2s (postfix_fixtures.QUEUE_TIMINGS): "delayed" after ~2-4 s."""
    slow = smtp_listener("slow")
    slow.script("RCPT", "451 4.3.0 try again later", times=None)
    postfix.set_routes({"slow.test": _route(slow)})

    mark = postfix.log_position()
    started = time.monotonic()
    postfix.send(_message("someone@slow.test"), BOUNCE_ADDRESS, ["someone@slow.test"])

    (dsn,) = bounce_listener.wait_for(1, timeout=15)
    latency = time.monotonic() - started
    _, (recipient,) = delivery_status(dsn.message)
    assert recipient["Final-Recipient"] == "rfc822; someone@slow.test"
    assert recipient["Action"] == "delayed"
    assert recipient["Status"] == "4.3.0"
    assert recipient["Diagnostic-Code"] == "smtp; 451 4.3.0 try again later"
    assert "Will-Retry-Until" in recipient
    assert b"for more than 2 second(s)" in dsn.content  # our delay template, not the built-in
    assert "warning:" not in postfix.maillog_text(since=mark)
    assert not postfix.queue_is_empty()  # still being retried: a warning, not a bounce
    assert latency < 10, f"the delayed DSN took {latency:.2f} s"


def test_other_domains_are_discarded_without_a_bounce(postfix, bounce_listener):
    message = _message("someone@example.org")
    mark = postfix.log_position()
    postfix.send(message, BOUNCE_ADDRESS, ["someone@example.org"])

    msgid = re.escape(message["Message-ID"])
    queue_id = postfix.wait_for_log(rf"(\w+): message-id={msgid}", since=mark)[1]
    postfix.wait_for_log(
        rf"{queue_id}: to=<someone@example\.org>, relay=none, .*status=sent "
        r"\(delivered to the test sink\)",
        since=mark,
    )
    postfix.wait_for_log(rf"{queue_id}: removed", since=mark)
    # A DSN would have been queued before the original was removed: its absence now is final.
    postfix.wait_for_empty_queue()
    assert "non-delivery notification" not in postfix.maillog_text(since=mark)
    assert bounce_listener.messages == []


def test_each_test_starts_with_an_empty_queue(postfix):
    """The autouse reset removed the message the 451 test above left being retried."""
    assert postfix.queue_is_empty(), postfix.queue_ids()
    assert postfix.routes["bad.test"] == DEFAULT_ROUTES["bad.test"]


def test_stop_leaves_no_process_and_no_directory(postfix):
    """A second instance (`postfix` only for the skip/fail when Postfix is missing)."""
    instance = PostfixInstance()
    started = time.monotonic()
    instance.start()
    start_seconds = time.monotonic() - started
    directory, pids = instance.dir, instance.processes()
    assert instance.master_pid in pids
    instance.stop()
    assert instance.processes() == []
    assert not directory.exists()
    assert start_seconds < 3, f"Postfix took {start_seconds:.2f} s to start"
