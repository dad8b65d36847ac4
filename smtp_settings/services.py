"""Writes: sender profiles, the global sender, the mail sending user, the company, key rotation."""

from __future__ import annotations

import logging

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.models import Company, User
from outbox.limits import (
    LimitReached,
    connection_test_limits,
    domain_check_limits,
    limits_take,
)

from . import crypto
from .domaincheck import DomainError, DomainVerdict, cached_verdict, check_domain, domain_of
from .models import DomainCheck, SenderMode, SenderProfile, SystemSettings
from .resolve import SenderConfig, Source, TransportKind
from .selectors import (
    domain_check_stored,
    global_server_get,
    system_settings_get,
    users_waiting_for_password,
)

logger = logging.getLogger(__name__)


class KEEP:
    """Default of an optional argument whose None has a meaning: leave the stored value."""


@sensitive_variables()  # all locals, outermost: also the atomic wrapper's kwargs
@transaction.atomic
def profile_update(
    *,
    user: User | None,
    mode: str,
    host: str | None = None,
    port: int | None = None,
    security: str | None = None,
    login: str | None = None,
    password: str = "",
    clear_password: bool = False,
    rate_limit: int | type[KEEP] | None = KEEP,
    password_server: tuple[str, int, str] | None = None,
    unencrypted_ok: bool | None = None,
) -> SenderProfile:
    """Write a user's profile (or, with user=None, the global one). None leaves a field as is.

    A blank password keeps the stored one; `clear_password` removes it. A new password is
    bound to `password_server` (host, port, security), the server it was entered for, or the
    profile's own server: it is never sent anywhere else (issue 11, item 5). `unencrypted_ok`
    records the confirmation that it may travel unencrypted to that server. `rate_limit`
    (messages a minute, None for none) is left as is unless given.
    When the profile is the one login-only users inherit (S6.2) and its server changes, those
    whose password was entered for the old server get an Event: it waits for them.
    """
    inherited_before = _inherited_server_if_base(user)
    if user is None:
        profile = SenderProfile.objects.select_for_update().filter(user__isnull=True).first()
    else:
        profile = SenderProfile.objects.select_for_update().filter(user=user).first()
    profile = profile or SenderProfile(user=user)
    profile.mode = mode
    if host is not None:
        profile.host, profile.port = host, port
    if security is not None:
        profile.security = security
    if login is not None:
        profile.login = login
    if rate_limit is not KEEP:
        profile.rate_limit = rate_limit
    if clear_password:
        profile.password_encrypted = ""
        profile.password_host, profile.password_port, profile.password_security = "", None, ""
        profile.password_unencrypted_ok = False
    if password:
        bound = password_server or (profile.host, profile.port, profile.security)
        if not bound[0]:
            raise ValueError("a password needs the server it was entered for")
        profile.password_encrypted = crypto.encrypt(password)
        profile.password_host, profile.password_port, profile.password_security = bound
    if unencrypted_ok is not None:
        profile.password_unencrypted_ok = unencrypted_ok
    profile.full_clean(exclude=["user"])
    profile.save()
    if inherited_before is not _NOT_BASE:
        inherited_server_changed(before=inherited_before)
    logger.info(
        "sender profile saved: owner=%s mode=%s server=%s password_set=%s",
        user.code if user else "global",
        profile.mode,
        profile.server or "-",
        profile.has_password,
    )
    return profile


@transaction.atomic
def company_update(*, name: str, slug: str) -> Company:
    company = Company.objects.select_for_update().order_by("pk").first() or Company()
    company.name, company.slug = name, slug
    company.full_clean()
    company.save()
    logger.info("company saved: slug=%s", company.slug)
    return company


@transaction.atomic
def mail_sending_user_set(*, user: User | None) -> SystemSettings:
    system, _ = SystemSettings.objects.select_for_update().get_or_create(pk=1)
    before = global_server_get()
    system.mail_sending_user = user
    system.save()
    logger.info("mail sending user: %s", user.code if user else "-")
    inherited_server_changed(before=before)
    return system


_NOT_BASE = object()  # the profile written is not the one login-only users inherit


def _inherited_server_if_base(user: User | None) -> tuple[str, int, str] | object | None:
    """The inherited server now, if the profile about to change is the one it comes from."""
    system = system_settings_get()
    is_base = (
        user is None
        if system.mail_sending_user_id is None
        else (user is not None and user.pk == system.mail_sending_user_id)
    )
    return global_server_get() if is_base else _NOT_BASE


def inherited_server_changed(*, before: tuple[str, int, str] | None) -> int:
    """After a change that may move the inherited server (S6.2): an Event for each login-only
    user whose password was entered for the server they used until now. Their password is not
    sent to the new server (the transport refuses it); it waits for them to enter it again.
    Returns how many users were told."""
    from outbox.models import Event, EventKind

    after = global_server_get()
    if after == before or after is None:  # no server at all: the card says so (S6.2)
        return 0
    waiting = users_waiting_for_password(server=after)
    if before is not None:
        host, port, security = before
        waiting = waiting.filter(password_host=host, password_port=port, password_security=security)
    params = {"host": after[0], "port": after[1]}
    told = 0
    for profile in waiting:
        Event.objects.create(
            user=profile.user,
            kind=EventKind.PASSWORD_REENTRY,
            explanation="password_reentry",
            params=params,
        )
        told += 1
    if told:
        logger.info("inherited server changed: %s users must enter their password again", told)
    return told


