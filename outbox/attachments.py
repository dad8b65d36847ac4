"""Files a user attaches to one mail: a safe name, a type from the name, and the size limit of
the server that will carry it (issue 12, item 1).

A provider refuses a message over its size limit, counted as sent: base64 makes every file a
third larger (and a line break every 76 characters), so a "25 MB" limit holds about 18 MB of
files. The limits are a setting per server kind (ATTACHMENT_LIMITS_MB); we do not ask the
server for its EHLO SIZE while the user writes, so a configured default stands for it.
https://support.google.com/mail/answer/6584
https://learn.microsoft.com/en-us/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits#message-limits
"""

from __future__ import annotations

import math
import mimetypes
import os
import quopri
import unicodedata
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.utils.translation import gettext as _

from smtp_settings import providers
from smtp_settings.resolve import OAUTH_TRANSPORTS, SenderConfig, TransportKind

MB = 1_000_000  # providers count decimal megabytes; the smaller unit errs on the safe side
MAX_NAME_CHARS = 150
# Headers of the message and of each part, so a message just under a limit is not refused.
HEADERS_BYTES = 4_000
PART_HEADERS_BYTES = 300


def attachment_filename(name: str) -> str:
    """The name a file is attached under: its last path part only (no "../", no "C:\\"), no
    control or line-separator characters (no header injection, no hidden text), no leading
    dots, at most MAX_NAME_CHARS characters with the extension kept. Non-ASCII letters stay:
    the email package writes them as an RFC 2231 parameter."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in name)
    name = " ".join(name.split()).lstrip(". ")
    if len(name) > MAX_NAME_CHARS:
        stem, ext = os.path.splitext(name)
        ext = ext[:20]
        name = stem[: MAX_NAME_CHARS - len(ext)] + ext
    return name or "attachment"


def attachment_content_type(filename: str) -> str:
    """The type from the name's extension; what the browser claimed is never used."""
    return mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"


def encoded_size(size: int) -> int:
    """Bytes a file of `size` bytes takes in the message: base64 with CRLF every 76 chars."""
    base64 = 4 * math.ceil(size / 3)
    return base64 + 2 * math.ceil(base64 / 76) + PART_HEADERS_BYTES


def message_size(*, body: str, sizes: Iterable[int]) -> int:
    """The message's size as sent: its quoted-printable text and each file base64-encoded."""
    text = len(quopri.encodestring(body.encode("utf-8")))
    return HEADERS_BYTES + text + sum(encoded_size(size) for size in sizes)


def size_limit(sender: SenderConfig) -> tuple[int, str]:
    """The largest message (bytes) the sender's server takes, and how to name that server."""
    limits = settings.ATTACHMENT_LIMITS_MB
    if sender.transport == TransportKind.RELAY:
        return limits["relay"] * MB, _("the platform's mail server")
    if sender.transport in OAUTH_TRANSPORTS:  # by provider: "microsoft365", "google"
        provider = providers.get(sender.transport)
        megabytes = limits.get(sender.transport, limits.get(sender.host.lower(), limits["smtp"]))
        return megabytes * MB, provider.name
    megabytes = limits.get(sender.host.lower(), limits["smtp"])
    return megabytes * MB, _("the SMTP server %(host)s") % {"host": sender.host}


def attachments_check(*, sender: SenderConfig, body: str, sizes: list[int]) -> None:
    """ValidationError on "attachments" when the message would be over its server's limit."""
    limit, server = size_limit(sender)
    size = message_size(body=body, sizes=sizes)
    if size > limit:
        raise ValidationError(
            {
                "attachments": _(
                    "The message is too large for %(server)s: at most %(limit)s MB is "
                    "accepted there, and with its attachments (encoded for sending, a third "
                    "larger than the files) it comes to %(size)s MB. Remove an attachment or "
                    "send it in a second message."
                )
                % {
                    "server": server,
                    "limit": limit // MB,
                    "size": f"{math.ceil(size / MB * 10) / 10:.1f}",
                }
            }
        )


def uploaded_attachments(files: Iterable[File]) -> list[tuple[str, File, str]]:
    """Uploaded files as outbox_enqueue's (name, content, type): a safe name, and the type
    from that name (the browser's Content-Type is not trusted)."""
    attached = []
    for upload in files:
        name = attachment_filename(upload.name)
        attached.append((name, upload, attachment_content_type(name)))
    return attached
