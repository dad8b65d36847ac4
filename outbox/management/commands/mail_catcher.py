"""`manage.py mail_catcher`: the local SMTP server `make run` sends the relay's mail to.

Every message is kept as an .eml file under MAIL_CATCHER_DIR, newest last.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from outbox.catcher import CatcherHandler


class Command(BaseCommand):
    help = "Run a local SMTP server that keeps every message it receives as a file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.EMAIL_PORT or 1025)

    def handle(self, *args, host: str, port: int, **options) -> None:
        directory = Path(settings.MAIL_CATCHER_DIR)
        directory.mkdir(parents=True, exist_ok=True)
        controller = Controller(CatcherHandler(directory), hostname=host, port=port)
        controller.start()
        self.stdout.write(f"Mail catcher on {host}:{port}, keeping mail in {directory}")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            controller.stop()
