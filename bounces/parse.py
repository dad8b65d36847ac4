"""`parse_bounce`: what a message that came back says. Pure: no database, network or settings.

It reads RFC 3464 delivery status notifications itself, every field of them; falls back on
flufl.bounce's detectors for the non-standard formats; tells auto-replies (RFC 3834) apart; and
collects what finds the original message: the addresses the report was delivered to (the caller
keeps the one `outbox.message.verp_message_pk` accepts) and the original Message-ID.

It never raises: a message it cannot read comes back as kind "unknown" with `error` set, so the
intake keeps it raw for an admin and goes on with the next one. Its cost is bounded by the
mail's size, whatever the mail holds: only its first `_PARSE_BYTES` are parsed, and of those
at most `max_recipients` recipient blocks and `_MAX_PARTS` other MIME parts are kept while
parsing (each one past that is parsed and dropped at once, and counted).
"""

from __future__ import annotations

import base64
import email
import email.feedparser
import logging
import quopri
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import getaddresses, parseaddr
from typing import Literal

import flufl.bounce

from . import formats
from .reasons import classify

try:
    # Private, but pinned in requirements.txt. all_failures() re-raises the first detector that
    # crashes (the Yale detector's IndexError on a message without From on this Python, see
    # shared/TESTING-NOTES.md "Bounces"), which would hide every detector after it; running the
    # same list in the same order lets us skip just the broken one.
    from flufl.bounce._scan import _DETECTORS
except ImportError:  # a later flufl.bounce: its public all_failures(), guarded, still works
    _DETECTORS = None

log = logging.getLogger(__name__)

Kind = Literal["bounce", "delay", "auto_reply", "complaint", "unknown"]

# RFC 3464 §2.1 and its UTF-8 form, RFC 6533 §6.2.
_DELIVERY_STATUS = ("message/delivery-status", "message/global-delivery-status")
# RFC 3463 §2: class.subject.detail; class 2 success, 4 persistent transient, 5 permanent.
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# RFC 3464 §2.3.3: the actions that say the message did not (yet) arrive. "error" is OpenSMTPD's
# non-standard spelling of "failed"; some MTAs add a comment after the word.
_FAILED_ACTIONS = ("fail", "error")
_DELAYED_ACTIONS = ("delay",)
_SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")
# The parts that carry the returned message or its header (RFC 3462 §2, RFC 6533 §6).
_RETURNED_MESSAGE = ("message/rfc822", "message/global")
_RETURNED_HEADERS = (
    "text/rfc822-headers",
    "message/global-headers",
    "message/rfc822-headers",  # non-standard; seen in flufl.bounce's dsn_05.txt and others
)
# A Message-ID header line in the text of a non-MIME bounce that quotes the original.
_QUOTED_MESSAGE_ID = re.compile(rb"^[ \t>]*Message-I[Dd]:[ \t]*(<[^<>\s]+>)", re.MULTILINE | re.I)
# MIME parts kept in one mail besides the recipient blocks: a real bounce has a handful (text,
# status, the returned message and its attachments); more only cost memory.
_MAX_PARTS = 200
# What flufl.bounce's detectors read of each body: a non-standard notice is a few KiB of text;
# its regular expressions over a whole 10 MiB body cost seconds.
_DETECTOR_TEXT = 256 * 1024
# The parser is fed this much at a time, so the mail is never copied whole as text.
_FEED_CHUNK = 64 * 1024
# What is parsed of a mail (the rest stays in the kept mail, unread). The email package holds
# every line of a header block or a body as its own object until the block ends: 10 MB of
# short lines (a folded header of 400,000 addresses, 1.3 million headers, a body of empty lines)
# took 270-340 MB and up to 23 s to read. A real report says all it has to say in its first
# few KiB: the notice, the status of at most a few hundred recipients, then the returned
# message's header (RFC 3462 §2 orders them so); only its body, which we never read, is long.
# At 1 MiB the real bounce_server, taking four such mails at once, still passed 150 MB.
_PARSE_BYTES = 256 * 1024
# Addresses kept from the delivery headers (the VERP the report went to is among the first).
_MAX_CANDIDATES = 100
# Where a receiving MTA records the address the report was delivered to.
_DELIVERY_HEADERS = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "To",
    "Cc",
    "X-Failed-Recipients",
)
# Out-of-office subjects at the start of a subject (after any reply prefix): Exchange/Outlook
# writes them in the user's language, Exchange 2003 wrote "Out of Office AutoReply:".
_REPLY_PREFIX = r"(?:(?:re|aw|sv|vs|ant|odp|fw|fwd|wg|tr)\s*:\s*)*"
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*"
    + _REPLY_PREFIX
    + r"(?:out\ of\ (?:the\ )?office|automatic\ reply|auto[-\ ]?reply|auto[-\ ]?response"
    r"|autosvar|automatisk\ svar|automatische\ antwort|abwesenheitsnotiz|abwesend\b"
    r"|réponse\ automatique|respuesta\ automática|fuera\ de\ la\ oficina"
    r"|risposta\ automatica|fuori\ ufficio|resposta\ automática"
    r"|automatyczna\ odpowied[źz]|poza\ biurem|automaatne\ vastus|automaattinen\ vastaus"
    r"|automātiskā\ atbilde|automatinis\ atsakymas|автоматический\ ответ"
    r"|on\ vacation|vacation\ reply|urlaubsabwesenheit)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BounceRecipient:
    """One recipient a report is about (RFC 3464 §2.3: a per-recipient block)."""

    address: str
    permanent: bool
    action: str = ""  # "failed" or "delayed" (§2.3.3)
    status: str = ""  # e.g. "5.1.1" (§2.3.4, RFC 3463); "" when the report has none
    diagnostic: str = ""  # the remote server's reply, e.g. "550 5.1.1 no such user" (§2.3.6)
    remote_mta: str = ""  # the server that gave that reply (§2.3.5)
    source: str = ""  # "dsn", or the flufl.bounce detector that found the address
    # Why, in one of bounces.reasons.REASONS (user_unknown, mailbox_full, …): from the status
    # and the server's words when not given.
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.reason:
            reason = classify(
                status=self.status, diagnostic=self.diagnostic, permanent=self.permanent
            )
            object.__setattr__(self, "reason", reason)


