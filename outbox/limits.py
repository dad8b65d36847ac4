"""Limits counted where every process sees them: the database (issue 11, item 4).

The platform relay sends with the platform's IPs and reputation: one abuser would get them
blacklisted and every customer's mail would then fail. So what goes through it is counted per
user and per company, an hour and a day; test e-mails, verification mails and connection tests
are counted per user; and no message may have more than MAX_RECIPIENTS_PER_MESSAGE recipients.

A limit counts in fixed windows (a clock minute, hour or UTC day) in a LimitCounter row. A slot
is taken by one conditional UPDATE ("count = count + n WHERE count + n <= limit"): the database
applies it to the row one transaction at a time (a row lock on PostgreSQL, the write lock on
SQLite), so two processes can never both take the last slot. Several limits are taken together
in one transaction: when one is full, the others are given back (rolled back).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _

from .models import LimitCounter

WINDOW_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}

RELAY_USER = "relay_user"
RELAY_COMPANY = "relay_company"
TEST_EMAILS = "test_emails"
VERIFICATION_MAILS = "verification_mails"
CONNECTION_TESTS = "connection_tests"
DOMAIN_CHECKS = "domain_checks"
TOO_MANY_RECIPIENTS = "too_many_recipients"


@dataclass(frozen=True)
class Limit:
    """At most `limit` in one `window` ("minute", "hour", "day") for `key`; `kind` names the
    refusal message."""

    kind: str
    key: str
    window: str
    limit: int

    @property
    def counter_key(self) -> str:
        return f"{self.key}:{self.window}"


class LimitReached(ValidationError):
    """A limit is full: nothing was taken. `message` explains it in the active language."""

    def __init__(self, limit: Limit, retry_at: datetime.datetime) -> None:
        self.limit = limit
        self.retry_at = retry_at
        super().__init__(_refusal(limit, retry_at), code=limit.kind)

    @property
    def explanation(self) -> str:
        return self.messages[0]


class TooManyRecipients(ValidationError):
    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            _(
                "This message has %(count)s recipients (To, CC, BCC and the card's BCC "
                "together); at most %(limit)s are allowed. Nothing was sent: split the "
                "recipients over several messages."
            )
            % {"count": count, "limit": settings.MAX_RECIPIENTS_PER_MESSAGE},
            code=TOO_MANY_RECIPIENTS,
        )


def _refusal(limit: Limit, retry_at: datetime.datetime) -> str:
    params = {"limit": limit.limit, "wait": timeuntil(retry_at)}
    texts = {
        (RELAY_USER, "hour"): _(
            "Nothing was sent: you have reached the platform relay's limit of %(limit)s "
            "recipients an hour for one user. Try again in %(wait)s, or send through your "
            "company's own mail server (the mail sender on your card)."
        ),
        (RELAY_USER, "day"): _(
            "Nothing was sent: you have reached the platform relay's limit of %(limit)s "
            "recipients a day for one user. Try again in %(wait)s, or send through your "
            "company's own mail server (the mail sender on your card)."
        ),
        (RELAY_COMPANY, "hour"): _(
            "Nothing was sent: your company has reached the platform relay's limit of "
            "%(limit)s recipients an hour. Try again in %(wait)s, or ask an administrator to "
            "set up the company's own mail server."
        ),
        (RELAY_COMPANY, "day"): _(
            "Nothing was sent: your company has reached the platform relay's limit of "
            "%(limit)s recipients a day. Try again in %(wait)s, or ask an administrator to "
            "set up the company's own mail server."
        ),
        (TEST_EMAILS, "hour"): _(
            "Nothing was sent: you have sent %(limit)s test e-mails this hour, the most "
            "allowed. Try again in %(wait)s."
        ),
        (VERIFICATION_MAILS, "hour"): _(
            "No new link was sent: %(limit)s verification links an hour are the most allowed. "
            "Look for the links already sent (also in the spam folder), or try again in "
            "%(wait)s."
        ),
        (VERIFICATION_MAILS, "day"): _(
            "No new link was sent: %(limit)s verification links a day are the most allowed. "
            "Look for the links already sent (also in the spam folder), or try again in "
            "%(wait)s."
        ),
        (CONNECTION_TESTS, "minute"): _(
            "You have tested the connection several times in a row: wait a minute and retry."
        ),
        (CONNECTION_TESTS, "hour"): _(
            "You have tested the connection %(limit)s times this hour, the most allowed. Try "
            "again in %(wait)s."
        ),
        (DOMAIN_CHECKS, "hour"): _(
            "Domains have been looked up %(limit)s times for you this hour, the most allowed. "
            "The last known result is shown; try again in %(wait)s."
        ),
    }
    return texts[(limit.kind, limit.window)] % params


def _window_start(now: datetime.datetime, window: str) -> datetime.datetime:
    seconds = WINDOW_SECONDS[window]
    return datetime.datetime.fromtimestamp(
        int(now.timestamp()) // seconds * seconds, tz=datetime.UTC
    )


def limits_take(limits: Iterable[Limit], amount: int = 1) -> None:
    """Take `amount` from every limit, or from none: raises LimitReached for the first full one."""
    limits_take_amounts([(limit, amount) for limit in limits])


def limits_take_amounts(takes: Iterable[tuple[Limit, int]]) -> None:
    """Take each (limit, amount), or none of them: raises LimitReached for the first full one.

    Limits are taken in a fixed order, so two transactions never wait for each other's rows
    in opposite orders (no deadlock on PostgreSQL). The counter row is inserted first (an
    insert-or-ignore is a write: on SQLite it waits for the write lock instead of failing to
    upgrade a read lock).
    """
    takes = sorted(takes, key=lambda take: take[0].counter_key)
    if not takes:  # an own server's bulk mail: no savepoint on the hot path
        return
    now = timezone.now()
    with transaction.atomic():
        for limit, amount in takes:
            start = _window_start(now, limit.window)
            retry_at = start + datetime.timedelta(seconds=WINDOW_SECONDS[limit.window])
            if amount > limit.limit:
                raise LimitReached(limit, retry_at)
            key = limit.counter_key
            LimitCounter.objects.bulk_create(
                [LimitCounter(key=key, window_start=start)], ignore_conflicts=True
            )
            taken = LimitCounter.objects.filter(
                key=key, window_start=start, count__lte=limit.limit - amount
            ).update(count=F("count") + amount)
            if not taken:
                raise LimitReached(limit, retry_at)


def limits_forget_old(*, now: datetime.datetime | None = None) -> int:
    """Delete counters of windows that ended more than a day ago (periodic, in the sweep)."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(seconds=2 * WINDOW_SECONDS["day"])
    deleted, _by_model = LimitCounter.objects.filter(window_start__lt=cutoff).delete()
    return deleted


