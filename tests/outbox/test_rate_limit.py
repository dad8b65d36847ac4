"""Per-sender rate limit (issue 5): a window holds at most the sender's limit, shared through
the database, and a 421 / 4.7.x reply pauses the sender. Sent in-process to a real server."""

from __future__ import annotations

import time

import pytest

from outbox.models import MessageState, OutgoingMessage, SendingWindow
from outbox.ratelimit import limit_for, sender_key
from outbox.services import outbox_enqueue, outbox_send_batch
from smtp_settings.models import SenderProfile
from smtp_settings.selectors import sender_config_for
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def piotr(smtp_servers):
    server = smtp_servers.plain
    user = factories.user("PIOTR", email="piotr@acme.example")
    factories.profile(user, host=server.host, port=server.port, security="none")
    return user


def _mails(user, n: int) -> list[int]:
    return [
        outbox_enqueue(user=user, to=["c@example.com"], subject=f"{i}", body_text="x").pk
        for i in range(n)
    ]


def _timed_batch(ids: list[int]) -> float:
    started = time.monotonic()
    outbox_send_batch(message_ids=ids)
    return time.monotonic() - started


def test_a_window_holds_at_most_the_senders_limit(piotr, smtp_servers, settings):
    settings.SEND_RATE_WINDOW_SECONDS = 1
    settings.SEND_RATE_LIMITS = {smtp_servers.plain.host: 5}

    elapsed = _timed_batch(_mails(piotr, 12))  # 5 + 5 + 2: two full windows to wait out

    assert len(smtp_servers.plain.messages) == 12
    assert 2.0 <= elapsed < 6.0
    window = SendingWindow.objects.get(key=sender_key(sender_config_for(user=piotr)))
    assert window.count == 2


def test_without_a_limit_nothing_waits(piotr, smtp_servers, settings):
    settings.SEND_RATE_WINDOW_SECONDS = 1
    settings.SEND_RATE_LIMITS = {}

    elapsed = _timed_batch(_mails(piotr, 12))

    assert len(smtp_servers.plain.messages) == 12
    assert elapsed < 1.5
    assert not SendingWindow.objects.exists()


def test_a_slow_down_reply_pauses_the_sender(piotr, smtp_servers, settings):
    settings.SEND_RATE_LIMITS = {smtp_servers.plain.host: 100}
    settings.SEND_RETRY_BASE_SECONDS = 0.5
    smtp_servers.plain.script("MAIL", "452 4.7.0 Too many messages, slow down", times=1)
    first, *rest = _mails(piotr, 3)

    elapsed = _timed_batch([first, *rest])

    deferred = OutgoingMessage.objects.get(pk=first)
    assert (deferred.state, deferred.attempts, deferred.explanation) == (
        MessageState.QUEUED,
        1,
        "throttled",
    )
    assert len(smtp_servers.plain.messages) == 2  # the others went, after the pause
    assert elapsed >= 0.5
    assert SendingWindow.objects.get().paused_until is not None


@pytest.mark.parametrize(
    ("mode", "host", "limit"),
    [("microsoft365", "", 30), ("smtp", "smtp.gmail.com", 60), ("smtp", "mx.acme.example", None)],
)
def test_default_limits_by_provider(mode, host, limit, settings):
    settings.SEND_RATE_LIMITS = {"microsoft365": 30, "smtp.gmail.com": 60}
    user = factories.user("ANNA")
    fields = {"host": host, "port": 465, "login": "a@b.c", "password": "x"} if host else {}
    factories.profile(user, mode=mode, **fields)
    assert limit_for(sender_config_for(user=user)) == limit


def test_the_cards_limit_a_minute_paces_the_sending(piotr, smtp_servers, settings):
    """The limit typed on the card (a minute) holds in the window, whatever the default."""
    settings.SEND_RATE_WINDOW_SECONDS = 1
    settings.SEND_RATE_LIMITS = {"smtp": 1000}
    SenderProfile.objects.filter(user=piotr).update(rate_limit=300)  # 5 a second

    elapsed = _timed_batch(_mails(piotr, 12))

    assert len(smtp_servers.plain.messages) == 12
    assert 2.0 <= elapsed < 6.0


def test_a_login_only_user_keeps_under_the_global_servers_limit(settings):
    """S6.2: the limit belongs to the server, so it comes with the global server."""
    settings.SEND_RATE_LIMITS = {}
    factories.profile(None, host="mx.acme.example", port=465, rate_limit=90)
    user = factories.user("ANNA")
    factories.profile(user, login="anna@acme.example", password="x", rate_limit=7)

    assert limit_for(sender_config_for(user=user)) == 90


def test_a_slow_down_reply_pauses_a_sender_without_a_limit_too(piotr, smtp_servers, settings):
    settings.SEND_RATE_LIMITS = {}
    settings.SEND_RETRY_BASE_SECONDS = 0.5
    smtp_servers.plain.script("MAIL", "421 4.7.0 Try again later, closing connection", times=1)

    elapsed = _timed_batch(_mails(piotr, 3))

    assert len(smtp_servers.plain.messages) == 2
    assert elapsed >= 0.5  # the other two waited out the pause


def test_a_sender_without_a_limit_reads_its_pause_once_a_second_not_per_mail(
    piotr, smtp_servers, settings
):
    """The hot path of a bulk job: no query per mail for a pause that is almost never set."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from outbox import ratelimit

    settings.SEND_RATE_LIMITS = {}
    ids = _mails(piotr, 12)
    ratelimit._pause_checked.clear()

    with CaptureQueriesContext(connection) as queries:
        outbox_send_batch(message_ids=ids)

    assert len(smtp_servers.plain.messages) == 12
    reads = [q for q in queries.captured_queries if "sendingwindow" in q["sql"].lower()]
    assert 1 <= len(reads) <= 2  # one read, a second one only if the batch took over 1 s