@dataclass(frozen=True)
class BounceReport:
    """What a message that came back to the bounce address says."""

    kind: Kind
    recipients: tuple[BounceRecipient, ...] = ()
    reporting_mta: str = ""  # RFC 3464 §2.2.2
    original_message_id: str = ""  # "<id@domain>", as the Message-ID header has it
    # Every address the report was delivered to: the envelope recipients first, then the
    # delivery headers and the returned message's Return-Path. The caller keeps the one that
    # outbox.message.verp_message_pk accepts (it checks the local part, domain and signature).
    verp_candidates: tuple[str, ...] = ()
    subject: str = ""
    report_id: str = ""  # the report's own Message-ID: the same report twice is one report
    error: str = ""  # why the message could not be read; kind is then "unknown"
    # Recipient blocks (or detector findings) past `max_recipients`, and MIME parts past
    # _MAX_PARTS, that were dropped unread.
    recipients_ignored: int = 0
    parts_ignored: int = 0
    unread_bytes: int = 0  # past _PARSE_BYTES: kept with the mail, never parsed
    # An ARF feedback report (RFC 5965): kind "complaint", its Feedback-Type ("abuse", …) and
    # the addresses it is about (Original-Rcpt-To, Removal-Recipient). Never a bounce.
    feedback_type: str = ""
    complainants: tuple[str, ...] = ()

    @property
    def permanent_failures(self) -> tuple[BounceRecipient, ...]:
        return tuple(recipient for recipient in self.recipients if recipient.permanent)

    @property
    def delays(self) -> tuple[BounceRecipient, ...]:
        return tuple(recipient for recipient in self.recipients if not recipient.permanent)


