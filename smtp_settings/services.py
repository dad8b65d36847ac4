"""Writes: sender profiles, the global sender, the mail sending user, the company, key rotation."""

from __future__ import annotations

import logging

from django.apps import apps
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from accounts.models import Company, User
from outbox.limits import LimitReached, connection_test_limits, limits_take

from . import crypto
from .models import SenderProfile, SystemSettings

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
) -> SenderProfile:
    """Write a user's profile (or, with user=None, the global one). None leaves a field as is.

    A blank password keeps the stored one; `clear_password` removes it. `rate_limit` (messages
    a minute, None for none) is left as is unless given.
    """
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
    if password:
        profile.password_encrypted = crypto.encrypt(password)
    profile.full_clean(exclude=["user"])
    profile.save()
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
    system.mail_sending_user = user
    system.save()
    logger.info("mail sending user: %s", user.code if user else "-")
    return system


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


def connection_test_allowed(*, user: User) -> bool:
    """Count one connection test for `user`; False once over CONNECTION_TESTS_PER_MINUTE.

    Counted in the database (outbox.limits), where every web process sees the same count.
    """
    try:
        limits_take(connection_test_limits(user_id=user.pk))
    except LimitReached:
        return False
    return True
