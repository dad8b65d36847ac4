"""The bytes of an ordinary message, written directly (issue 13, item 6).

Python's `email` package parses every header it is given into a tree and folds it again when it
writes, and copies every body line through its generator: 3–4 ms of CPU for a one-page invoice
mail, more than the rest of its sending together. The messages the product sends are simple and
always the same shape (ASCII addresses, a text and an HTML body, a few files), so this module
writes that shape straight into CRLF bytes with the C encoders (binascii, base64):

    multipart/mixed                    (only with attachments)
      multipart/alternative            (only with an HTML body)
        text/plain; utf-8, quoted-printable
        text/html;  utf-8, quoted-printable
      <type>; base64, attachment; filename
    or the same without the containers that are not needed.

`write` returns None for anything outside that shape (an address with a quoted local part or a
non-ASCII domain, a value with a line break, a control character or an RFC 2047 encoded word in
it (FORBIDDEN; a no-break space or an emoji is text and is encoded), a type
that is not a plain token, a parameter too long for one line): build_message (the `email`
package, with its checks against header injection) writes those. tests/outbox/test_mimewrite.py
checks that both writers give the same message for every shape, and that no value can add a
header line.
"""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass
from email.header import Header
from email.utils import encode_rfc2231, formataddr

from smtp_settings.transports import DOT_ATOM_ADDRESS

CRLF = b"\r\n"
_TOKEN = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+\Z")
# Printable ASCII only: written as is (folded at spaces).
_PRINTABLE = re.compile(r"[ -~]*\Z")
# What may never be in a header value: every line break of str.splitlines() (CR, LF, VT, FF,
# FS, GS, RS, NEL, U+2028, U+2029) and the other C0 controls and DEL, TAB aside. Anything else
# (a no-break space in "Sp. z o.o.", a soft hyphen, a direction mark, an emoji) is text: it is
# written as an RFC 2047 encoded word.
FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
MAX_LINE = 998
FOLD_AT = 78


@dataclass(frozen=True)
class Part:
    """A file to attach: its bytes, its type ("application/pdf") and its name."""

    content: bytes
    content_type: str
    filename: str


class Written(bytes):
    """What write() returns: the message, every line end CRLF. `dot_lines`: whether any of its
    lines begins with "." (SMTP doubles such dots; only a text part's lines can: header lines
    begin with a name or a blank, boundary lines with "--", base64 has no ".")."""

    dot_lines: bool = True


def write(
    *,
    headers: list[tuple[str, str]],
    text: str,
    html: str = "",
    attachments: list[Part] | tuple[Part, ...] = (),
) -> Written | None:
    """The whole message as sent (CRLF line ends), or None when it is not of the plain shape.

    `headers` are (name, value) in order: values of From, To, Cc, Reply-To are addresses
    ("Name <a@b>" for From only); others are unstructured text (Subject) or fixed ASCII.
    """
    out: list[bytes] = []
    for name, value in headers:
        line = _header(name, value)
        if line is None:
            return None
        out.append(line)
    body_parts = [_text_part("plain", text)]
    if html:
        body_parts.append(_text_part("html", html))
    files = []
    for attachment in attachments:
        part = _file_part(attachment)
        if part is None:
            return None
        files.append(part)
    out.append(b"MIME-Version: 1.0\r\n")
    body = body_parts[0] if len(body_parts) == 1 else _multipart("alternative", body_parts)
    whole = body if not files else _multipart("mixed", [body, *files])
    written = Written(b"".join(out) + whole)
    written.dot_lines = any(b"\n." in part for part in body_parts)
    return written


def _boundary() -> str:
    # The email package's shape; "=" never starts a line of quoted-printable or base64 text.
    return f"==============={secrets.randbelow(10**19):019d}=="


def _multipart(subtype: str, parts: list[bytes]) -> bytes:
    boundary = _boundary()
    marker = f"--{boundary}\r\n".encode()
    head = f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"\r\n\r\n'.encode()
    inner = b"".join(marker + part + CRLF for part in parts)
    return head + inner + f"--{boundary}--\r\n".encode()


