"""Factories for the models under test: small functions with sensible defaults."""

from __future__ import annotations

import itertools
import secrets

from django.utils import timezone

from accounts.models import Company, User
from smtp_settings import crypto
from smtp_settings.models import Security, SenderMode, SenderProfile, SystemSettings
from smtp_settings.selectors import global_server_get

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


def profile(
    owner: User | None,
    mode: str = SenderMode.SMTP,
    password: str = "",
    *,
    tested: bool = True,
    **fields,
):
    """A profile as the forms would store it: a password is bound to the server it was entered
    for (its own, or for a login-only profile the inherited one of this moment), and with
    security "none" the unencrypted AUTH is confirmed. Pass the password_* fields to differ.
    An SMTP profile has passed its connection test as it is (mass mailing unlocked) unless
    `tested=False`."""
    fields.setdefault("security", "ssl")
    if tested and mode == SenderMode.SMTP:
        fields.setdefault("tested_host", fields.get("host", ""))
        fields.setdefault("tested_port", fields.get("port"))
        fields.setdefault("tested_security", fields["security"])
        fields.setdefault("tested_login", fields.get("login", ""))
        fields.setdefault("tested_at", timezone.now())
    if password:
        fields["password_encrypted"] = crypto.encrypt(password)
        server = (
            (fields["host"], fields.get("port"), fields["security"])
            if fields.get("host")
            else global_server_get()
        )
        if server is not None and "password_host" not in fields:
            fields["password_host"], fields["password_port"], fields["password_security"] = server
        fields.setdefault(
            "password_unencrypted_ok", fields.get("password_security") == Security.NONE
        )
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
