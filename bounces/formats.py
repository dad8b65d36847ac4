"""Bounces without a delivery-status part (issue 16, item 2): small detectors, tried after RFC
3464 and before flufl.bounce, in one place.

What the formats share (learnt from Sisimai's modules and corpus; our own code): a notice in
text ("There was an error delivering your mail to <a@b>", "The following addresses had
permanent fatal errors", "Could not be delivered to: <a@b>", a Japanese m-FILTER or au notice,
a V5 sendmail transcript "554 <a@b>... Host unknown", DragonFly's, OpenSMTPD's older "a@b: 550
…"), then the returned message. Two detectors read them:

- `rfc3464_in_text`: RFC 3464 fields written into a text part (Amazon WorkMail puts them in a
  quoted-printable text/plain part), read as if they were a delivery-status part.
- `notice`: the notice's addresses, each with the first SMTP reply after it. Only the notice is
  read (it ends where the returned message begins), only addresses in a line that is no
  header of the sender ("from …", "Return-Path", "Message-ID"), and when the returned
  message's To/Cc survive, only addresses it was sent to.

Every recipient they return is an address (`parse.valid_recipient`); the caller drops the
report's own addresses.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from email.message import Message

# A token that is an address (a whole token: parse.valid_recipient judges it further).
_ADDRESS_TOKEN = re.compile(r"^[^@\s]{1,64}@[^@\s.][^@\s]{0,252}\.[^@\s.]{2,63}$")
# Where the returned message (or its header) begins in a notice.
_RETURNED = re.compile(
    r"^[ \t>]*[-=*_ \t]*(?:"
    r"original message|returned message|unsent message|a copy of the (original )?message"
    r"|below (this line )?is a copy|message headers follow|the original message"
    r"( follows|'s headers| is attached)|original message follows|-+ ?original message|"
    r"content-type:\s*message/rfc822|the headers? of the original|headers of your message"
    r"|this is a copy of the (original|headers)|--- below this line"
    r"|(the )?headers? of the (source|original) (mail|message)|received:\s|return-path:\s"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
# Lines whose addresses are the sender's or the report's, never a failed recipient.
_NOT_RECIPIENT_LINE = re.compile(
    r"^\s*(?:from\b|return-path|sender|reply-to|message-id|in-reply-to|references"
    r"|envelope-from|\(envelope-from|received|x-[\w-]+:|date:|subject:|dkim"
    r"|for\s|by\s|id\s|with\s|list-[\w-]+:|delivered-to|mailto:)",
    re.IGNORECASE,
)
# A notice says the message did not (yet) arrive.
_FAILURE_WORDS = re.compile(
    r"undeliver|not be delivered|could not deliver|couldn't be delivered|delivery (has )?fail"
    r"|failed|failure|fatal error|error delivering|errors? (has )?(occurred|sending)"
    r"|an error (has )?occurred|delivery errors?|trouble delivering"
    r"|rejected|unknown user|user unknown|host unknown|unable to deliver|returned mail"
    r"|were not delivered|no such user|mailbox is full|delivery errors|could not be sent"
    r"|送信できません|配信できません|送信に失敗|エラー",
    re.IGNORECASE,
)
# A notice that only warns: the MTA is still trying.
_DELAY_WORDS = re.compile(
    r"delivery (status notification )?\(delay\)|has not yet been delivered|not been delivered yet"
    r"|will (continue to |keep )?(try|trying|retry)|will be retried|still trying"
    r"|warning: message( .*)? delayed|^\s*warning:|\bwarning: could not send"
    r"|delivery status notification: (delayed|warning)|delivery delayed",
    re.IGNORECASE,
)
# A server's reply: a code at the start (after ">>>"/"<<<" or "said:"), or an enhanced status.
_SMTP_REPLY = re.compile(
    r"^[\s>]*(?:<<<\s*)?(?:.{0,80}?\bsaid:\s*)?([245])\d\d(?:[ -]|$)", re.IGNORECASE
)
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_NOTICE_CHARS = 16 * 1024
_TOTAL_CHARS = 64 * 1024  # of every text part of one mail together
_LINE_CHARS = 1000  # of one line: an address is far shorter
# What splits text into the tokens an address may be.
_DELIMITERS = re.compile(r"[\s<>()\[\],;\"]+")
# Charsets that turn bytes into text that is not what the bytes say (or into lone surrogates).
_NOT_TEXT = frozenset({"utf-7", "utf_7", "unicode-escape", "unicode_escape", "raw-unicode-escape"})


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        codec = codecs.lookup(charset)
        if not codec._is_text_encoding or codec.name in _NOT_TEXT:
            raise LookupError(charset)
        text = payload.decode(codec.name, "replace")
    except (LookupError, UnicodeError):
        text = payload.decode("utf-8", "replace")
    # No lone surrogate reaches a database.
    return text.encode("utf-8", "replace").decode("utf-8")


def addresses_in(line: str) -> Iterator[tuple[str, int]]:
    """(address, where it ends) of each address-like token of a line, in linear time: the line
    is split on delimiters, never searched with a pattern that can backtrack."""
    if "@" not in line:
        return
    position = 0
    for token in _DELIMITERS.split(line):
        start = line.find(token, position)
        position = start + len(token)
        if "@" in token:
            candidate = token.strip(".:!?'`*")
            if _ADDRESS_TOKEN.match(candidate):
                yield candidate, position


def notice_parts(message: Message) -> list[str]:
    """The text of the parts that may hold the notice: text parts outside any returned message,
    in order (a non-multipart report is its own body), at most _TOTAL_CHARS in all."""
    texts: list[str] = []

    def walk(part: Message) -> None:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global", "text/rfc822-headers"):
            return
        if part.is_multipart():
            for inner in part.get_payload() or ():
                if isinstance(inner, Message):
                    walk(inner)
        elif (
            part.get_content_maintype() == "text" or content_type == "application/octet-stream"
        ) and sum(len(t) for t in texts) < _TOTAL_CHARS:
            texts.append(_text(part)[:_NOTICE_CHARS])

    walk(message)
    return texts


def _notice(text: str) -> tuple[str, str]:
    """The notice (the text before the returned message begins) and what follows it."""
    text = text[:_NOTICE_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line[:_LINE_CHARS] for line in text.split("\n"))
    found = _RETURNED.search(text)
    return (text[: found.start()], text[found.start() :]) if found else (text, "")


def _inline_header(rest: str) -> tuple[set[str], set[str]]:
    """The returned message's header quoted as text after the notice: (To and Cc, From and
    Return-Path and Sender), lower-case."""
    from email.parser import HeaderParser
    from email.utils import getaddresses

    lines = rest.split("\n")
    start = next((i for i, line in enumerate(lines) if re.match(r"[\w-]+:\s", line)), None)
    if start is None:
        return set(), set()
    header = HeaderParser().parsestr("\n".join(lines[start : start + 200]) + "\n\n")

    def addresses(*names: str) -> set[str]:
        values = [str(v) for name in names for v in header.get_all(name, [])]
        return {a.lower() for _n, a in getaddresses(values) if "@" in a}

    return addresses("To", "Cc"), addresses("From", "Return-Path", "Sender")


def notice(
    message: Message, sent_to: set[str], exclude: set[str]
) -> list[tuple[str, str, str, bool]]:
    """(address, diagnostic, status, permanent) of the addresses a text notice names as failed.

    `sent_to`: the returned message's To/Cc (lower-case), when it survived; `exclude`: the
    report's own and the sender's addresses."""
    found: dict[str, tuple[str, str, str, bool]] = {}
    subject = str(message.get("Subject", ""))
    for text in notice_parts(message):
        body, rest = _notice(text)
        if not (_FAILURE_WORDS.search(body) or _FAILURE_WORDS.search(subject)):
            continue
        # A header quoted as text after the notice: its sender is no recipient (unless it was
        # sent to itself). Its To is not a filter: a forwarded or aliased recipient fails under
        # another address than the one written in To.
        # The intake keeps only the message's own recipients (To, Cc and Bcc): a failure for a
        # Bcc recipient is named by no returned To or Cc, so they filter nothing here.
        inline_to, inline_from = _inline_header(rest) if not sent_to else (set(), set())
        skip = (exclude | inline_from) - sent_to - inline_to
        delay = bool(_DELAY_WORDS.search(body) or _DELAY_WORDS.search(subject))
        # A message that calls itself an automatic reply (RFC 3834) names a failure only with
        # the server's reply beside the address: words alone may be a responder's.
        replied = str(message.get("Auto-Submitted", "")).lower().startswith("auto-replied")
        lines = body.split("\n")
        for index, line in enumerate(lines):
            if _NOT_RECIPIENT_LINE.match(line):
                continue
            for address, end in addresses_in(line):
                key = address.lower()
                if key in skip or key in found or key.startswith("mailer-daemon@"):
                    continue
                diagnostic = _diagnostic(lines, index, end)
                status_match = _STATUS.search(diagnostic)
                status = status_match.group(0) if status_match else ""
                if replied and not has_reply(diagnostic):
                    continue
                permanent = not delay
                found[key] = (address, diagnostic, status, permanent)
    # Addresses the notice gives a server's reply for are the failed ones; any other address
    # beside them (a help desk, a list) is not.
    answered = [f for f in found.values() if has_reply(f[1])]
    return answered or list(found.values())


def says_delayed(text: str) -> bool:
    """Whether a notice says the MTA is still trying."""
    return bool(_DELAY_WORDS.search(text))


def has_reply(text: str) -> bool:
    """Whether `text` holds a server's reply: an enhanced status code, or a reply code where a
    reply begins (a phone number in a sentence is none)."""
    return bool(_STATUS.search(text) or _SMTP_REPLY.search(text))


def _diagnostic(lines: list[str], index: int, column: int) -> str:
    """The first line with an SMTP reply from the address on (its own line, then the next few),
    else the rest of the address's line."""
    rest = lines[index][column:].strip(" :>.-\t")
    for line in [rest, *lines[index + 1 : index + 6]]:
        if has_reply(line):
            return " ".join(line.split())[:500]
        if line is not rest and any(True for _ in addresses_in(line)):
            break  # the next address's own line
    return " ".join(rest.split())[:500]


