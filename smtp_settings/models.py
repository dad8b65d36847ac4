"""Sender profiles (one per user, one global) and the system settings that tie them together."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

RATE_LIMIT_MAX = 100_000  # messages a minute: beyond any real server's limit


class SenderMode(models.TextChoices):
    """The card's "Nadawca wiadomości e-mail" (S2.2)."""

    DEFAULT = "default", _("Default (platform server)")
    SMTP = "smtp", _("SMTP")
    MICROSOFT365 = "microsoft365", _("Microsoft 365 OAUTH")
    GOOGLE = "google", _("Google OAUTH")
    REPLY_TO = "reply_to", _("Directo-Reply-to")


class Security(models.TextChoices):
    """The card's "SSL/TLS" (S3.2)."""

    SSL = "ssl", _("SSL")
    STARTTLS = "starttls", _("StartTLS")
    NONE = "none", _("No (unencrypted)")


class SenderProfile(models.Model):
    """How one user (or, with `user` empty, the whole company) sends mail.

    The server is kept as host and port but edited as one `host:port` field (S3.1). The
    password is stored only as MultiFernet ciphertext (see `smtp_settings.crypto`).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="sender_profile",
        verbose_name=_("user"),
    )
    mode = models.CharField(
        _("mail sender"), max_length=20, choices=SenderMode.choices, default=SenderMode.DEFAULT
    )
    host = models.CharField(_("server"), max_length=253, blank=True)
    port = models.PositiveIntegerField(_("port"), null=True, blank=True)
    security = models.CharField(
        _("SSL/TLS"), max_length=10, choices=Security.choices, default=Security.SSL
    )
    login = models.CharField(_("user name"), max_length=254, blank=True)
    password_encrypted = models.TextField(_("password (encrypted)"), blank=True, editable=False)
    # The server the password was entered for (item 5 of issue 11): the only one it is ever
    # sent to. For a login-only profile (S6.2) it is the inherited server of that moment.
    password_host = models.CharField(max_length=253, blank=True, editable=False)
    password_port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    password_security = models.CharField(
        max_length=10, choices=Security.choices, blank=True, editable=False
    )
    # Whoever entered the password confirmed it may travel unencrypted to that very server.
    password_unencrypted_ok = models.BooleanField(default=False, editable=False)
    # The server, port, security and login of the last passed connection test (issue 14,
    # item 3): mass mailing through an own server unlocks only while they are the profile's.
    tested_host = models.CharField(max_length=253, blank=True, editable=False)
    tested_port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    tested_security = models.CharField(max_length=10, blank=True, editable=False)
    tested_login = models.CharField(max_length=254, blank=True, editable=False)
    tested_at = models.DateTimeField(null=True, blank=True, editable=False)
    rate_limit = models.PositiveIntegerField(
        _("messages per minute"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(RATE_LIMIT_MAX)],
        help_text=_(
            "The most this server accepts from you in a minute; bulk sending keeps under it. "
            "Leave empty for no limit of your own."
        ),
    )
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("sender profile")
        verbose_name_plural = _("sender profiles")
        constraints = [
            # One profile per user, and exactly one global profile: the one without a user.
            models.UniqueConstraint(Coalesce("user", Value(0)), name="one_global_profile"),
            models.CheckConstraint(
                condition=(Q(host="") & Q(port__isnull=True))
                | (~Q(host="") & Q(port__isnull=False)),
                name="host_and_port_together",
            ),
        ]

    def __str__(self) -> str:
        owner = self.user.code if self.user_id else _("global")
        return f"{owner}: {self.get_mode_display()}"

    @property
    def is_global(self) -> bool:
        return self.user_id is None

    @property
    def has_password(self) -> bool:
        return bool(self.password_encrypted)

    TESTED_FIELDS = ("tested_host", "tested_port", "tested_security", "tested_login", "tested_at")

    def mark_tested(self, at) -> None:
        """Record that the server, port, security and login as they are now passed a
        connection test at `at` (save with update_fields=TESTED_FIELDS)."""
        self.tested_host, self.tested_port = self.host, self.port
        self.tested_security, self.tested_login = self.security, self.login
        self.tested_at = at

    @property
    def tested(self) -> tuple[str, int | None, str, str] | None:
        """What the last passed connection test was for; None: never passed."""
        if self.tested_at is None:
            return None
        return (self.tested_host, self.tested_port, self.tested_security, self.tested_login)

    @property
    def password_server(self) -> tuple[str, int, str] | None:
        """(host, port, security) the stored password was entered for; None when unbound."""
        if not (self.password_encrypted and self.password_host and self.password_port):
            return None
        return (self.password_host, self.password_port, self.password_security)

    @property
    def server(self) -> str:
        """The `host:port` form the card shows."""
        if not self.host:
            return ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class SystemSettings(models.Model):
    """The one row of system settings ("Ustawienia Directo") about mail (S2.1, S6.1)."""

    mail_sending_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("mail sending user"),
        help_text=_(
            "This user's own sender configuration becomes the basis for everyone's sending."
        ),
    )
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("system settings")
        verbose_name_plural = _("system settings")
        constraints = [models.CheckConstraint(condition=Q(id=1), name="system_settings_singleton")]

    def __str__(self) -> str:
        return str(_("System settings"))


class DomainCheck(models.Model):
    """The last domain check of an e-mail domain (smtp_settings.domaincheck): what the card
    shows, and what Default mode goes by without a DNS lookup per mail. A DNS failure never
    replaces a stored verdict."""

    domain = models.CharField(max_length=253, unique=True)
    verdict = models.JSONField()
    checked_at = models.DateTimeField()

    class Meta:
        verbose_name = _("domain check")

    def __str__(self) -> str:
        return self.domain


class OAuthConnection(models.Model):
    """A user's mailbox at an OAuth provider (Microsoft 365, Google), connected in the card's
    popup. One per user and provider; `provider` is a key of `smtp_settings.providers`.

    The provider's tokens (msal's token cache, or Authlib's token) are stored only as
    MultiFernet ciphertext, re-encrypted whenever a refresh rotates them, and bound to the server
    they were connected for: they go nowhere else, even if the setting changes (issue 11).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="oauth_connections",
        verbose_name=_("user"),
    )
    provider = models.CharField(_("provider"), max_length=32)
    address = models.EmailField(_("connected address"))
    # The provider's id of the account: msal's home_account_id, Google's `sub`.
    account_id = models.CharField(max_length=255)
    token_encrypted = models.TextField(editable=False)
    smtp_host = models.CharField(max_length=253, blank=True, editable=False)
    smtp_port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    connected_at = models.DateTimeField(_("connected"), default=timezone.now)
    refreshed_at = models.DateTimeField(_("last refreshed"), null=True, blank=True)
    # Set when the provider refused a refresh: the user must connect again.
    last_error = models.TextField(_("last error"), blank=True)
    # How its mail goes (a provider with more than one way, Microsoft 365): "" the platform's
    # choice (M365_TRANSPORT), "graph" Microsoft Graph chosen on the card.
    transport = models.CharField(_("transport"), max_length=8, blank=True)
    # The server's refusal of SMTP sign-in for this account (Microsoft 365: 5.7.139, SMTP AUTH
    # off for the tenant); the card then offers Microsoft Graph.
    smtp_refused = models.CharField(max_length=500, blank=True, editable=False)
    # The Graph endpoint (M365_GRAPH_ENDPOINT) the account was connected for: its tokens go to
    # no other, as for the SMTP server.
    api_endpoint = models.CharField(max_length=255, blank=True, editable=False)

    class Meta:
        verbose_name = _("OAuth connection")
        verbose_name_plural = _("OAuth connections")
        constraints = [
            models.UniqueConstraint(fields=["user", "provider"], name="oauth_one_per_provider")
        ]

    def __str__(self) -> str:
        return f"{self.provider}: {self.address}"

    @property
    def needs_reconnect(self) -> bool:
        return bool(self.last_error)
