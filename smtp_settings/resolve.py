"""`resolve_sender`: who sends a user's mail, and how. Pure: no database, network or secrets.

The rules (DESIGN.md, SEED.md S1, S6, S7):
- A user whose mail sender is Default inherits the global configuration; a global
  configuration that is Default means the platform relay with From = the card e-mail (S1.1),
  but only once that e-mail is verified (issue 11): until then the relay sends as Reply-To
  mode does (platform From, the user in Reply-To, VERP envelope), so nobody sends From an
  address they do not own through the platform's IPs. It is always the sending user's own
  card that is checked: the mail sending user only lends a server, never the relay's From.
  The same happens when the card e-mail's domain refuses the platform's mail (issue 14: its
  DMARC policy rejects or quarantines it, or its SPF fails for the platform's IPs): mail From
  that domain through the relay would be refused or junked.
- The global configuration is either the global profile, or the profile of the "mail sending
  user" (S6.1), who must not inherit in turn.
- SMTP with a server of its own uses that server; SMTP with only login and password takes
  server, port and security from the global configuration (S6.2).
- Microsoft 365 OAUTH uses the profile owner's connected account on the server from settings.
- Reply-To mode is the relay with a platform From, the user in Reply-To and a VERP envelope
  sender at the event domain (S7.2, S7.4).
- The card's BCC and signature apply whatever the transport.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import policy as email_policy
from types import MappingProxyType

from django.db import models
from django.utils.translation import gettext_lazy as _

from . import providers
from .models import Security, SenderMode


class TransportKind(models.TextChoices):
    RELAY = "relay", _("platform relay")
    SMTP = "smtp", _("SMTP server")
    MICROSOFT365 = "microsoft365", _("Microsoft 365")
    GOOGLE = "google", _("Google")


class Source(models.TextChoices):
    """Where one part of the effective sender came from."""

    USER = "user", _("the user's own settings")
    GLOBAL = "global", _("the global settings")
    MAIL_SENDING_USER = "mail_sending_user", _("the mail sending user")
    CARD = "card", _("the user card")
    LOGIN = "login", _("the login")
    COMPANY = "company", _("the company")
    PLATFORM = "platform", _("the platform settings")


class SenderConfigError(Exception):
    """The configuration cannot produce a sender. Not a sending error: never retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CardData:
    """The parts of a user card that shape a mail."""

    user_id: int
    code: str
    name: str = ""
    email: str = ""
    bcc: str = ""
    reply_to: str = ""
    signature: str = ""
    # The card e-mail was verified by its link (User.email_verified). Unverified by default:
    # a caller that forgets it gets the safe sender, never a spoofable From.
    email_verified: bool = False
    # The card e-mail's domain refuses the platform's mail (domain check: DMARC reject or
    # quarantine, or SPF fail, for the platform's IPs): the relay sends as Reply-To mode does.
    domain_rejects_platform: bool = False


@dataclass(frozen=True)
class ProfileData:
    """A sender profile without its secret; `owner_id` is None for the global profile."""

    mode: str = SenderMode.DEFAULT
    host: str = ""
    port: int | None = None
    security: str = Security.SSL
    login: str = ""
    rate_limit: int | None = None  # messages a minute the owner set for their own server
    has_password: bool = False
    has_token: bool = False  # the OAuth mode's provider holds a connection of the owner
    profile_id: int | None = None
    owner_id: int | None = None
    # (host, port, security) the password or token was entered for; it goes nowhere else.
    secret_server: tuple[str, int, str] | None = None
    # (host, port, security, login) of the last passed connection test (issue 14, item 3).
    tested: tuple[str, int | None, str, str] | None = None


