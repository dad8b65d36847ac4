"""Why a recipient failed, in a word the user's catalogue explains (issue 16, item 1).

From the enhanced status code (RFC 3463) and the receiving server's words, as Sisimai's reason
classes do (its corpus is the yardstick: tests/bounces/test_corpus.py prints how often we
agree); our own rules, fewer classes: what a user can act on differs less than what an MTA can
say. The first rule that matches wins; words beat a generic status (many servers answer 5.0.0
or 5.5.0 and say the real reason in words).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The classes, each with the catalogue key its Event explains it with.
REASONS = {
    "user_unknown": "recipient_unknown",
    "mailbox_full": "bounce_mailbox_full",
    "host_unknown": "bounce_host_unknown",
    "expired": "bounce_expired",
    "message_too_big": "message_too_large",
    "spam": "bounce_spam",
    "blocked": "bounce_blocked",
    "suspended": "bounce_suspended",
    "has_moved": "bounce_has_moved",
    "network": "bounce_network",
    "system": "bounce_system",
    "rejected": "bounced",
}


@dataclass(frozen=True)
class _Rule:
    reason: str
    statuses: tuple[str, ...] = ()  # exact ("5.1.1") or prefix ending in "." ("5.2.")
    words: re.Pattern | None = None


def _w(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


# Words first (they name the reason whatever the status), then statuses.
_WORD_RULES = (
    _Rule(
        "mailbox_full",
        words=_w(
            r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (the |his |her )?(storage|"
            r"quota)|mailbox size limit|insufficient (disk )?space|not enough (storage|space)"
            r"|user.s (disk )?quota|box space not enough|mailfolder is full|full mailbox"
            r"|メールボックスが一杯"
        ),
    ),
    _Rule(
        "message_too_big",
        words=_w(
            r"message (size )?(is )?too (big|large)|size exceeds|exceeds (the )?(maximum|size)"
            r"|message (length|size) exceeds|too large|mail size limit"
        ),
    ),
    # A block list names "spam" in its name (zen.spamhaus.org): the sender is blocked.
    _Rule(
        "blocked",
        words=_w(r"spamhaus|spamcop|blocked using|listed (on|in|at)|block ?list|blacklist|dnsbl"),
    ),
    _Rule(
        "spam",
        words=_w(
            r"spam|junk mail|bulk mail|virus|malware|infected|content (rejected|filter)"
            r"|message content|unsolicited"
        ),
    ),
    _Rule(
        "host_unknown",
        words=_w(
            r"host (or domain name )?(not found|unknown)|unknown host|domain (does not|doesn.t) "
            r"exist|name service error|no mx|nxdomain|unrouteable|unroutable|domain not found"
            r"|host name lookup failure|no such domain|does not accept mail|null mx"
            r"|domain .* (is not|isn.t) (valid|in use)"
        ),
    ),
    _Rule(
        "has_moved",
        words=_w(r"has moved|user moved|address (has )?changed|no longer (at|with) this"),
    ),
    _Rule(
        "suspended",
        words=_w(
            r"suspended|disabled|inactive|deactivated|account (is )?(locked|expired|closed)"
            r"|not active|on hold|blocked account|mailbox (is )?(disabled|unavailable|inactive)"
        ),
    ),
    _Rule(
        "user_unknown",
        words=_w(
            r"user unknown|unknown user|no such (user|mailbox|recipient|address)|does not exist"
            r"|doesn.t exist|not (a )?(valid|known) (user|recipient|mailbox)|invalid (recipient|"
            r"mailbox|address)|recipient (address )?rejected|mailbox not found|unknown "
            r"(recipient|address|local.part|mailbox)|user not found|address rejected"
            r"|recipientnotfound|no mailbox here|not listed in|undeliverable address"
        ),
    ),
    _Rule(
        "expired",
        words=_w(
            r"time(d)? ?out|expired|could not be delivered for \d+|cannot send message for"
            r"|delivery time expired|too long in queue|retry time|gave up|giving up"
        ),
    ),
    _Rule(
        "blocked",
        words=_w(
            r"blocked|blacklist|block ?list|denylist|reputation|rbl|dnsbl|spamhaus|not allowed"
            r"|access denied|relay(ing)? (denied|not permitted|access denied)|ptr|reverse dns"
            r"|spf|dkim|dmarc|unauthenticated|authentication|policy|rejected for policy"
            r"|refused|tls required|starttls"
        ),
    ),
    _Rule(
        "network",
        words=_w(
            r"connection (refused|reset|timed out|lost)|network (is )?unreachable|too many "
            r"connections|rate limit|try again later|temporarily"
        ),
    ),
)
_STATUS_RULES = (
    _Rule("user_unknown", statuses=("5.1.1", "5.1.0", "5.1.3", "4.1.1")),
    _Rule("has_moved", statuses=("5.1.6",)),
    _Rule("host_unknown", statuses=("5.1.2", "5.4.4", "4.4.4", "5.1.10")),
    _Rule("mailbox_full", statuses=("5.2.2", "4.2.2", "5.2.0")),
    _Rule("message_too_big", statuses=("5.3.4", "5.2.3")),
    _Rule("suspended", statuses=("5.2.1", "4.2.1")),
    _Rule("expired", statuses=("4.4.7", "5.4.7", "4.4.1", "4.4.2")),
    _Rule("spam", statuses=("5.7.28", "5.7.51")),
    _Rule("blocked", statuses=("5.7.", "4.7.", "5.5.0")),
    _Rule("network", statuses=("4.4.", "5.4.")),
    _Rule("system", statuses=("5.3.", "4.3.", "5.0.0", "4.0.0", "5.2.")),
)


def _status_matches(status: str, wanted: str) -> bool:
    return status.startswith(wanted) if wanted.endswith(".") else status == wanted


def classify(*, status: str, diagnostic: str, permanent: bool) -> str:
    """One of REASONS for a failed (or delayed) recipient."""
    words = " ".join(diagnostic.split())[:2000]
    if words:
        for rule in _WORD_RULES:
            if rule.words.search(words):
                return rule.reason
    for rule in _STATUS_RULES:
        if any(_status_matches(status, wanted) for wanted in rule.statuses):
            return rule.reason
    return "rejected" if permanent else "expired"


def explanation_key(reason: str) -> str:
    return REASONS.get(reason, "bounced")