def parse_bounce(
    raw: bytes, *, envelope_recipients: Sequence[str] = (), max_recipients: int = 100
) -> BounceReport:
    """What `raw` reports, with at most `max_recipients` recipients. Never raises: an unreadable
    message is kind "unknown" with `error`."""
    try:
        return _parse(raw, envelope_recipients, max(max_recipients, 1))
    except Exception as error:  # one bad message must never stop the intake (issue 6)
        log.warning("Unreadable bounce (%d bytes)", len(raw or b""), exc_info=True)
        try:
            candidates = _addresses(envelope_recipients)
        except Exception:
            candidates = ()
        return BounceReport(
            kind="unknown",
            verp_candidates=candidates,
            error=f"{type(error).__name__}: {error}"[:1000],
        )


def _parse(raw: bytes, envelope_recipients: Sequence[str], max_recipients: int) -> BounceReport:
    size = len(raw)
    raw = _without_mbox_line(_lf_for_bare_cr(raw))
    message, dropped = _bounded_message(raw, max_recipients)
    message = _with_body_boundary(message, raw, max_recipients, dropped)
    subject = _decoded(_header(message, "Subject"))
    feedback = _feedback_report(message)
    if feedback is not None:
        feedback_type, complainants = feedback
        return BounceReport(
            kind="complaint",
            feedback_type=feedback_type,
            complainants=complainants,
            original_message_id=_original_message_id(message),
            verp_candidates=_addresses([*envelope_recipients, *_delivery_addresses(message)]),
            subject=subject,
            report_id=_message_id(_header(message, "Message-ID")),
            unread_bytes=max(0, size - _PARSE_BYTES),
        )
    reporting_mta, recipients = _delivery_status(message)
    kind: Kind
    # A DSN wins over every auto-reply sign: RFC 3464 reports may carry
    # "Auto-Submitted: auto-replied" (RFC 3834 §5) and are still bounces. So does a notice
    # that names recipients (formats.py): a report that names them is never an auto-reply.
    # Not an address the returned message was sent to, though: a test mail goes to its sender.
    own = _own_addresses(message) - _sent_to(message)
    if not recipients:
        recipients = _dsn_in_text(message)
    if not recipients and not _is_strong_auto_reply(message, subject):
        recipients = [
            r
            for r in _flufl_failures(message)
            if r.address.lower() not in own and valid_recipient(r.address)
        ]
    if not recipients and not _is_strong_auto_reply(message, subject):
        # Never on what says it is an out-of-office reply (its text names colleagues).
        recipients = _notice_failures(message, own)
    if not recipients:
        recipients = _returned_recipients(message, own)
    recipients = [_with_diagnostic(message, r) for r in recipients if valid_recipient(r.address)]
    if len(recipients) > max_recipients:
        dropped.blocks += len(recipients) - max_recipients
        recipients = recipients[:max_recipients]
    if recipients:
        kind = "bounce" if any(r.permanent for r in recipients) else "delay"
    elif _is_auto_reply(message, subject):
        kind = "auto_reply"
    else:
        kind = "unknown"
    return BounceReport(
        kind=kind,
        recipients=tuple(recipients),
        reporting_mta=reporting_mta,
        original_message_id=_original_message_id(message),
        verp_candidates=_addresses([*envelope_recipients, *_delivery_addresses(message)]),
        subject=subject,
        report_id=_message_id(_header(message, "Message-ID")),
        recipients_ignored=dropped.blocks,
        parts_ignored=dropped.parts,
        unread_bytes=max(0, size - _PARSE_BYTES),
    )


class _Dropped:
    """What the bounded parse of one mail left out."""

    def __init__(self) -> None:
        self.blocks = 0
        self.parts = 0


