"""The pieces of the explanation catalogue: an entry (what happened, what to do) and a rule that
recognises an SMTP reply. Kept apart from `smtp_settings.explain` so that a provider's package
(smtp_settings/providers/*) can bring its own entries and rules without importing the catalogue
that collects them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Explanation:
    key: str  # stable id stored on events
    title: str  # lazily translated: what happened, one short sentence
    # lazily translated: what to do; may use %(host)s %(port)s %(security)s %(login)s %(ips)s
    fix: str
    transient: bool  # True: worth retrying later


# -- replies -----------------------------------------------------------------------------------
_ENHANCED_AT_START = re.compile(r"^\s*#?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_ENHANCED_ANYWHERE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_CODE_PREFIX = re.compile(r"^\s*\d{3}[ -]", re.MULTILINE)


@dataclass(frozen=True)
class Reply:
    code: int
    status: str  # the enhanced status code, "5.7.8", or ""
    words: str  # the text on one line, lower-cased, for phrase matching
    stage: str

    @property
    def klass(self) -> str:
        return _klass(self.code)


def _klass(code: int) -> str:
    """The reply class, "2", "4" or "5"; "" for what is not an SMTP reply code."""
    return str(code)[0] if 200 <= code <= 599 else ""


def parse_reply(code: int, text: str, stage: str) -> Reply:
    # Callers may hand over the raw lines ("535-5.7.8 ...\n535 5.7.8 ..."): drop the codes.
    body = _CODE_PREFIX.sub("", text)
    klass = _klass(code)
    status = ""
    match = _ENHANCED_AT_START.match(body)
    if not (match and match[1] == klass):
        match = next((m for m in _ENHANCED_ANYWHERE.finditer(body) if m[1] == klass), None)
    if match:
        status = ".".join(str(int(part)) for part in match.groups())
    words = " ".join(body.split()).lower()
    return Reply(code=code, status=status, words=words, stage=stage)


@dataclass(frozen=True)
class Rule:
    """Constraints that must all hold (code, class, stage), then evidence (status or phrase).

    With neither `statuses` nor `phrases`, the constraints alone are enough. A status ending in
    "." matches by prefix ("4.7." is every 4.7.x).
    """

    key: str
    codes: frozenset[int] = frozenset()
    classes: str = "45"
    stages: frozenset[str] = frozenset()
    statuses: tuple[str, ...] = ()
    phrases: re.Pattern | None = None

    def matches(self, reply: Reply) -> bool:
        if self.codes and reply.code not in self.codes:
            return False
        if reply.klass not in self.classes or not reply.klass:
            return False
        if self.stages and reply.stage not in self.stages:
            return False
        if not (self.statuses or self.phrases):
            return True
        if any(_status_matches(reply.status, wanted) for wanted in self.statuses):
            return True
        return bool(self.phrases and self.phrases.search(reply.words))


def _status_matches(status: str, wanted: str) -> bool:
    if not status:
        return False
    return status.startswith(wanted) if wanted.endswith(".") else status == wanted


def phrase(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)
