"""The SMTP door of the bounce intake: an aiosmtpd handler for the mail of EVENT_MAIL_DOMAIN.

`manage.py bounce_server` runs it; tests run it in-process with aiosmtpd's Controller
(`BounceController`). It takes RCPT only for the event domain, accepts the null sender, and
hands each mail to `bounces.services.bounce_ingest` in a worker thread: Django's database calls
never run in the event loop's thread. "250" means the mail is kept; "451" (the database failed)
makes the sending MTA try again later, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections

from .models import InboundMail
from .services import bounce_ingest

logger = logging.getLogger(__name__)


def is_event_address(address: str) -> bool:
    """Whether `address` is at EVENT_MAIL_DOMAIN (read at each call: tests change it)."""
    domain = address.strip().strip("<>").rpartition("@")[2]
    return bool(domain) and domain.lower() == settings.EVENT_MAIL_DOMAIN.lower()


class BounceHandler:
    """aiosmtpd handler: RCPT for the event domain only, each DATA into the intake."""

    def __init__(self, *, max_workers: int = 4) -> None:
        # Our own pool, not the loop's default one: the database calls of a burst of bounces
        # are bounded, and the server can close them all when it stops.
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bounce")

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not is_event_address(address):
            # 550 5.1.1 (RFC 3463 "bad destination mailbox"): a permanent no, this server is no
            # open relay and has no other mailboxes.
            return (
                f"550 5.1.1 <{address}>: this server takes mail only for "
                f"@{settings.EVENT_MAIL_DOMAIN}"
            )
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or envelope.content or b"")
        sender = envelope.mail_from or ""
        if sender == "<>":  # aiosmtpd keeps the brackets of the null sender
            sender = ""
        recipients = list(envelope.rcpt_tos)
        peer = session.peer[0] if isinstance(session.peer, tuple) else session.peer
        loop = asyncio.get_running_loop()
        try:
            mail = await loop.run_in_executor(self.executor, ingest, raw, sender, recipients)
        except (OperationalError, InterfaceError) as error:
            logger.warning("bounce listener: from %s, database unavailable: %s", peer, error)
            return "451 4.3.0 Database unavailable, please try again later"
        except Exception:  # our bug, not the mail's: the sender keeps it and retries
            logger.exception("bounce listener: from %s, the mail could not be kept", peer)
            return "451 4.3.0 Temporary failure, please try again later"
        logger.info(
            "bounce listener: from %s <%s> to %s: %d bytes, inbound mail %s %s %s",
            peer,
            sender,
            ",".join(recipients),
            len(raw),
            mail.pk,
            mail.state,
            mail.reason or "-",
        )
        return f"250 2.0.0 Kept as {mail.pk}"

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def ingest(raw: bytes, sender: str, recipients: Sequence[str]) -> InboundMail:
    """One mail into the intake, in a worker thread with its own database connection."""
    close_old_connections()
    try:
        return bounce_ingest(
            raw=raw, source="smtp", envelope_sender=sender, envelope_recipients=recipients
        )
    finally:
        # Like the end of a request: a broken or idle connection is not kept for the next mail.
        connections.close_all()


def smtp_options() -> dict[str, Any]:
    """aiosmtpd SMTP options shared by the command and the tests' controller."""
    return {
        # Advertised as SIZE; a larger mail is refused with 552 before its data arrives.
        "data_size_limit": settings.BOUNCE_MAX_BYTES,
        # The banner name; aiosmtpd's default asks DNS for the FQDN, which may hang.
        "hostname": settings.EVENT_MAIL_DOMAIN,
        "ident": "directo_mail bounce listener",
        "decode_data": False,
    }


class BounceController(Controller):
    """aiosmtpd's Controller (its own thread and loop) serving a BounceHandler: for tests."""

    def __init__(self, *, hostname: str, port: int, handler: BounceHandler | None = None) -> None:
        self.bounce_handler = handler or BounceHandler()
        options = smtp_options()
        # The Controller names the banner's host name differently from SMTP itself.
        banner = options.pop("hostname")
        super().__init__(
            self.bounce_handler, hostname=hostname, port=port, server_hostname=banner, **options
        )

    def stop(self, *args: Any, **kwargs: Any) -> None:
        super().stop(*args, **kwargs)
        self.bounce_handler.close()