def _bounded_message(raw: bytes, max_recipients: int) -> tuple[Message, _Dropped]:
    """The first _PARSE_BYTES of `raw` parsed by the email package (compat32, as flufl.bounce's
    detectors expect; bytes in, as a bounce's charset is a guess), keeping at most
    `max_recipients` recipient blocks per delivery-status part and _MAX_PARTS other parts.

    The feed parser attaches each new part or status block to its parent before it reads it
    (email.feedparser's _new_message); a parent that declines keeps no reference, so the part
    is read and freed at once: memory stays that of the parts kept, not of the mail's count.
    """
    dropped = _Dropped()
    kept = [0]

    class BoundedMessage(Message):
        def attach(self, payload: Message) -> None:
            if self.get_content_type() in _DELIVERY_STATUS:
                # The first block holds the per-message fields (RFC 3464 §2.2).
                if len(self._payload or ()) > max_recipients:
                    dropped.blocks += 1
                    return
            elif kept[0] >= _MAX_PARTS:
                dropped.parts += 1
                return
            else:
                kept[0] += 1
            super().attach(payload)

    parser = email.feedparser.BytesFeedParser(_factory=BoundedMessage)
    view = memoryview(raw)[:_PARSE_BYTES]
    for start in range(0, len(view), _FEED_CHUNK):
        parser.feed(bytes(view[start : start + _FEED_CHUNK]))
    return parser.close(), dropped


# --- RFC 3464 delivery status notifications ----------------------------------------------------
# https://www.rfc-editor.org/rfc/rfc3464#section-2


def _delivery_status(message: Message) -> tuple[str, list[BounceRecipient]]:
    """Reporting-MTA and the failed or delayed recipients of every message/delivery-status part.

    Not only inside multipart/report: some MTAs put the part in multipart/mixed, and flufl.bounce
    accepts that too.
    """
    reporting_mta = ""
    recipients: dict[str, BounceRecipient] = {}
    for part in message.walk():
        if part.get_content_type() not in _DELIVERY_STATUS:
            continue
        for block in _status_blocks(part):
            # The first block holds the per-message fields, the others one recipient each; but
            # some MTAs leave the per-message block out, so each block is read for both.
            if not reporting_mta:
                reporting_mta = _typed_value(_header(block, "Reporting-MTA"))
            for run in _recipient_runs(block):
                recipient = _status_recipient(run)
                if recipient is None:
                    continue
                key = recipient.address.lower()
                # A permanent failure outranks a delay for the same address.
                if key not in recipients or recipient.permanent > recipients[key].permanent:
                    recipients[key] = recipient
    return reporting_mta, list(recipients.values())


def _recipient_runs(block: Message) -> list[Message]:
    """A block as the recipient blocks it holds: some MTAs (AOL's, Cox's) write them without
    the blank line between, so a new one begins where a recipient field comes again."""
    names = [key.lower() for key, _value in block.raw_items()]
    if names.count("final-recipient") < 2 and names.count("original-recipient") < 2:
        return [block]
    runs: list[Message] = []
    current = Message()
    for key, value in block.raw_items():
        lowered = key.lower()
        if lowered in ("final-recipient", "original-recipient") and current.get(key) is not None:
            runs.append(current)
            current = Message()
        current[key] = value
    runs.append(current)
    return runs


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status part.

    The email package splits message/delivery-status into one Message a block. It does not know
    RFC 6533's message/global-delivery-status (UTF-8, and may be base64 or quoted-printable
    encoded): that one we split ourselves.
    """
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, list):
        data = b"".join(inner.as_bytes() for inner in payload if isinstance(inner, Message))
    else:
        data = str(part.get_payload()).encode("utf-8", "surrogateescape")
    encoding = _header(part, "Content-Transfer-Encoding").lower()
    if encoding == "base64":
        data = base64.b64decode(data.strip() + b"==", validate=False)
    elif encoding == "quoted-printable":
        data = quopri.decodestring(data)
    text = data.decode("utf-8", "replace")
    parser = HeaderParser()
    return [parser.parsestr(chunk.strip() + "\n") for chunk in re.split(r"\r?\n[ \t]*\r?\n", text)]


def _status_recipient(block: Message) -> BounceRecipient | None:
    action = _header(block, "Action").lower()
    status_match = _STATUS.search(_header(block, "Status"))
    diagnostic = _typed_value(_header(block, "Diagnostic-Code"))
    if status_match is None:
        # Status is required (§2.3.4) but not always there; the reply usually carries it.
        status_match = _STATUS.search(diagnostic)
    status = status_match.group(0) if status_match else ""
    if action.startswith(_FAILED_ACTIONS):
        action, permanent = "failed", True
    elif action.startswith(_DELAYED_ACTIONS):
        action, permanent = "delayed", False
    elif action.startswith(_SUCCESS_ACTIONS):
        return None
    elif status.startswith("5"):  # no usable Action: the status class decides (RFC 3463 §3.1)
        action, permanent = "failed", True
    elif status.startswith("4"):
        action, permanent = "delayed", False
    else:
        return None
    address = _recipient_address(block)
    if not address:
        return None
    return BounceRecipient(
        address=address,
        permanent=permanent,
        action=action,
        status=status,
        diagnostic=diagnostic,
        remote_mta=_typed_value(_header(block, "Remote-MTA")),
        source="dsn",
    )


def _recipient_address(block: Message) -> str:
    """Original-Recipient when the sender's MTA passed it on (the address we sent to), else
    Final-Recipient, the one the reporting MTA tried (§2.3.1, §2.3.2) — flufl.bounce's order."""
    for name in ("Original-Recipient", "Final-Recipient"):
        value = _header(block, name)
        if not value:
            continue
        kind, separator, rest = value.partition(";")
        if not separator:
            kind, rest = "", value
        kind = kind.strip().lower()
        if kind not in ("", "rfc822", "utf-8"):  # x400 and others are no Internet address
            continue
        address = parseaddr(rest)[1] or rest.strip().strip("<>").strip()
        if "@" in address:
            return address
    return ""


