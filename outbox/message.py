"""`build_message`: the only place a MIME message is made (DESIGN.md, house style 1).

It applies the resolved sender: From, Reply-To, the card's BCC (envelope only), the signature
in the text and HTML bodies, Message-ID, and in Directo-Reply-to mode a signed VERP envelope
sender that names the message, so a bounce finds it (S7.4). A message's own extra headers
(a letter's List-Unsubscribe) come from an allow-list, checked here.
"""

from __future__ import annotations

import datetime
import functools
import html
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from smtp_settings.errors import PermanentSendError
from smtp_settings.resolve import VERP_LOCAL_PART, SenderConfig
from smtp_settings.transports import CrlfBytes, crlf

from . import mimewrite
from .models import Attachment, OutgoingMessage

# RFC 3676 §4.3: the signature separator is "-- " on a line of its own.
SIGNATURE_SEPARATOR = "-- "
_VERP_SALT = "directo_mail.verp"
# The headers a message may add of its own (OutgoingMessage.extra_headers): a letter's one-click
# unsubscribe (RFC 2369, RFC 8058). Anything else is refused, so no caller can add a Bcc or
# replace From through them.
EXTRA_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")
# RFC 5322 §2.1.1: a line is at most 998 characters.
MAX_LINE = 998


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[str, ...]


def new_message_id(domain: str) -> str:
    return make_msgid(domain=domain)


def verp_address(message_pk: int, domain: str) -> str:
    """`bounces+<pk>-<signature>@domain`: names the message, cannot be forged for another."""
    token = f"{message_pk}-{_verp_signature(message_pk)}"
    return f"{VERP_LOCAL_PART}+{token}@{domain}"


def verp_message_pk(address: str, domain: str) -> int | None:
    """The message a VERP address names, or None when it is not one of ours or forged."""
    local, _, at = address.strip("<>").rpartition("@")
    prefix = f"{VERP_LOCAL_PART}+"
    if at.lower() != domain.lower() or not local.startswith(prefix):
        return None
    pk, _, signature = local[len(prefix) :].partition("-")
    # isdigit() alone admits "²", which int() refuses: ASCII digits only.
    if not (pk.isascii() and pk.isdigit()):
        return None
    if not constant_time_compare(signature, _verp_signature(int(pk))):
        return None
    return int(pk)


def _verp_signature(message_pk: int) -> str:
    return salted_hmac(_VERP_SALT, str(message_pk), algorithm="sha256").hexdigest()[:16]


def extra_headers_check(headers: object) -> dict[str, str]:
    """`headers` when every name is allowed (EXTRA_HEADERS) and every value is printable ASCII
    on one line that fits; else ValueError naming the header."""
    if not isinstance(headers, dict):
        raise ValueError("extra headers")
    for name, value in headers.items():
        if name not in EXTRA_HEADERS:
            raise ValueError(str(name)[:100])
        # isprintable() is False for CR, LF, TAB and every other control or line separator.
        if not (isinstance(value, str) and value.isascii() and value.isprintable()):
            raise ValueError(name)
        if len(name) + 2 + len(value) > MAX_LINE:
            raise ValueError(name)
    return headers