@dataclass(frozen=True)
class PlatformData:
    company_name: str
    company_slug: str
    event_domain: str
    default_from: str
    # (host, port, security) of each OAuth provider's SMTP server, by provider key.
    oauth_servers: Mapping[str, tuple[str, int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class SenderInputs:
    card: CardData
    profile: ProfileData
    global_profile: ProfileData
    platform: PlatformData
    mail_sending_user: tuple[CardData, ProfileData] | None = None


@dataclass(frozen=True)
class SecretRef:
    """Names a secret without holding it: a profile's password or a user's token cache."""

    kind: str  # "profile_password" | "m365_token_cache" | "oauth_token"
    id: int


@dataclass(frozen=True)
class SenderConfig:
    mode: str
    transport: str
    host: str
    port: int | None
    security: str | None
    login: str
    secret: SecretRef | None
    from_email: str
    from_name: str
    reply_to: str
    envelope_sender: str
    verp: bool
    bcc: str
    signature: str
    source: Mapping[str, str] = field(default_factory=dict)
    rate_limit: int | None = None  # messages a minute, set on the card of the server's profile
    secret_server: tuple[str, int, str] | None = None  # where the secret was entered for
    # An own server (the user's card, SMTP) passed a connection test as it is now (issue 14):
    # mass mailing through it unlocks only then. Inherited servers are the admin's: True.
    tested: bool = True

    @property
    def secret_bound(self) -> bool:
        """The secret (if any) was entered for this very server: it may be sent there.

        Informs the card; the transport enforces it against the stored binding anyway.
        """
        if self.secret is None:
            return True
        return self.secret_server == (self.host, self.port, self.security)

    @property
    def mass_mailing_allowed(self) -> bool:
        """S1.2: bulk sending needs the company's own server, not the platform relay.

        An OAuth provider counts only once connected: without a token nothing can be sent.
        """
        if self.transport in OAUTH_TRANSPORTS:
            return self.secret is not None
        return self.transport == TransportKind.SMTP and self.tested is not False

    @property
    def needs_connection_test(self) -> bool:
        """An own SMTP server that has not passed a connection test as it is saved now."""
        return self.transport == TransportKind.SMTP and self.tested is False

    @property
    def transport_label(self) -> str:
        return TransportKind(self.transport).label

    @property
    def security_label(self) -> str:
        return Security(self.security).label if self.security else ""

    @property
    def has_secret(self) -> bool:
        return self.secret is not None

    def to_snapshot(self) -> dict:
        """JSON for an outgoing message: the resolved sender as it was, never a secret."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["secret"] = [self.secret.kind, self.secret.id] if self.secret else None
        data["source"] = dict(self.source)
        return data

    @classmethod
    def from_snapshot(cls, data: dict) -> SenderConfig:
        secret = SecretRef(*data["secret"]) if data.get("secret") else None
        fields = {name: data.get(name) for name in cls.__dataclass_fields__}
        bound = tuple(data["secret_server"]) if data.get("secret_server") else None
        return cls(
            **{
                **fields,
                "secret": secret,
                "secret_server": bound,
                "source": MappingProxyType(data["source"]),
            }
        )

    def envelope_display(self) -> str:
        if self.verp:
            local, _, domain = self.envelope_sender.partition("@")
            return f"{local}+<message>@{domain}"
        return self.envelope_sender


# The OAuth providers' modes: each is also its transport's and its provider's key.
OAUTH_TRANSPORTS = providers.oauth_modes()
_EMAIL_LIKE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
VERP_LOCAL_PART = "bounces"


def _global_base(inputs: SenderInputs) -> tuple[ProfileData, str]:
    """The profile that serves as the global configuration, and its source."""
    if inputs.mail_sending_user is None:
        return inputs.global_profile, Source.GLOBAL
    card, profile = inputs.mail_sending_user
    if profile.mode == SenderMode.DEFAULT:
        raise SenderConfigError(
            "mail_sending_user_inherits",
            _(
                "The mail sending user %(code)s inherits the global configuration, so there "
                "is nothing to inherit from. Give that user a sender of their own, or clear "
                "the mail sending user in the system settings."
            )
            % {"code": card.code},
        )
    return profile, Source.MAIL_SENDING_USER


def _server_for_smtp(
    profile: ProfileData, profile_source: str, inputs: SenderInputs
) -> tuple[ProfileData, str]:
    """The profile that provides host, port and security for an SMTP profile."""
    if profile.host:
        return profile, profile_source
    if profile.login and profile.owner_id is not None and profile_source == Source.USER:
        base, base_source = _global_base(inputs)
        if base.mode == SenderMode.SMTP and base.host:
            return base, base_source
        raise SenderConfigError(
            "no_global_server",
            _(
                "Only a login and password are set, and the global configuration has no SMTP "
                "server to use them with. Enter a server, or ask an administrator to set one "
                "in the system settings."
            ),
        )
    raise SenderConfigError(
        "no_server",
        _("The mail sender is SMTP but no server is set. Enter the server as host:port."),
    )


def _platform_sender_for_card(card: CardData, platform: PlatformData) -> tuple[str, str, str, str]:
    """From, display name, Reply-To and envelope of an unverified Default user's relay mail:
    as in Reply-To mode, with DEFAULT_FROM_EMAIL when no company is set (never an error: the
    user could always send before)."""
    if platform.company_slug:
        from_email = f"{platform.company_slug}@{platform.event_domain}"
    else:
        from_email = platform.default_from
    return (
        from_email,
        card.name or platform.company_name,
        card.reply_to or card.email,
        f"{VERP_LOCAL_PART}@{platform.event_domain}",
    )


def platform_sender(platform: PlatformData) -> SenderConfig:
    """The platform's own sender, for mail about the account itself (the card e-mail's
    verification link): the relay, From DEFAULT_FROM_EMAIL, and nothing from the card: no BCC
    (it would hand the link to someone else), no signature, no Reply-To. The envelope is that
    address too, without VERP, so a bounce quoting the link never reaches the user's Events."""
    return SenderConfig(
        mode=SenderMode.DEFAULT,
        transport=TransportKind.RELAY,
        host="",
        port=None,
        security=None,
        login="",
        secret=None,
        from_email=platform.default_from,
        from_name=platform.company_name,
        reply_to="",
        envelope_sender=platform.default_from,
        verp=False,
        bcc="",
        signature="",
        source=MappingProxyType(
            {"mode": Source.PLATFORM, "from": Source.PLATFORM, "server": Source.PLATFORM}
        ),
    )


def _shows_an_address(name: str) -> bool:
    """Whether a display name shows an at sign as a mail client renders it: RFC 2047 encoded
    words decoded, full-width and small at signs folded (NFKC)."""
    shown = name
    if "=?" in name:
        try:
            shown = str(email_policy.default.header_factory("X-Name", name))
        except Exception:  # unreadable for the email package: treated as the worst case
            return True
    return "@" in unicodedata.normalize("NFKC", shown)


def resolve_sender(inputs: SenderInputs) -> SenderConfig:
    card, platform = inputs.card, inputs.platform
    source: dict[str, str] = {}

    if inputs.profile.mode == SenderMode.DEFAULT:
        effective, mode_source = _global_base(inputs)
    else:
        effective, mode_source = inputs.profile, Source.USER
    source["mode"] = mode_source
    mode = effective.mode

    # From, Reply-To and envelope for the modes where the user's own address is the sender.
    # The platform relay (Default) uses the card e-mail only once it is verified.
    relay_as_reply_to = (
        mode == SenderMode.DEFAULT
        and card.email
        and (not card.email_verified or card.domain_rejects_platform)
    )
    if card.email and not relay_as_reply_to:
        from_email, source["from"] = card.email, Source.CARD
    elif _EMAIL_LIKE.match(effective.login or "") and mode != SenderMode.DEFAULT:
        from_email, source["from"] = effective.login, Source.LOGIN
    else:
        from_email, source["from"] = platform.default_from, Source.PLATFORM
    from_name = card.name
    reply_to = card.reply_to
    if reply_to:
        source["reply_to"] = Source.CARD
    envelope, verp = from_email, False
    source["envelope"] = source["from"]
    host, port, security, login, secret = "", None, None, "", None
    rate_limit = None
    secret_server = None
    tested = True

    if mode == SenderMode.DEFAULT:
        transport = TransportKind.RELAY
        source["server"] = Source.PLATFORM
        if relay_as_reply_to:
            from_email, from_name, reply_to, envelope = _platform_sender_for_card(card, platform)
            source["from"] = Source.COMPANY if platform.company_slug else Source.PLATFORM
            source["reply_to"], source["envelope"], verp = Source.CARD, Source.PLATFORM, True
    elif mode == SenderMode.REPLY_TO:
        transport = TransportKind.RELAY
        source["server"] = Source.PLATFORM
        if not (card.reply_to or card.email):
            raise SenderConfigError(
                "reply_to_needs_email",
                _(
                    "Directo-Reply-to mode puts your e-mail address in Reply-To, but the user "
                    "card has no e-mail. Enter it on the card."
                ),
            )
        if not platform.company_slug:
            raise SenderConfigError(
                "no_company",
                _(
                    "Directo-Reply-to mode sends from the company's platform address, but no "
                    "company is set. An administrator enters it in the system settings."
                ),
            )
        from_email = f"{platform.company_slug}@{platform.event_domain}"
        from_name = card.name or platform.company_name
        source["from"] = Source.COMPANY
        reply_to = card.reply_to or card.email
        source["reply_to"] = Source.CARD
        envelope, verp = f"{VERP_LOCAL_PART}@{platform.event_domain}", True
        source["envelope"] = Source.PLATFORM
    elif mode in OAUTH_TRANSPORTS:
        if effective.owner_id is None:
            raise SenderConfigError(
                "oauth_needs_user",
                _(
                    "%(mode)s belongs to a user's own account. Choose it on a user card and name "
                    "that user as the mail sending user."
                )
                % {"mode": SenderMode(mode).label},
            )
        transport = mode  # the provider's key (smtp_settings/providers)
        host, port, security = platform.oauth_servers[mode]
        source["server"] = Source.PLATFORM
        login = effective.login
        source["login"] = mode_source
        if effective.has_token:
            kind = "m365_token_cache" if mode == SenderMode.MICROSOFT365 else "oauth_token"
            secret = SecretRef(kind, effective.owner_id)
            secret_server = effective.secret_server
            source["password"] = mode_source
    elif mode == SenderMode.SMTP:
        transport = TransportKind.SMTP
        server_profile, server_source = _server_for_smtp(effective, mode_source, inputs)
        host, port, security = server_profile.host, server_profile.port, server_profile.security
        source["server"] = server_source
        # A limit is the server's: a login-only user (S6.2) keeps under the global server's.
        rate_limit = server_profile.rate_limit
        login = effective.login
        if mode_source == Source.USER:
            own = (effective.host, effective.port, effective.security, effective.login)
            tested = effective.tested == own
        if login:
            source["login"] = mode_source
            if not (effective.has_password and effective.profile_id is not None):
                raise SenderConfigError(
                    "login_without_password",
                    _("A login is set but no password. Enter the password, or clear the login."),
                )
            secret = SecretRef("profile_password", effective.profile_id)
            secret_server = effective.secret_server
            source["password"] = mode_source
    else:
        raise SenderConfigError("unknown_mode", _("Unknown mail sender: %(mode)s") % {"mode": mode})

    if transport == TransportKind.RELAY and _shows_an_address(from_name):
        # "security@paypal.com" <acme@…> is spoofing by display name (most phones show only
        # the name): through the platform's IPs the name is never an address (issue 11).
        from_name = platform.company_name
    if card.bcc:
        source["bcc"] = Source.CARD
    if card.signature:
        source["signature"] = Source.CARD

    return SenderConfig(
        mode=mode,
        transport=transport,
        host=host,
        port=port,
        security=security,
        login=login,
        secret=secret,
        from_email=from_email,
        from_name=from_name,
        reply_to=reply_to,
        envelope_sender=envelope,
        verp=verp,
        bcc=card.bcc,
        signature=card.signature,
        source=MappingProxyType(source),
        rate_limit=rate_limit,
        secret_server=secret_server,
        tested=tested,
    )