def _typed_value(text: str) -> str:
    """`dns; mx.example.com` → `mx.example.com`: the value without its type (§2.1.2)."""
    kind, separator, rest = text.partition(";")
    if separator and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*", kind.strip()):
        return rest.strip()
    return text


# --- ARF feedback reports (RFC 5965) ---------------------------------------------------------
# https://www.rfc-editor.org/rfc/rfc5965#section-3


def _feedback_report(message: Message) -> tuple[str, tuple[str, ...]] | None:
    """(Feedback-Type, the addresses it is about) of a message/feedback-report part; None when
    the mail has none."""
    for part in message.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            fields = payload[0]
        else:
            fields = HeaderParser().parsestr(str(payload or "").strip() + "\n\n")
        feedback_type = _header(fields, "Feedback-Type").lower()[:40]
        values = [
            *_header_values(fields, "Original-Rcpt-To"),
            *_header_values(fields, "Removal-Recipient"),
        ]
        complainants = [a for a in _addresses(values) if valid_recipient(a)]
        if not complainants:  # else whom the complained-of message was sent to
            complainants = [a for a in sorted(_sent_to(message)) if valid_recipient(a)]
        return feedback_type or "abuse", tuple(complainants[:_MAX_CANDIDATES])
    return None


# --- Robust reading --------------------------------------------------------------------------


def _lf_for_bare_cr(raw: bytes) -> bytes:
    """A mail with CR-only line ends (old Mac software, some archives) read as the same mail
    with LF: the email package splits on CR, but the body's text and Sisimai-like formats do
    not. Only when its lines end so (no LF in its head); a byte for a byte."""
    head = raw[:4096]
    if b"\r" in head and b"\n" not in head:
        return raw[:_PARSE_BYTES].replace(b"\r", b"\n") + raw[_PARSE_BYTES:]
    return raw


def _without_mbox_line(raw: bytes) -> bytes:
    """A mail saved as an mbox begins with "From sender date": not a header."""
    if raw.startswith(b"From "):
        newline = raw.find(b"\n")
        return raw[newline + 1 :] if newline >= 0 else b""
    return raw


_BCHARS = re.compile(rb"[0-9A-Za-z'()+_,\-./:=?]{1,70}")
_BOUNDARY_LINE = re.compile(rb"^--([^\s]{1,200}?)(?:--)?\r?$", re.MULTILINE)


