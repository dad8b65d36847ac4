"""`manage.py bounce_server --host H --port N`: the SMTP door of the bounce intake.

The MX (or the MTA's transport map) of EVENT_MAIL_DOMAIN points here. bounces/listener.py does
the work; this runs it until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from bounces.listener import BounceHandler, BounceSMTP, ConnectionLimiter, smtp_options

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Receive the mail of EVENT_MAIL_DOMAIN over SMTP (bounces, delay notices, auto-replies) "
        "and hand each one to the bounce intake. Runs until SIGTERM or SIGINT."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=int, default=2525, help="port to listen on")

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self._serve(options["host"], options["port"]))

    async def _serve(self, host: str, port: int) -> None:
        handler = BounceHandler()
        limiter = ConnectionLimiter.from_settings()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        server = await loop.create_server(
            lambda: BounceSMTP(handler, limiter=limiter, loop=loop, **smtp_options()),
            host=host,
            port=port,
        )
        self.stdout.write(f"bounce_server: listening on {host}:{port}")
        try:
            await stop.wait()
        finally:
            server.close()
            # From Python 3.12 this waits for open sessions too: an idle client must not keep
            # a stopping server.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=5)
            # Mails being ingested finish; their senders got no reply yet and retry otherwise.
            await loop.run_in_executor(None, handler.close)
            self.stdout.write("bounce_server: stopped")
