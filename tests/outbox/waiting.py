"""Waiting for the real worker: a message is settled once it is sent, failed or cancelled."""

from __future__ import annotations

import time

from outbox.models import OutgoingMessage


def settled(message: OutgoingMessage, timeout: float = 15.0) -> OutgoingMessage:
    """Poll until the worker has finished with `message`.

    A failed state and its Event are written in one transaction (outbox.services._record), so
    a settled failure always has its Event.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message.refresh_from_db()
        if message.is_final:
            return message
        time.sleep(0.05)
    raise AssertionError(f"message still {message.state} after {timeout}s: {message.last_reply}")