# -- the limits of each kind of mail -------------------------------------------------------------
def relay_limits(*, user_id: int) -> list[Limit]:
    """Recipients through the platform relay: per user and per company (one company per
    installation, so "per company" is everyone), an hour and a day."""
    return [
        Limit(RELAY_USER, f"relay:user:{user_id}", "hour", settings.RELAY_LIMIT_USER_HOUR),
        Limit(RELAY_USER, f"relay:user:{user_id}", "day", settings.RELAY_LIMIT_USER_DAY),
        Limit(RELAY_COMPANY, "relay:company", "hour", settings.RELAY_LIMIT_COMPANY_HOUR),
        Limit(RELAY_COMPANY, "relay:company", "day", settings.RELAY_LIMIT_COMPANY_DAY),
    ]


def limits_of_test_emails(*, user_id: int) -> list[Limit]:
    return [Limit(TEST_EMAILS, f"test-email:user:{user_id}", "hour", settings.TEST_EMAILS_PER_HOUR)]


def verification_limits(*, user_id: int) -> list[Limit]:
    key = f"verification:user:{user_id}"
    return [
        Limit(VERIFICATION_MAILS, key, "hour", settings.EMAIL_VERIFICATION_MAILS_PER_HOUR),
        Limit(VERIFICATION_MAILS, key, "day", settings.EMAIL_VERIFICATION_MAILS_PER_DAY),
    ]


def connection_test_limits(*, user_id: int) -> list[Limit]:
    key = f"connection-test:user:{user_id}"
    return [
        Limit(CONNECTION_TESTS, key, "minute", settings.CONNECTION_TESTS_PER_MINUTE),
        Limit(CONNECTION_TESTS, key, "hour", settings.CONNECTION_TESTS_PER_HOUR),
    ]


def domain_check_limits(*, user_id: int) -> list[Limit]:
    """Fresh DNS lookups of the domain check on a user's behalf (the card, "Check again")."""
    key = f"domain-check:user:{user_id}"
    return [Limit(DOMAIN_CHECKS, key, "hour", settings.DOMAIN_CHECKS_PER_HOUR)]


def recipients_check(count: int) -> None:
    """Raises TooManyRecipients above MAX_RECIPIENTS_PER_MESSAGE."""
    if count > settings.MAX_RECIPIENTS_PER_MESSAGE:
        raise TooManyRecipients(count)