def _text_part(subtype: str, text: str) -> bytes:
    # One line end for every kind the text may have, then quoted-printable of its UTF-8 (lines
    # of at most 76, trailing blanks encoded), then CRLF.
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    if not data.endswith(b"\n"):
        data += b"\n"
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode() + encoded.replace(b"\n", CRLF)


def _file_part(attachment: Part) -> bytes | None:
    if not _TOKEN.match(attachment.content_type):
        return None
    name = attachment.filename
    if FORBIDDEN.search(name) or "=?" in name:
        return None  # the email package decodes an encoded word in a name: its checks decide
    if _PRINTABLE.match(name) and '"' not in name and "\\" not in name:
        parameter = f'filename="{name}"'
    else:
        parameter = f"filename*={encode_rfc2231(name, 'utf-8')}"
    disposition = f"Content-Disposition: attachment; {parameter}"
    if len(disposition) > FOLD_AT:
        disposition = f"Content-Disposition: attachment;\r\n {parameter}"
    if len(parameter) > MAX_LINE - 2:
        return None  # the email package splits it into RFC 2231 continuations
    encoded = _base64_lines(attachment.content)
    return (
        f"Content-Type: {attachment.content_type}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"{disposition}\r\n\r\n"
    ).encode() + encoded


def _base64_lines(content: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending CRLF (RFC 2045 §6.8), as
    base64.encodebytes writes them (with LF), at half its CPU: one encoding of the whole
    content, then the lines cut from it, instead of one encoder call for every 57 bytes."""
    if not content:
        return b""
    encoded = binascii.b2a_base64(content, newline=False)
    lines = [encoded[start : start + 76] for start in range(0, len(encoded), 76)]
    lines.append(b"")
    return CRLF.join(lines)


def _header(name: str, value: str) -> bytes | None:
    if name in ("To", "Cc", "Reply-To"):
        addresses = [address.strip() for address in value.split(",")]
        if not all(DOT_ATOM_ADDRESS.match(address) for address in addresses):
            return None
        return _fold(name, ", ".join(addresses), separator=", ")
    if name == "From":
        display, address = value
        if not DOT_ATOM_ADDRESS.match(address) or FORBIDDEN.search(display) or "=?" in display:
            return None
        # Quoted (with its quotes and backslashes escaped) when it has specials; an encoded
        # word when it is not ASCII.
        written = formataddr((display, address), charset="utf-8")
        return _line(name, written)
    # Unstructured text (Subject) and our own ASCII values (Date, Message-ID, List-*).
    if FORBIDDEN.search(value) or "=?" in value:
        return None  # a line break or control character, or an encoded word a reader decodes
    if _PRINTABLE.match(value):
        return _fold(name, value, separator=" ")
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


def _line(name: str, value: str) -> bytes | None:
    line = f"{name}: {value}"
    if len(line) > MAX_LINE or not line.isascii():
        return None
    return line.encode("ascii") + CRLF


def _fold(name: str, value: str, *, separator: str) -> bytes | None:
    """`Name: value`, folded after `separator` so lines stay within 78 characters where the
    value allows (a word longer than that keeps its own line, up to 998)."""
    line = f"{name}: {value}"
    if len(line) <= FOLD_AT:
        return line.encode("ascii") + CRLF
    words = value.split(separator)
    pieces = [word + separator.rstrip() for word in words[:-1]] + words[-1:]
    # The first piece stays on the name's line: a value never starts on a continuation line.
    lines, current = [], f"{name}: {pieces[0]}"
    for piece in pieces[1:]:
        if len(current) + 1 + len(piece) > FOLD_AT:
            lines.append(current)
            current = f" {piece}"
        else:
            current = f"{current} {piece}"
    lines.append(current)
    if any(len(line) > MAX_LINE or not line.strip() for line in lines):
        return None
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
