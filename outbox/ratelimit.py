"""Per-sender sending rate, shared by all workers through the database.

Providers cap how fast one account may send (Microsoft 365: 30 messages a minute). A window of
SEND_RATE_WINDOW_SECONDS holds at most the sender's limit; a "slow down" reply (421, 4.7.x)
pauses the sender with the same backoff as a retry.
https://learn.microsoft.com/en-us/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits#sending-limits
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from smtp_settings.resolve import OAUTH_TRANSPORTS, SenderConfig, TransportKind

from .models import SendingWindow


def sender_key(sender: SenderConfig) -> str:
    return f"{sender.transport}:{sender.host}:{sender.port}:{sender.login}"


def limit_for(sender: SenderConfig) -> int | None:
    """Mails per window for this sender, None for no limit: the limit a minute set on the card
    for the server, else the provider's default (SEND_RATE_LIMITS)."""
    limits = settings.SEND_RATE_LIMITS
    if sender.transport == TransportKind.RELAY:
        return None  # the platform's own MTA or ESP paces itself
    if sender.rate_limit:
        return max(1, round(sender.rate_limit * settings.SEND_RATE_WINDOW_SECONDS / 60))
    if sender.transport in OAUTH_TRANSPORTS:  # by provider: "microsoft365", "google"
        return limits.get(sender.transport, limits.get(sender.host, limits.get("smtp")))
    return limits.get(sender.host, limits.get("smtp"))


def reserve(key: str, limit: int) -> float:
    """Take one place in the sender's window: 0 when the mail may go now, else seconds to wait."""
    window = timedelta(seconds=settings.SEND_RATE_WINDOW_SECONDS)
    now = timezone.now()
    with transaction.atomic():
        row, _ = SendingWindow.objects.select_for_update().get_or_create(
            key=key, defaults={"window_start": now}
        )
        if row.paused_until and row.paused_until > now:
            return (row.paused_until - now).total_seconds()
        if now - row.window_start >= window:
            row.window_start, row.count = now, 0
        if row.count < limit:
            row.count += 1
            row.save(update_fields=["window_start", "count"])
            return 0.0
        return (row.window_start + window - now).total_seconds()


def give_back(sender: SenderConfig) -> None:
    """A place taken for a mail that then did not go (another task claimed it first): freed,
    so duplicate tasks do not eat a limited sender's window."""
    if sender.transport == TransportKind.RELAY or not limit_for(sender):
        return
    SendingWindow.objects.filter(key=sender_key(sender), count__gt=0).update(
        count=models.F("count") - 1
    )


def turn_delay(sender: SenderConfig) -> float:
    """0 when the sender may send one more mail now (its place in the window is taken), else
    the seconds until it may: a full window or a "slow down" pause. Never blocks.

    A sender without a limit only honours a pause; that is read at most once a
    PAUSE_CHECK_SECONDS per sender and process, not for each of a bulk job's mails (a pause
    this process sets itself is seen at once)."""
    if sender.transport == TransportKind.RELAY:
        return 0.0  # the platform's own MTA or ESP paces itself
    key = sender_key(sender)
    if limit := limit_for(sender):
        return reserve(key, limit)
    now = time.monotonic()
    if now - _pause_checked.get(key, -PAUSE_CHECK_SECONDS) < PAUSE_CHECK_SECONDS:
        return 0.0
    delay = _paused_for(key)
    if delay <= 0:
        _pause_checked[key] = now
    return delay


def wait_for_turn(sender: SenderConfig, *, max_wait: float | None = None) -> float:
    """Block until the sender may send one more mail and return 0; or, when the wait would be
    longer than `max_wait` seconds, return that wait at once without taking a place (the
    interactive lane re-queues the mail instead of holding a worker: outbox_send)."""
    while (delay := turn_delay(sender)) > 0:
        if max_wait is not None and delay > max_wait:
            return delay
        time.sleep(min(delay, 5.0))
    return 0.0


PAUSE_CHECK_SECONDS = 1.0
_pause_checked: dict[str, float] = {}  # sender key -> monotonic time of the last read


def _paused_for(key: str) -> float:
    """Seconds left of the sender's pause, 0 when there is none (one indexed read)."""
    now = timezone.now()
    until = (
        SendingWindow.objects.filter(key=key, paused_until__gt=now)
        .values_list("paused_until", flat=True)
        .first()
    )
    return (until - now).total_seconds() if until else 0.0


def pause(sender: SenderConfig, seconds: float) -> None:
    """The server asked to slow down: nothing goes to this sender for `seconds`."""
    until = timezone.now() + timedelta(seconds=seconds)
    _pause_checked.pop(sender_key(sender), None)  # the next mail reads it
    SendingWindow.objects.update_or_create(
        key=sender_key(sender), defaults={"paused_until": until, "window_start": timezone.now()}
    )
