"""The local mail catcher of `make run`: keeps what the relay sends as files, and reads them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from django.conf import settings


class CatcherHandler:
    """aiosmtpd handler: every message becomes an .eml file, newest last."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server, session, envelope) -> str:
        path = self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns()}.eml"
        header = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        path.write_bytes(header + envelope.original_content)
        return "250 OK: kept by the local mail catcher"


@dataclass(frozen=True)
class CaughtMessage:
    name: str
    envelope_from: str
    envelope_to: str
    subject: str
    sender: str
    reply_to: str
    date: str
    text: str


def caught_messages(*, limit: int) -> list[CaughtMessage]:
    directory = Path(settings.MAIL_CATCHER_DIR)
    if not directory.is_dir():
        return []
    files = sorted(directory.glob("*.eml"), reverse=True)[:limit]
    return [_read(path) for path in files]


def caught_version() -> str:
    """What the catcher holds, in one short string that changes when a mail arrives."""
    directory = Path(settings.MAIL_CATCHER_DIR)
    names = sorted(directory.glob("*.eml")) if directory.is_dir() else []
    return f"{len(names)}:{names[-1].name if names else ''}"


def _read(path: Path) -> CaughtMessage:
    mime: EmailMessage = message_from_bytes(path.read_bytes(), policy=policy.default)
    body = mime.get_body(preferencelist=("plain", "html"))
    return CaughtMessage(
        name=path.name,
        envelope_from=str(mime["X-Envelope-From"] or ""),
        envelope_to=str(mime["X-Envelope-To"] or ""),
        subject=str(mime["Subject"] or ""),
        sender=str(mime["From"] or ""),
        reply_to=str(mime["Reply-To"] or ""),
        date=str(mime["Date"] or ""),
        text=body.get_content() if body is not None else "",
    )
