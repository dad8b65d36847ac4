"""Factories for the models under test: small functions with sensible defaults."""

from __future__ import annotations

import itertools
import secrets

from accounts.models import Company, User
from smtp_settings import crypto
from smtp_settings.models import SenderMode, SenderProfile, SystemSettings

_seq = itertools.count(1)
LOGIN_PASSWORD = "correct-horse-battery"


def company(name: str = "Acme Sp. z o.o.", slug: str = "acme") -> Company:
    return Company.objects.create(name=name, slug=slug)


def user(code: str | None = None, *, verified: bool = True, **fields) -> User:
    """A user; the card e-mail is verified (as after its link was opened) unless told not."""
    code = code or f"U{next(_seq)}"
    fields.setdefault("email", f"{code.lower()}@acme.example")
    fields.setdefault("name", f"User {code}")
    if verified:
        fields.setdefault("email_verified_address", fields["email"])
    return User.objects.create_user(code, LOGIN_PASSWORD, **fields)


def profile(owner: User | None, mode: str = SenderMode.SMTP, password: str = "", **fields):
    fields.setdefault("security", "ssl")
    if password:
        fields["password_encrypted"] = crypto.encrypt(password)
    return SenderProfile.objects.create(user=owner, mode=mode, **fields)


def mail_sending_user(owner: User | None) -> SystemSettings:
    system, _ = SystemSettings.objects.update_or_create(pk=1, defaults={"mail_sending_user": owner})
    return system


def secret() -> str:
    """A fresh password or token for one test: no secret is ever written into a fixture."""
    return secrets.token_urlsafe(16)


def db_rows() -> dict[str, list[dict]]:
    """Every column of every row a settings page or `sender set` could write."""
    return {
        "users": list(User.objects.order_by("pk").values()),
        "profiles": list(SenderProfile.objects.order_by("pk").values()),
        "system": list(SystemSettings.objects.order_by("pk").values()),
        "companies": list(Company.objects.order_by("pk").values()),
    }