def _with_body_boundary(
    message: Message, raw: bytes, max_recipients: int, dropped: _Dropped
) -> Message:
    """When the declared boundary does not split the body (a report whose top-level header was
    rewritten), the boundary the body does use: the first `--x` line that comes back."""
    if message.get_content_maintype() != "multipart" or message.get_boundary() is None:
        return message
    declared = message.get_boundary().encode("ascii", "replace")
    head_end = re.search(rb"\r?\n\r?\n", raw[:_PARSE_BYTES])
    body = raw[head_end.end() : _PARSE_BYTES] if head_end else b""
    if b"--" + declared in body:
        return message
    counts: dict[bytes, int] = {}
    for match in _BOUNDARY_LINE.finditer(body):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    # RFC 2046 §5.1.1's characters only: nothing else is a boundary (nor reaches a header).
    candidates = [b for b, n in counts.items() if n >= 2 and _BCHARS.fullmatch(b)]
    if not candidates:
        return message
    boundary = candidates[0].decode("ascii")
    media = message.get_content_type()
    fixed = f'Content-Type: {media}; boundary="{boundary}"'.encode("ascii", "replace")
    header = raw[: head_end.start()] if head_end else raw
    header = re.sub(
        rb"(?im)^content-type:.*(?:\r?\n[ \t].*)*", lambda _match: fixed, header, count=1
    )
    repaired, again = _bounded_message(header + raw[head_end.start() :], max_recipients)
    dropped.blocks, dropped.parts = again.blocks, again.parts
    return repaired


# An address a recipient may be: a local part without spaces, quotes or brackets (dot-atom,
# UTF-8 allowed as RFC 6531 does) and a domain of labels with a dot (RFC 5321's Mailbox,
# without quoted local parts and address literals, which no failure report here names).
_VALID = re.compile(
    r"^[^\s@<>()\[\],;:\"\\.]+(?:\.[^\s@<>()\[\],;:\"\\.]+)*"
    r"@(?:[^\W_](?:[\w\-]*[^\W_])?\.)+[^\W\d_][\w\-]*$"
)


def valid_recipient(address: str) -> bool:
    """Whether a report's "recipient" can be one (issue 16, item 4): no JSON fragment, pipe
    command, mailbox file path or bare "@domain" ever becomes a failure."""
    if len(address) > 254 or not _VALID.match(address):
        return False
    local, _, domain = address.rpartition("@")
    return len(local) <= 64 and not domain.startswith("-")


def _own_addresses(message: Message) -> set[str]:
    """The report's own addresses and the returned message's sender: never a failed recipient
    of a text notice or a detector (Zoho's bounces name the sender; flufl.bounce took it)."""
    values = [
        *_header_values(message, "From"),
        *_header_values(message, "To"),
        *_header_values(message, "Return-Path"),
        *_header_values(message, "Reply-To"),
    ]
    for headers in _returned_headers(message):
        for name in ("From", "Return-Path", "Sender", "Reply-To"):
            values += _header_values(headers, name)
    own = {address.lower() for _name, address in getaddresses(values) if "@" in address}
    # A Message-ID's "local@domain" is no address either.
    for headers in [message, *_returned_headers(message)]:
        for value in _header_values(headers, "Message-ID"):
            own.update(m.lower() for m in re.findall(r"<([^<>\s]+@[^<>\s]+)>", value))
    return own


def _sent_to(message: Message) -> set[str]:
    """The returned message's To and Cc, when the report kept its header."""
    values: list[str] = []
    for headers in _returned_headers(message):
        values += [*_header_values(headers, "To"), *_header_values(headers, "Cc")]
    return {address.lower() for _name, address in getaddresses(values) if "@" in address}


def _dsn_in_text(message: Message) -> list[BounceRecipient]:
    """RFC 3464 fields written into a text part (formats.rfc3464_in_text)."""
    recipients = [r for b in formats.rfc3464_in_text(message) if (r := _status_recipient(b))]
    return [replace(r, source="dsn-in-text") for r in recipients]


def _notice_failures(message: Message, own: set[str]) -> list[BounceRecipient]:
    """The addresses a text notice names as failed (formats.notice): the last resort."""
    return [
        BounceRecipient(
            address=address,
            permanent=permanent,
            action="failed" if permanent else "delayed",
            status=status,
            diagnostic=diagnostic,
            source="notice",
        )
        for address, diagnostic, status, permanent in formats.notice(
            message, _sent_to(message), own
        )
    ]


