"""Reads: profiles, system settings, and the inputs `resolve_sender` needs for a user."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db.models import QuerySet

from accounts.models import Company, User

from . import providers
from .domaincheck import DomainError, DomainVerdict, domain_of
from .models import DomainCheck, OAuthConnection, SenderMode, SenderProfile, SystemSettings
from .resolve import (
    CardData,
    PlatformData,
    ProfileData,
    SenderConfig,
    SenderInputs,
    resolve_sender,
)


def company_get() -> Company | None:
    return Company.objects.order_by("pk").first()


def system_settings_get() -> SystemSettings:
    """The settings row, or an unsaved default one (reading never writes)."""
    return SystemSettings.objects.select_related("mail_sending_user").filter(pk=1).first() or (
        SystemSettings(pk=1)
    )


def global_profile_get() -> SenderProfile:
    return SenderProfile.objects.filter(user__isnull=True).first() or SenderProfile()


def user_profile_get(*, user: User) -> SenderProfile:
    return SenderProfile.objects.filter(user=user).first() or SenderProfile(user=user)


def profile_data(profile: SenderProfile) -> ProfileData:
    secret_server = profile.password_server
    provider = providers.for_mode(profile.mode)
    connection = None
    if provider is not None and profile.user_id is not None:
        connection = OAuthConnection.objects.filter(
            user_id=profile.user_id, provider=provider.key
        ).first()
        secret_server = provider.bound_server(connection) if connection else None
    return ProfileData(
        mode=profile.mode,
        host=profile.host,
        port=profile.port,
        security=profile.security,
        login=profile.login,
        rate_limit=profile.rate_limit,
        has_password=profile.has_password,
        has_token=connection is not None,
        profile_id=profile.pk,
        owner_id=profile.user_id,
        secret_server=secret_server,
        tested=profile.tested,
    )


def domain_check_stored(address: str) -> tuple[DomainVerdict, datetime.datetime] | None:
    """The stored verdict of an address's domain and when it was checked (no DNS): only one
    checked for the platform's sending IPs as they are now (none configured: no verdict)."""
    ips = list(settings.PLATFORM_SENDING_IPS)
    if not ips:
        return None
    try:
        domain = domain_of(address)
    except DomainError:
        return None
    row = DomainCheck.objects.filter(domain=domain).first()
    if row is None or row.verdict.get("ips") != ips:
        return None
    return DomainVerdict.from_json(row.verdict), row.checked_at


def card_data(user: User) -> CardData:
    stored = domain_check_stored(user.email) if user.email else None
    return CardData(
        user_id=user.pk,
        code=user.code,
        name=user.name,
        email=user.email,
        bcc=user.bcc,
        reply_to=user.reply_to,
        signature=user.signature,
        email_verified=user.email_verified,
        domain_rejects_platform=bool(stored and stored[0].rejects_platform),
    )


def platform_data() -> PlatformData:
    company = company_get()
    return PlatformData(
        company_name=company.name if company else "",
        company_slug=company.slug if company else "",
        event_domain=settings.EVENT_MAIL_DOMAIN,
        default_from=settings.DEFAULT_FROM_EMAIL,
        oauth_servers={p.key: p.server() for p in providers.oauth_providers()},
    )


def sender_inputs_for(*, user: User) -> SenderInputs:
    system = system_settings_get()
    sending_user = system.mail_sending_user
    return SenderInputs(
        card=card_data(user),
        profile=profile_data(user_profile_get(user=user)),
        global_profile=profile_data(global_profile_get()),
        platform=platform_data(),
        mail_sending_user=(
            (card_data(sending_user), profile_data(user_profile_get(user=sending_user)))
            if sending_user
            else None
        ),
    )


def sender_config_for(*, user: User) -> SenderConfig:
    """The effective sender of `user`; raises SenderConfigError when there is none."""
    return resolve_sender(sender_inputs_for(user=user))


def users_needing_global_server() -> QuerySet[User]:
    """Users whose SMTP profile has a login but no server of its own (S6.2)."""
    return User.objects.filter(
        sender_profile__mode=SenderMode.SMTP, sender_profile__host=""
    ).order_by("code")


def global_server_get() -> tuple[str, int, str] | None:
    """(host, port, security) a login-only user (S6.2) inherits today; None when there is none."""
    system = system_settings_get()
    base = (
        user_profile_get(user=system.mail_sending_user)
        if system.mail_sending_user
        else global_profile_get()
    )
    if base.mode != SenderMode.SMTP or not base.host:
        return None
    return (base.host, base.port, base.security)


def global_server_available() -> bool:
    """Whether the global configuration has an SMTP server a login-only user can use (S6.2)."""
    return global_server_get() is not None


def users_waiting_for_password(*, server: tuple[str, int, str] | None) -> QuerySet[SenderProfile]:
    """Login-only profiles (S6.2) whose password was entered for a server other than `server`,
    the one they inherit now: their password waits for them to enter it again."""
    waiting = SenderProfile.objects.filter(
        user__isnull=False, mode=SenderMode.SMTP, host=""
    ).exclude(password_encrypted="")
    if server is None:
        return waiting.select_related("user")
    host, port, security = server
    return (
        waiting.exclude(password_host=host, password_port=port, password_security=security)
        .select_related("user")
        .order_by("user__code")
    )
