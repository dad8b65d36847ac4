"""`manage.py ingest_bounce`: one mail on stdin, from an MTA's pipe transport, into the intake.

Postfix (master.cf; `null_sender=` so the null sender arrives empty, not as MAILER-DAEMON):

    directo-bounces unix - n n - - pipe flags=Rq user=directo null_sender=
      argv=/srv/directo/.venv/bin/python /srv/directo/manage.py ingest_bounce
      --sender=${sender} --recipient=${recipient}

and `transport_maps` sending EVENT_MAIL_DOMAIN to `directo-bounces:`. The exit status follows
sysexits.h, which is what pipe(8) reads: 0 once the mail is kept (whatever became of it),
75 (EX_TEMPFAIL) when it could not be kept, so the MTA keeps it queued and tries again later.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import InterfaceError, OperationalError
from django.utils.translation import gettext as _

from bounces.services import bounce_ingest

logger = logging.getLogger(__name__)

EX_TEMPFAIL = 75  # sysexits.h: "temporary failure; user is invited to retry"


class Command(BaseCommand):
    help = (
        "Read one mail (a bounce, a delay notice or an auto-reply) from standard input and hand "
        "it to the bounce intake. For an MTA's pipe transport."
    )
    # call_command(..., stdin=stream): tests hand the mail in without touching sys.stdin.
    stealth_options = ("stdin",)
    requires_system_checks: list[str] = []  # a bounce must not wait for the system checks

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--sender",
            default="",
            help="the envelope sender (Postfix: ${sender}); empty or <> for the null sender",
        )
        parser.add_argument(
            "--recipient",
            dest="recipients",
            action="extend",
            nargs="+",
            default=[],
            metavar="ADDRESS",
            help="an envelope recipient (Postfix: ${recipient}); may be repeated",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        raw = _read_bytes(options.get("stdin") or sys.stdin, settings.BOUNCE_MAX_BYTES)
        sender = options["sender"].strip()
        if sender == "<>":
            sender = ""
        recipients = [r.strip() for r in options["recipients"] if r.strip()]
        try:
            mail = bounce_ingest(
                raw=raw, source="pipe", envelope_sender=sender, envelope_recipients=recipients
            )
        except (OperationalError, InterfaceError) as error:
            # The database is down or went away: the MTA keeps the mail and tries again.
            logger.warning("ingest_bounce: database unavailable (%s); exit %d", error, EX_TEMPFAIL)
            raise CommandError(
                _("The database is not available; the mail stays with the MTA for a retry."),
                returncode=EX_TEMPFAIL,
            ) from error
        except Exception as error:
            # bounce_ingest never raises for what the mail says, so this is our fault; a
            # permanent status would make the MTA bounce (or drop) the mail: keep it queued.
            logger.exception("ingest_bounce: the mail could not be kept; exit %d", EX_TEMPFAIL)
            raise CommandError(
                _("The mail could not be kept (%(error)s); it stays with the MTA for a retry.")
                % {"error": type(error).__name__},
                returncode=EX_TEMPFAIL,
            ) from error
        # One line for the MTA's log; never the mail's content.
        self.stdout.write(f"{mail.pk} {mail.state} {mail.reason or '-'}")


def _read_bytes(stream: IO, limit: int) -> bytes:
    """`stream` as bytes (the real stdin's buffer, or a text or bytes stream in tests), at most
    `limit` + 1 bytes: the intake keeps `limit` and marks a longer mail as truncated. The rest
    is read and dropped, so that the MTA's pipe sees the whole mail taken."""
    buffer = getattr(stream, "buffer", None)
    source = buffer if buffer is not None else stream
    data = source.read(limit + 1)
    while source.read(1024 * 1024):
        pass
    if isinstance(data, str):  # a text stream given by a test: no bytes to be faithful to
        return data.encode("utf-8", "surrogateescape")
    return bytes(data)