def _returned_recipients(message: Message, own: set[str]) -> list[BounceRecipient]:
    """A delivery status notification without a recipient block (Postfix's "Delivery report
    unavailable") whose notice names no address: the returned message's To and Cc are the ones
    it failed for."""
    parts = [p for p in message.walk() if p.get_content_type() in _DELIVERY_STATUS]
    if not parts or any(_names_a_recipient(block) for p in parts for block in _status_blocks(p)):
        return []  # no report, or one that says for whom (a success, for one)
    notice = " ".join(formats.notice_parts(message))[:4096]
    permanent = not formats.says_delayed(notice + " " + _header(message, "Subject"))
    return [
        BounceRecipient(
            address=address,
            permanent=permanent,
            action="failed" if permanent else "delayed",
            source="returned-to",
        )
        for address in sorted(_sent_to(message) - own)
    ]


def _names_a_recipient(block: Message) -> bool:
    return bool(_header(block, "Final-Recipient") or _header(block, "Original-Recipient"))


def _with_diagnostic(message: Message, recipient: BounceRecipient) -> BounceRecipient:
    """A detector's recipient without the server's words gets them from the notice (so its
    reason and its Event can say why)."""
    if recipient.diagnostic:
        return recipient
    diagnostic = formats.diagnostic_for(message, recipient.address)
    return replace(recipient, diagnostic=diagnostic, reason="") if diagnostic else recipient


def _flufl_failures(message: Message) -> list[BounceRecipient]:
    _cut_bodies(message)
    temporary, permanent, detector = _run_detectors(message)
    recipients: dict[str, BounceRecipient] = {}
    for addresses, is_permanent in ((permanent, True), (temporary, False)):
        for raw_address in sorted(addresses):
            address = raw_address.decode("ascii", "replace")
            recipients.setdefault(
                address.lower(),
                BounceRecipient(
                    address=address,
                    permanent=is_permanent,
                    action="failed" if is_permanent else "delayed",
                    source=detector,
                ),
            )
    return list(recipients.values())


def _cut_bodies(message: Message) -> None:
    """Each body cut at _DETECTOR_TEXT: the detectors' regular expressions run over whole
    bodies, and the failure notice a detector reads is at the top of its part."""
    for part in message.walk():
        payload = part.get_payload()
        if isinstance(payload, str) and len(payload) > _DETECTOR_TEXT:
            part.set_payload(payload[:_DETECTOR_TEXT])


def _run_detectors(message: Message) -> tuple[Iterable[bytes], Iterable[bytes], str]:
    """flufl.bounce's all_failures(): its detectors in its order, the first that finds anything
    wins; but a detector that crashes is skipped instead of ending the scan."""
    if _DETECTORS is None:
        try:
            temporary, permanent = flufl.bounce.all_failures(message)
        except Exception:
            log.warning("flufl.bounce failed on a bounce", exc_info=True)
            return (), (), ""
        return temporary, permanent, "flufl.bounce"
    for detector in _DETECTORS:
        try:
            temporary, permanent = detector().process(message)
        except Exception as error:
            log.info("flufl.bounce %s skipped: %r", detector.__name__, error)
            continue
        if temporary or permanent:
            return temporary, permanent, detector.__name__
    return (), (), ""


# --- Auto-replies (RFC 3834) -------------------------------------------------------------------
# https://www.rfc-editor.org/rfc/rfc3834#section-5


def _is_strong_auto_reply(message: Message, subject: str) -> bool:
    """Signs only vacation responders give: they beat flufl.bounce's text heuristics.

    `Auto-Submitted: auto-replied` alone is not one: real bounces in flufl.bounce's corpus carry
    it (simple_39, simple_41, simple_45), so it only counts when nothing else is found.
    """
    if _header(message, "X-Autoreply").lower() not in ("", "no"):
        return True
    if message.get("X-Autorespond") is not None:
        return True
    if _header(message, "X-Autogenerated").lower() == "reply":
        return True
    for name in ("Precedence", "X-Precedence"):
        if _header(message, name).lower() == "auto_reply":
            return True
    auto_submitted = _header(message, "Auto-Submitted").lower()
    if auto_submitted.startswith("auto-replied") and "vacation" in auto_submitted:
        return True
    return bool(_AUTO_REPLY_SUBJECT.match(subject))