class _Unfolded(str):
    """A header value written on one line as it is. The email package folds a long value
    without spaces into RFC 2047 encoded words, and a URL in List-Unsubscribe must stay a URL
    (RFC 2369 §2); extra_headers_check has made sure it is one short ASCII line."""

    def __new__(cls, name: str, value: str) -> _Unfolded:
        header = super().__new__(cls, value)
        header.name = name  # the email policy stores a value with a matching `name` as it is
        return header

    def fold(self, *, policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def envelope_for(message: OutgoingMessage, sender: SenderConfig) -> Envelope:
    recipients = [*message.to, *message.cc, *message.bcc]
    if sender.bcc:
        recipients.append(sender.bcc)
    unique = tuple(dict.fromkeys(ascii_domain(address.lower()) for address in recipients))
    return Envelope(mail_from=ascii_domain(message.envelope_from), recipients=unique)


def ascii_domain(address: str) -> str:
    """The address with its domain in IDNA form ("jan@bücher.pl" → "jan@xn--bcher-kva.pl"):
    what MAIL FROM and RCPT TO carry without SMTPUTF8 (validate_email admits such domains;
    the local part is ASCII already). One IDNA refuses is left as it is, and refused by the
    transport."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def message_bytes(
    message: OutgoingMessage,
    sender: SenderConfig,
    attachments: list[Attachment] | None = None,
    contents: dict[str, bytes] | None = None,
) -> CrlfBytes:
    """The message as it goes on the wire (CRLF line ends, nothing dot-stuffed yet).

    The plain shape every invoice and letter has is written directly (outbox.mimewrite, a
    tenth of the CPU); anything else is built by build_message, the `email` package. Both make
    the same message (tests/outbox/test_mimewrite.py). `attachments` are the message's
    Attachment rows when the caller read them already (a batch reads them in one query), and
    `contents` the files' bytes by storage name that it read already (filestore.read_many).
    """
    if attachments is None:
        attachments = list(message.attachments.all())
    extra = _extra_headers(message)
    headers: list[tuple[str, object]] = [("From", (sender.from_name, sender.from_email))]
    headers.append(("To", ", ".join(message.to)))
    if message.cc:
        headers.append(("Cc", ", ".join(message.cc)))
    if sender.reply_to:
        headers.append(("Reply-To", sender.reply_to))
    headers += [
        ("Subject", message.subject),
        ("Date", _date(message.created_at)),
        ("Message-ID", message.message_id),
        *extra.items(),
    ]
    parts = []
    for attachment in attachments:
        content = (contents or {}).get(attachment.file.name)
        if content is None:
            with attachment.file.open("rb") as stream:
                content = stream.read()
        parts.append(mimewrite.Part(content, attachment.content_type, attachment.filename))
    data = mimewrite.write(
        headers=headers,
        text=_with_text_signature(message.body_text, sender.signature),
        html=_with_html_signature(message.body_html, sender.signature) if message.body_html else "",
        attachments=parts,
    )
    if data is not None:
        wire = CrlfBytes(data)  # mimewrite writes CRLF line ends only
        wire.dot_lines = data.dot_lines
        return wire
    _refuse_control_characters(headers, parts)
    mime = build_message(message, sender, attachments=attachments)
    return crlf(mime.as_bytes(policy=policy.SMTP))


def _date(created_at: datetime.datetime | None) -> str:
    """The Date header: when the message was created, in the current time zone (RFC 5322
    format). A job's mails share their second, so the text is made once a second."""
    if created_at is None or timezone.is_naive(created_at):  # not a stored row's: as before
        return format_datetime(timezone.localtime(created_at))
    return _date_at(int(created_at.timestamp()), timezone.get_current_timezone())


@functools.lru_cache(maxsize=256)
def _date_at(seconds: int, zone: datetime.tzinfo) -> str:
    return format_datetime(datetime.datetime.fromtimestamp(seconds, zone))


def _refuse_control_characters(headers: list[tuple[str, object]], parts: list) -> None:
    """A value with a line break or a control character (mimewrite.FORBIDDEN: CR, LF, NEL,
    U+2028 …; not a no-break space or an emoji, which are text) is never written into a header:
    the message fails, naming the header (a row stored before the checks on input, or written
    some other way)."""
    values = [(name, value) for name, value in headers if name != "From"]
    values += [("From", text) for text in headers[0][1]]
    values += [("Content-Disposition", part.filename) for part in parts]
    for name, value in values:
        if mimewrite.FORBIDDEN.search(str(value)):
            raise PermanentSendError("", explanation="header_line_break", params={"header": name})


def _extra_headers(message: OutgoingMessage) -> dict[str, str]:
    try:
        return extra_headers_check(message.extra_headers)
    except ValueError as error:
        raise PermanentSendError(
            "", explanation="header_line_break", params={"header": str(error)}
        ) from None


def build_message(
    message: OutgoingMessage,
    sender: SenderConfig,
    attachments: list[Attachment] | None = None,
) -> EmailMessage:
    """The MIME message for `message` as `sender` sends it. BCC never appears in headers."""
    mime = EmailMessage()
    mime["From"] = Address(display_name=sender.from_name, addr_spec=sender.from_email)
    mime["To"] = ", ".join(message.to)
    if message.cc:
        mime["Cc"] = ", ".join(message.cc)
    if sender.reply_to:
        mime["Reply-To"] = sender.reply_to
    mime["Subject"] = message.subject
    mime["Date"] = _date(message.created_at)
    mime["Message-ID"] = message.message_id
    for name, value in _extra_headers(message).items():
        mime[name] = _Unfolded(name, value)
    # Quoted-printable keeps every line 7-bit: no server's 8BITMIME support is assumed.
    mime.set_content(
        _with_text_signature(message.body_text, sender.signature), cte="quoted-printable"
    )
    if message.body_html:
        mime.add_alternative(
            _with_html_signature(message.body_html, sender.signature),
            subtype="html",
            cte="quoted-printable",
        )
    if attachments is None:
        attachments = list(message.attachments.all())
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        with attachment.file.open("rb") as stream:
            mime.add_attachment(
                stream.read(),
                maintype=maintype or "application",
                subtype=subtype or "octet-stream",
                filename=attachment.filename,
            )
    _refuse_line_breaks(mime)
    return mime


def _refuse_line_breaks(mime: EmailMessage) -> None:
    """The email package decodes an RFC 2047 encoded word when a header is set, and writes a
    decoded CR/LF back raw ("=?utf-8?q?=0D=0ABcc=3A_x?=" adds a Bcc header; CVE-2024-6923).
    Such a message is never built: it fails at once, with an Event saying which header."""
    for part in mime.walk():  # an attachment's name is a header too (Content-Disposition)
        for name, value in part.items():
            lines = part.policy.fold_binary(name, value).rstrip(b"\r\n").split(b"\n")
            if any(b"\r" in line for line in lines) or any(
                line[:1] not in (b" ", b"\t") for line in lines[1:]
            ):
                raise PermanentSendError(
                    "", explanation="header_line_break", params={"header": name}
                )


def _with_text_signature(body: str, signature: str) -> str:
    if not signature:
        return body
    return f"{body.rstrip()}\n\n{SIGNATURE_SEPARATOR}\n{signature}\n"


def _with_html_signature(body: str, signature: str) -> str:
    if not signature:
        return body
    block = (
        '<div class="signature">-- <br>'
        + "<br>".join(html.escape(line) for line in signature.splitlines())
        + "</div>"
    )
    lowered = body.lower()
    end = lowered.rfind("</body>")
    return body[:end] + block + body[end:] if end != -1 else body + block