def encrypted_fields() -> list[tuple[type, str]]:
    """Every (model, field name) holding ciphertext: fields named `*_encrypted` (house style)."""
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if getattr(field, "name", "").endswith("_encrypted") and field.concrete
    ]


def secrets_rotate() -> dict[str, int]:
    """Re-encrypt every stored secret under the first key of FIELD_ENCRYPTION_KEYS."""
    counts: dict[str, int] = {}
    for model, name in encrypted_fields():
        label = f"{model._meta.label}.{name}"
        counts[label] = 0
        with transaction.atomic():
            rows = model.objects.select_for_update().exclude(**{name: ""}).only("pk", name)
            for row in rows:
                setattr(row, name, crypto.rotate(getattr(row, name)))
                row.save(update_fields=[name])
                counts[label] += 1
    return counts


def connection_test_refusal(*, user: User) -> str | None:
    """Count one connection test for `user`: None, or (over CONNECTION_TESTS_PER_MINUTE or
    CONNECTION_TESTS_PER_HOUR) the refusal, explained in the active language.

    Counted in the database (outbox.limits), where every web process sees the same count.
    """
    try:
        limits_take(connection_test_limits(user_id=user.pk))
    except LimitReached as refused:
        return refused.message
    return None


# "Check again" looks the domain up afresh at most this often (seconds); in between, the
# stored verdict is the answer: a button pressed in a loop costs no DNS.
DOMAIN_RECHECK_INTERVAL = 60


def domain_check_refresh(
    *, address: str, force: bool = False, user: User | None = None
) -> DomainVerdict | None:
    """The verdict of an address's domain: the stored one while it is fresh
    (DOMAIN_CHECK_CACHE_SECONDS; "Check again", `force`, after a minute), else the cached one,
    else looked up and stored. A lookup on behalf of `user` counts against their
    DOMAIN_CHECKS_PER_HOUR (refused: DomainCheckRefused, with the message). A DNS failure keeps
    the stored verdict (the failure is returned only when there is none, and remembered for a
    minute). None: not a domain, or no sending IPs to check for."""
    if not settings.PLATFORM_SENDING_IPS:
        return None
    try:
        domain = domain_of(address)
    except DomainError:
        return None
    stored = domain_check_stored(domain)
    if stored:
        age = (timezone.now() - stored[1]).total_seconds()
        if age < (DOMAIN_RECHECK_INTERVAL if force else settings.DOMAIN_CHECK_CACHE_SECONDS):
            return stored[0]
    cached = cached_verdict(domain)
    if cached is not None and (not force or cached.dns_failed or stored is None):
        verdict = cached
    else:
        if user is not None:
            try:
                limits_take(domain_check_limits(user_id=user.pk))
            except LimitReached as refused:
                raise DomainCheckRefused(refused.message, stored[0] if stored else None) from None
        verdict = check_domain(domain, use_cache=False)
    if verdict.dns_failed:
        return stored[0] if stored else verdict
    domain_check_save(verdict=verdict)
    return verdict


class DomainCheckRefused(Exception):
    """Too many fresh domain checks for one user; `verdict` is the stored one, if any."""

    def __init__(self, message: str, verdict: DomainVerdict | None) -> None:
        super().__init__(message)
        self.message, self.verdict = message, verdict


def domain_check_save(*, verdict: DomainVerdict) -> None:
    """Store a verdict for its domain (what Default mode goes by); a DNS failure is not one."""
    if verdict.dns_failed:
        return
    DomainCheck.objects.update_or_create(
        domain=verdict.domain, defaults={"verdict": verdict.as_json(), "checked_at": timezone.now()}
    )


def profile_test_passed(*, user: User, config: SenderConfig) -> bool:
    """A connection test of `user`'s saved sender passed with `config`: when that is their own
    SMTP server as the profile holds it now (not changed meanwhile), it counts as tested, and
    mass mailing through it unlocks (issue 14, item 3). True when recorded."""
    if config.transport != TransportKind.SMTP or config.source.get("mode") != Source.USER:
        return False
    with transaction.atomic():
        profile = SenderProfile.objects.select_for_update().filter(user=user).first()
        if profile is None or profile.mode != SenderMode.SMTP:
            return False
        effective = (config.host, config.port, config.security, config.login)
        own_server = (profile.host, profile.port, profile.security)
        if (profile.host and own_server != effective[:3]) or profile.login != config.login:
            return False  # saved differently since the test began
        profile.mark_tested(timezone.now())
        profile.save(update_fields=SenderProfile.TESTED_FIELDS)
    return True