def _is_auto_reply(message: Message, subject: str) -> bool:
    auto_submitted = _header(message, "Auto-Submitted").lower()
    return auto_submitted.startswith("auto-replied") or _is_strong_auto_reply(message, subject)


# --- Finding the original message ---------------------------------------------------------------


def _original_message_id(message: Message) -> str:
    """The returned message's Message-ID; else In-Reply-To or the last References entry (an
    auto-reply's, RFC 3834 §3.1.5); else a Message-ID line quoted in the text of the report."""
    for headers in _returned_headers(message):
        found = _message_id(_header(headers, "Message-ID"))
        if found:
            return found
    found = _message_id(_header(message, "In-Reply-To"))
    if found:
        return found
    references = re.findall(r"<[^<>\s]+>", _header(message, "References"))
    if references:
        return references[-1]
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.get_content_type() in _RETURNED_HEADERS:
            continue
        body = part.get_payload(decode=True)
        if isinstance(body, bytes):
            quoted = _QUOTED_MESSAGE_ID.search(body)
            if quoted:
                return quoted.group(1).decode("ascii", "replace")
    return ""


def _returned_headers(message: Message) -> Iterator[Message]:
    """The header of each returned message (RFC 3462 §2, RFC 6533 §6), outermost first."""
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in _RETURNED_MESSAGE or content_type in _RETURNED_HEADERS:
            payload = part.get_payload()
            if isinstance(payload, list):
                if payload and isinstance(payload[0], Message):
                    yield payload[0]
            else:
                yield BytesHeaderParser().parsebytes(part.get_payload(decode=True) or b"")


def _message_id(value: str) -> str:
    found = re.search(r"<[^<>\s]+>", value)
    return found.group(0) if found else ""


def _delivery_addresses(message: Message) -> Iterator[str]:
    for name in _DELIVERY_HEADERS:
        yield from _header_values(message, name)
    # The envelope sender of the returned message, where the reporting MTA kept its Return-Path.
    for headers in _returned_headers(message):
        yield from _header_values(headers, "Return-Path")


def _addresses(values: Iterable[str]) -> tuple[str, ...]:
    """The first _MAX_CANDIDATES addresses in header values, lower-cased (a VERP token is
    lower-case), each once."""
    found: dict[str, None] = {}
    for value in values:
        if len(found) >= _MAX_CANDIDATES:
            break
        # One value at a time: a broken header cannot swallow the good ones after it.
        for _name, address in getaddresses([str(value)]):
            address = address.strip().strip("<>").lower()
            if "@" in address and not any(c.isspace() for c in address):
                found.setdefault(address)
    return tuple(found)[:_MAX_CANDIDATES]


# --- Header text --------------------------------------------------------------------------------


def _header(message: Message, name: str) -> str:
    """The first `name` header as one unfolded line of text ("" when absent)."""
    values = _header_values(message, name)
    return " ".join(values[0].split()) if values else ""


def _header_values(message: Message, name: str) -> list[str]:
    """Every `name` header, as text that is safe to store.

    compat32 keeps non-ASCII header bytes as surrogate escapes (and get() would turn them into
    U+FFFD); UTF-8 is the likely encoding (RFC 6532), anything else becomes U+FFFD.
    """
    wanted = name.lower()
    return [
        str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        for key, value in message.raw_items()
        if key.lower() == wanted
    ]


def _decoded(value: str) -> str:
    """An RFC 2047 encoded header as text; the raw text when its encoding is broken."""
    try:
        text = str(make_header(decode_header(value)))
    except Exception:  # a broken encoded word or an unknown charset
        text = value
    # A decoded word in a wrong charset can leave surrogates, which no database takes.
    return " ".join(text.split()).encode("utf-8", "replace").decode("utf-8")
