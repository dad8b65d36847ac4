"""The SMTP door of the bounce intake: an aiosmtpd handler for the mail of EVENT_MAIL_DOMAIN.

`manage.py bounce_server` runs it; tests run it in-process with aiosmtpd's Controller
(`BounceController`). It takes RCPT only for the event domain, accepts the null sender, and
hands each mail to `bounces.services.bounce_ingest` in a worker thread: Django's database calls
never run in the event loop's thread. "250" means the mail is kept; "451" (the database failed)
makes the sending MTA try again later, so nothing is lost.

What an outsider can make it spend is bounded (issue 11): DATA goes to a spool file, of which
at most BOUNCE_MAX_BYTES are kept (a longer mail is read to its end, kept cut and marked, never
held whole); two mails are read at a time, whatever the number of connections; a peer may hold
BOUNCE_MAX_CONNECTIONS_PER_PEER connections (an IPv6 peer counts by its /64, which one host
usually has whole) and all peers BOUNCE_MAX_CONNECTIONS: one more is answered 421 and closed
(RFC 5321 §3.8); 100 recipients a transaction (RFC 5321 §4.5.3.1.8); and a connection lasts at
most MAX_SESSION_SECONDS, however busy it keeps itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections

from .models import InboundMail
from .services import bounce_ingest

logger = logging.getLogger(__name__)

# A mail's first bytes stay in memory, the rest goes to a temporary file: waiting mails cost
# this much each, not their size.
_SPOOL_IN_MEMORY = 256 * 1024
_MAX_RECIPIENTS = 100
# A connection's whole life. aiosmtpd's 5-minute timeout restarts at every command, so a NOOP
# every few minutes held a place for ever: a few peers held them all and every bounce waited
# (421) for as long as they liked. A real report takes seconds; RFC 5321 §4.5.3.2 gives each
# step at most 10 minutes, and a sending MTA that is cut off tries again later.
MAX_SESSION_SECONDS = 15 * 60
# Mails read (parsed and recorded) at the same time: parsing holds the GIL, so more threads
# would only hold more mails in memory.
INTAKE_WORKERS = 2


def is_event_address(address: str) -> bool:
    """Whether `address` is at EVENT_MAIL_DOMAIN (read at each call: tests change it)."""
    domain = address.strip().strip("<>").rpartition("@")[2]
    return bool(domain) and domain.lower() == settings.EVENT_MAIL_DOMAIN.lower()


class BounceHandler:
    """aiosmtpd handler: RCPT for the event domain only, each DATA into the intake."""

    def __init__(self, *, max_workers: int = INTAKE_WORKERS) -> None:
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
        if len(envelope.rcpt_tos) >= _MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # BounceSMTP leaves the mail in a spool; aiosmtpd's own SMTP in memory.
        raw: IO[bytes] | bytes = getattr(envelope, "spool", None) or bytes(
            envelope.original_content or envelope.content or b""
        )
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
            "bounce listener: from %s <%s> to %s: %s, inbound mail %s %s %s",
            peer,
            sender,
            ",".join(recipients),
            "cut" if mail.truncated else "whole",
            mail.pk,
            mail.state,
            mail.reason or "-",
        )
        return f"250 2.0.0 Kept as {mail.pk}"

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def ingest(raw: IO[bytes] | bytes, sender: str, recipients: Sequence[str]) -> InboundMail:
    """One mail into the intake, in a worker thread with its own database connection. `raw` is
    the mail or its spool (read here, at most BOUNCE_MAX_BYTES + 1 bytes, then closed)."""
    if not isinstance(raw, bytes):
        with raw:
            raw.seek(0)
            raw = raw.read(settings.BOUNCE_MAX_BYTES + 1)
    close_old_connections()
    try:
        return bounce_ingest(
            raw=raw, source="smtp", envelope_sender=sender, envelope_recipients=recipients
        )
    finally:
        # Like the end of a request: a broken or idle connection is not kept for the next mail.
        connections.close_all()


def peer_key(peer: Any) -> str:
    """Who a connection counts against: its IPv4 address, or its IPv6 /64."""
    host = peer[0] if isinstance(peer, tuple) else str(peer)
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionLimiter:
    """Open connections per peer and in all. Used from the server's event loop only (one
    thread), so plain counters do."""

    def __init__(self, *, per_peer: int, total: int) -> None:
        self.per_peer, self.total = per_peer, total
        self.open: Counter[str] = Counter()
        self.refused = 0

    def acquire(self, key: str) -> bool:
        if self.open.total() >= self.total or self.open[key] >= self.per_peer:
            self.refused += 1
            return False
        self.open[key] += 1
        return True

    def release(self, key: str) -> None:
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]

    @classmethod
    def from_settings(cls) -> ConnectionLimiter:
        return cls(
            per_peer=settings.BOUNCE_MAX_CONNECTIONS_PER_PEER,
            total=settings.BOUNCE_MAX_CONNECTIONS,
        )


class BounceSMTP(SMTP):
    """aiosmtpd's SMTP with the intake's limits: connections counted and refused past the
    limiter's bounds, and DATA spooled, kept up to BOUNCE_MAX_BYTES and marked when longer."""

    def __init__(self, handler: Any, *, limiter: ConnectionLimiter, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._limiter = limiter
        self._peer_key: str | None = None
        self._turned_away = False
        self._session_end: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._peer_key is None and not self._turned_away:
            key = peer_key(transport.get_extra_info("peername"))
            if not self._limiter.acquire(key):
                # Before any SMTP state exists: the greeting is the refusal (RFC 5321 §3.1).
                self._turned_away = True
                logger.warning("bounce listener: %s refused, too many connections", key)
                transport.write(
                    f"421 4.7.0 {settings.EVENT_MAIL_DOMAIN} Too many connections, "
                    "try again later\r\n".encode()
                )
                transport.close()
                return
            self._peer_key = key
            self._session_end = asyncio.get_running_loop().call_later(
                MAX_SESSION_SECONDS, self._session_too_long, transport
            )
        super().connection_made(transport)

    def _session_too_long(self, transport: asyncio.BaseTransport) -> None:
        logger.warning("bounce listener: %s closed, connected too long", self._peer_key)
        transport.write(
            f"421 4.4.2 {settings.EVENT_MAIL_DOMAIN} Connected too long, closing\r\n".encode()
        )
        transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._turned_away:
            return  # it never started: nothing of SMTP's to end
        if self._session_end is not None:
            self._session_end.cancel()
            self._session_end = None
        if self._peer_key is not None:
            self._limiter.release(self._peer_key)
            self._peer_key = None
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA (RFC 5321 §4.1.1.4), into a spool: the first BOUNCE_MAX_BYTES + 1
        bytes are kept, the rest is read and dropped, so the reply still comes after the end of
        the data (§4.2.5) and the intake can mark the mail cut. A line longer than the stream's
        limit is kept in pieces instead of refused."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if self.envelope is None or not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        room = settings.BOUNCE_MAX_BYTES + 1
        # Handed to the intake's thread, which closes it (listener.ingest): no `with` here.
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            at_line_start = True
            while True:
                try:
                    line = await self._reader.readuntil(b"\r\n")
                except asyncio.LimitOverrunError as error:
                    line = await self._reader.read(error.consumed)
                except asyncio.IncompleteReadError:
                    line = b""
                if not line:  # the connection ended; aiosmtpd's own loop notices it
                    spool.close()
                    return
                if at_line_start:
                    if line == b".\r\n":
                        break
                    if line.startswith(b"."):  # dot-stuffing, RFC 5321 §4.5.2
                        line = line[1:]
                at_line_start = line.endswith(b"\r\n")
                if room > 0:
                    spool.write(line[:room])
                    room -= min(len(line), room)
        except BaseException:
            spool.close()
            raise
        self.envelope.spool = spool
        self.envelope.content = self.envelope.original_content = b""
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)


