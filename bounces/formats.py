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

import re
from collections.abc import Callable
from email.message import Message

# An address in running text, with or without angle brackets.
_ADDRESS = re.compile(
    r"(?<![\w.+\-=/@])<?([A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,})>?"
)
# Where the returned message (or its header) begins in a notice.
_RETURNED = re.compile(
    r"^\s*(?:[-=*_ ]*\s*)(?:"
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
    r"|will (continue to )?(try|retry)|still trying|warning: message .* delayed"
    r"|delivery status notification: (delayed|warning)|delivery delayed",
    re.IGNORECASE,
)
_SMTP_REPLY = re.compile(r"(?<![\d.])([245])\d\d(?:[ -]|$)")
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_NOTICE_CHARS = 16 * 1024


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def notice_parts(message: Message) -> list[str]:
    """The text of the parts that may hold the notice: text parts outside any returned message,
    in order (a non-multipart report is its own body)."""
    texts: list[str] = []

    def walk(part: Message) -> None:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global", "text/rfc822-headers"):
            return
        if part.is_multipart():
            for inner in part.get_payload() or ():
                if isinstance(inner, Message):
                    walk(inner)
        elif part.get_content_maintype() == "text" or content_type == "application/octet-stream":
            texts.append(_text(part))

    walk(message)
    return texts


def _notice(text: str) -> tuple[str, str]:
    """The notice (the text before the returned message begins) and what follows it."""
    text = text[:_NOTICE_CHARS].replace("\r\n", "\n").replace("\r", "\n")
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
        inline_to, inline_from = _inline_header(rest) if not sent_to else (set(), set())
        wanted = sent_to
        skip = (exclude | inline_from) - sent_to - inline_to
        delay = bool(_DELAY_WORDS.search(body) or _DELAY_WORDS.search(subject))
        # A message that calls itself an automatic reply (RFC 3834) names a failure only with
        # the server's reply beside the address: words alone may be a responder's.
        replied = str(message.get("Auto-Submitted", "")).lower().startswith("auto-replied")
        lines = body.split("\n")
        for index, line in enumerate(lines):
            if _NOT_RECIPIENT_LINE.match(line):
                continue
            for match in _ADDRESS.finditer(line):
                address = match.group(1).strip(".")
                key = address.lower()
                if key in skip or key in found or key.startswith("mailer-daemon@"):
                    continue
                if wanted and key not in wanted:
                    continue
                diagnostic = _diagnostic(lines, index, match.end())
                status_match = _STATUS.search(diagnostic)
                status = status_match.group(0) if status_match else ""
                if replied and not (status or _SMTP_REPLY.search(diagnostic)):
                    continue
                permanent = not delay
                found[key] = (address, diagnostic, status, permanent)
    # Addresses the notice gives a server's reply for are the failed ones; any other address
    # beside them (a help desk, a list) is not.
    answered = [f for f in found.values() if f[2] or _SMTP_REPLY.search(f[1])]
    return answered or list(found.values())


def _diagnostic(lines: list[str], index: int, column: int) -> str:
    """The first line with an SMTP reply from the address on (its own line, then the next few),
    else the rest of the address's line."""
    rest = lines[index][column:].strip(" :>.-\t")
    for line in [rest, *lines[index + 1 : index + 6]]:
        if _SMTP_REPLY.search(line) or _STATUS.search(line):
            return " ".join(line.split())[:500]
        if _ADDRESS.search(line) and line is not rest:
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
                if _FAILURE_WORDS.search(other) and not _ADDRESS.search(other):
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


DETECTORS: tuple[Callable, ...] = (rfc3464_in_text, notice)
