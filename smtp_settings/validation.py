"""Validation shared by the card form, the system settings form and `sender set`.

Every rule raises a `ValidationError` with a code and a message in the user's language.
"""

from __future__ import annotations

import ipaddress
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .models import Security

_HOSTNAME = re.compile(
    r"^(?=.{1,253}\Z)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?\Z"
)
_SERVER = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]{1,5})\Z"
)
# Google shows an app password as four groups of four letters (S4.2).
_APP_PASSWORD = re.compile(r"^\s*[A-Za-z]{4}(?:\s+[A-Za-z]{4}){3}\s*\Z")
# Servers where Microsoft retired basic authentication for client submission (S5.1).
MICROSOFT_SMTP_HOSTS = frozenset(
    {"smtp.office365.com", "smtp-mail.outlook.com", "outlook.office365.com"}
)
# The usual pairing of port and security (S3.2).
_STANDARD_SECURITY = {465: Security.SSL, 587: Security.STARTTLS, 25: Security.STARTTLS}


def split_server(value: str) -> tuple[str, int]:
    """Split `host:port` (S3.1) into a lower-cased host and a port."""
    value = value.strip()
    match = _SERVER.match(value)
    if not match:
        raise ValidationError(
            _("Enter the server and its port as host:port, for example smtp.gmail.com:465."),
            code="server_format",
        )
    host = match["v6"] or match["host"]
    if match["v6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValidationError(
                _("“%(host)s” is not a valid server name."),
                code="server_host",
                params={"host": host},
            ) from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
            raise ValidationError(
                _("“%(host)s” is not a valid server name."),
                code="server_host",
                params={"host": host},
            ) from None
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValidationError(
            _("Port %(port)s does not exist: a port is a number from 1 to 65535."),
            code="server_port_range",
            params={"port": port},
        )
    return host.lower().rstrip("."), port


def parse_server(value: str) -> tuple[str, int]:
    """`split_server`, then refuse a port outside SMTP_ALLOWED_PORTS (S3.1)."""
    host, port = split_server(value)
    allowed = settings.SMTP_ALLOWED_PORTS
    if port not in allowed:
        raise ValidationError(
            _("Port %(port)s is not allowed. Use one of: %(allowed)s."),
            code="server_port",
            params={"port": port, "allowed": ", ".join(str(p) for p in allowed)},
        )
    return host, port


def check_security(port: int, security: str) -> None:
    """Refuse a port and security that cannot work together (S3.2's usual pairing)."""
    expected = _STANDARD_SECURITY.get(port)
    if expected is None or security == expected:
        return
    if port == 465:
        raise ValidationError(
            _(
                "Port 465 expects SSL: the connection is encrypted from the first byte. "
                "Choose SSL, or use port 587 with StartTLS."
            ),
            code="security_pairing",
        )
    if security == Security.SSL:
        raise ValidationError(
            _(
                "Port %(port)s expects StartTLS: the connection starts unencrypted and "
                "switches to TLS. Choose StartTLS, or use port 465 with SSL."
            ),
            code="security_pairing",
            params={"port": port},
        )


def normalize_password(password: str) -> str:
    """Remove the spaces Google shows inside an app password (S4.2); keep other passwords."""
    if _APP_PASSWORD.match(password):
        return re.sub(r"\s+", "", password)
    return password


def check_not_microsoft_basic_auth(host: str) -> None:
    if host in MICROSOFT_SMTP_HOSTS:
        raise ValidationError(
            _(
                "Microsoft 365 no longer accepts a password for sending mail (basic "
                "authentication was retired in April 2026). Choose “Microsoft 365 OAUTH” as "
                "the mail sender and authenticate with Microsoft 365."
            ),
            code="microsoft_basic_auth",
        )


# IPv6 ranges that carry an IPv4 address; the IPv4 address decides (issue 11, item 11).
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 2.5.5.1 (deprecated, still routed)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: IPv4 in the last 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local-use NAT64 prefixes
_6TO4 = ipaddress.IPv6Network("2002::/16")  # RFC 3056: IPv4 in bits 16-47
_TEREDO = ipaddress.IPv6Network("2001::/32")  # RFC 4380: server bits 32-63, client XOR'd last


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo).

    Done here rather than trusting `ipaddress`' own properties: which of these Python's
    `is_global` looks into changed between patch releases (3.11.7 calls 64:ff9b::a9fe:a9fe
    and ::127.0.0.1 global).
    """
    value = int(ip)
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _IPV4_COMPATIBLE or ip in _NAT64:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if ip in _NAT64_LOCAL:
        # RFC 6052 2.2: the IPv4 address sits after the prefix, skipping bits 64-71. A /48
        # prefix puts it in bits 48-63 and 72-87; a /96 one in the last 32 bits. Check both.
        high, low = (value >> 64) & 0xFFFF, (value >> 40) & 0xFFFF
        found.append(ipaddress.IPv4Address((high << 16) | low))
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if ip in _6TO4:
        found.append(ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF))
    if ip in _TEREDO:
        found.append(ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF))  # the server
        found.append(ipaddress.IPv4Address((value & 0xFFFFFFFF) ^ 0xFFFFFFFF))  # the client
    return found


def address_is_public(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether the platform may connect to `address`: a global unicast address whose embedded
    IPv4 addresses, if any, are global too. A zone index ("fe80::1%eth0") is ignored."""
    ip = ipaddress.ip_address(str(address).split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # Mapped and NAT64 addresses are how an IPv6 socket (or a DNS64 network) reaches an
        # IPv4 host: that host decides, whatever Python thinks of the IPv6 form.
        translated = ip.ipv4_mapped
        if translated is None and ip in _NAT64:
            translated = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if translated is not None:
            return address_is_public(translated)
    if (
        not ip.is_global
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
    ):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        return all(address_is_public(v4) for v4 in embedded_ipv4(ip))
    return True


def check_public_address(host: str) -> None:
    """An IP address typed as the server must be a public one (SMTP_ALLOW_PRIVATE_HOSTS).

    Names are checked when a connection is made (smtp_settings.transports.resolve_host).
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    if not address_is_public(host) and not settings.SMTP_ALLOW_PRIVATE_HOSTS:
        raise ValidationError(
            _(
                "%(host)s is a private or local address that the platform's servers cannot "
                "reach. Enter your mail server's public name or address."
            ),
            code="server_private",
            params={"host": host},
        )