def smtp_options() -> dict[str, Any]:
    """aiosmtpd SMTP options shared by the command and the tests' controller."""
    return {
        # No SIZE refusal: a bounce refused at MAIL is lost (its sender drops a bounce of a
        # bounce); BounceSMTP.smtp_DATA keeps a long one cut instead.
        "data_size_limit": None,
        # The banner name; aiosmtpd's default asks DNS for the FQDN, which may hang.
        "hostname": settings.EVENT_MAIL_DOMAIN,
        "ident": "directo_mail bounce listener",
        "decode_data": False,
    }


class BounceController(Controller):
    """aiosmtpd's Controller (its own thread and loop) serving a BounceHandler: for tests."""

    def __init__(
        self,
        *,
        hostname: str,
        port: int,
        handler: BounceHandler | None = None,
        limiter: ConnectionLimiter | None = None,
    ) -> None:
        self.bounce_handler = handler or BounceHandler()
        self.limiter = limiter or ConnectionLimiter.from_settings()
        options = smtp_options()
        # The Controller names the banner's host name differently from SMTP itself.
        banner = options.pop("hostname")
        super().__init__(
            self.bounce_handler, hostname=hostname, port=port, server_hostname=banner, **options
        )

    def factory(self) -> BounceSMTP:
        return BounceSMTP(self.handler, limiter=self.limiter, **self.SMTP_kwargs)

    def stop(self, *args: Any, **kwargs: Any) -> None:
        super().stop(*args, **kwargs)
        self.bounce_handler.close()