def diagnostic_for(message: Message, address: str) -> str:
    """The server's reply a notice gives for `address` (a detector found the address but not
    why): the first reply line after it, else the notice's own words around it."""
    wanted = address.lower()
    for text in notice_parts(message):
        body, _rest = _notice(text)
        lines = body.split("\n")
        for index, line in enumerate(lines):
            at = line.lower().find(wanted)
            if at < 0 or _NOT_RECIPIENT_LINE.match(line):
                continue
            found = _diagnostic(lines, index, at + len(wanted))
            if found:
                return found
            # No reply beside it: the notice's sentence that says what went wrong.
            for other in lines:
                if _FAILURE_WORDS.search(other) and "@" not in other:
                    return " ".join(other.split())[:500]
    return ""


def rfc3464_in_text(message: Message) -> list[Message]:
    """RFC 3464 fields written in a text part: its blocks as header blocks (empty: none)."""
    from email.parser import HeaderParser

    blocks: list[Message] = []
    for text in notice_parts(message):
        if not re.search(r"(?im)^action:", text) or not re.search(
            r"(?im)^(final|original)-recipient:", text
        ):
            continue
        start = re.search(
            r"(?im)^(reporting-mta|arrival-date|final-recipient|original-recipient):", text
        )
        chunk = text[start.start() :] if start else text
        for block in re.split(r"\r?\n[ \t]*\r?\n", chunk.replace("\r\n", "\n")):
            if re.search(r"(?im)^(final|original)-recipient:", block):
                blocks.append(HeaderParser().parsestr(block.strip() + "\n"))
    return blocks
