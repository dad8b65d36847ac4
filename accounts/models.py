"""The company and the user card (S2.2): who a user is and how their mail is signed."""

from __future__ import annotations

import zoneinfo
from email.policy import default as email_policy

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# A user code as ERPs use them: letters, digits, dot, dash, underscore.
user_code_validator = RegexValidator(
    r"^[A-Za-z0-9._-]{1,30}\Z",
    _("A user code may contain only letters, digits, dots, dashes and underscores."),
)
# No control characters in anything that may end up in a mail header (RFC 5322 §2.2).
# \Z, not $: $ also matches before a final newline, which would let "x\n" through.
no_control_chars = RegexValidator(
    r"^[^\x00-\x1f\x7f]*\Z",
    _("This field may not contain line breaks or control characters."),
)


def header_text(value: str) -> str:
    """What a mail header made of `value` shows: RFC 2047 encoded words decoded (the email
    package decodes "=?utf-8?q?=0D=0A?=" when a header is set, and writes a decoded CR/LF
    back raw: CVE-2024-6923). Raises ValueError when the email package cannot read it."""
    if "=?" not in value:  # no encoded word: nothing to decode (the common case, cheaply)
        return value
    try:
        return str(email_policy.header_factory("X-Check", value))
    except Exception as error:
        raise ValueError("unreadable header text") from error


slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z",
    _("Use lowercase letters, digits and dashes; it becomes the local part of an address."),
)


class Company(models.Model):
    """The one company this installation serves; its slug names the Reply-To mode From (S7.2)."""

    name = models.CharField(_("company name"), max_length=200, validators=[no_control_chars])
    slug = models.CharField(_("company short name"), max_length=63, validators=[slug_validator])

    class Meta:
        verbose_name = _("company")
        verbose_name_plural = _("companies")

    def __str__(self) -> str:
        return self.name


def time_zone_choices() -> list[tuple[str, str]]:
    """Every IANA time zone name this system knows (zoneinfo), sorted: "Europe/Warsaw"…"""
    return [(name, name.replace("_", " ")) for name in sorted(zoneinfo.available_timezones())]


def default_time_zone() -> str:
    """The installation's time zone (settings.TIME_ZONE): a new user's until they choose."""
    return settings.TIME_ZONE


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, code: str, password: str | None = None, **fields) -> User:
        if not code:
            raise ValueError("A user needs a code.")
        user = self.model(code=code, **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, code: str, password: str | None = None, **fields) -> User:
        fields.setdefault("is_staff", True)
        fields.setdefault("is_superuser", True)
        return self.create_user(code, password, **fields)

    def get_by_natural_key(self, code: str) -> User:
        """The user with this code (login, commands). No code holds a NUL, and PostgreSQL
        refuses one in a query: such a code is simply unknown."""
        if "\x00" in code:
            raise self.model.DoesNotExist
        return super().get_by_natural_key(code)

    def get_for_command(self, code: str) -> User:
        """The user with this code, or a CommandError saying there is none (every command that
        takes --user)."""
        from django.core.management import CommandError

        try:
            return self.get_by_natural_key(code)
        except self.model.DoesNotExist:
            raise CommandError(
                _("There is no user with the code “%(code)s”.") % {"code": code}
            ) from None


class User(AbstractBaseUser, PermissionsMixin):
    """The user card ("Ustawienia własne → Użytkownik")."""

    code = models.CharField(
        _("user code"), max_length=30, unique=True, validators=[user_code_validator]
    )
    name = models.CharField(_("name"), max_length=150, blank=True, validators=[no_control_chars])
    group = models.CharField(_("group"), max_length=50, blank=True, validators=[no_control_chars])
    office_phone = models.CharField(
        _("office phone"), max_length=40, blank=True, validators=[no_control_chars]
    )
    phone = models.CharField(_("phone"), max_length=40, blank=True, validators=[no_control_chars])
    email = models.EmailField(_("e-mail"), blank=True)
    # The card e-mail as proven by its verification link (smtp_settings.verification). The platform
    # relay sends From the card e-mail only while it is this very address: a changed e-mail is
    # unverified again, on every path that changes it (card, admin, commands), with no hook.
    email_verified_address = models.EmailField(_("verified e-mail"), blank=True, editable=False)
    email_verified_at = models.DateTimeField(
        _("e-mail verified at"), null=True, blank=True, editable=False
    )
    bcc = models.EmailField(_("BCC"), blank=True)
    reply_to = models.EmailField(_("Reply-To"), blank=True)
    signature = models.TextField(_("signature"), blank=True, max_length=5000)
    language = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES, blank=True
    )
    # The pages show times in it, and a "send at" typed in is read in it (accounts.middleware).
    time_zone = models.CharField(
        _("time zone"), max_length=64, choices=time_zone_choices, default=default_time_zone
    )
    is_staff = models.BooleanField(_("staff status"), default=False)
    is_active = models.BooleanField(_("active"), default=True)
    date_joined = models.DateTimeField(_("date joined"), default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "code"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def __str__(self) -> str:
        return f"{self.code} ({self.name})" if self.name else self.code

    @property
    def email_verified(self) -> bool:
        """The card e-mail is the address its owner proved to receive mail at."""
        return bool(self.email) and self.email == self.email_verified_address

    def get_full_name(self) -> str:
        return self.name or self.code

    def get_short_name(self) -> str:
        return self.code
