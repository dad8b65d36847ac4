"""What a provider is (django-allauth's shape): one small package per mail provider under
smtp_settings/providers/, describing itself with a `Provider`, listed once in the registry
(smtp_settings/providers/__init__.py).

A provider brings what is its own: the mail sender it adds to the card (an OAuth mode), its SMTP
server setting, its OAuth flow (a module with the functions `smtp_settings.oauth` documents),
the MX hosts and SPF include that recognise it, the card's preset for it, and the explanations
and reply rules for what its servers say. The worker, the resolver, the explanation catalogue
and the domain check ask the registry and know no provider by name; the card page shows each
provider's own section, so it names them (smtp_settings/card_views.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

from django.conf import settings

from ..catalogue import Explanation, Rule
from ..validation import split_server


@dataclass(frozen=True)
class Preset:
    """What the card's "Fill in from my e-mail's provider" puts in the sender fields."""

    fields: dict  # the sender form's fields (mode, server, security, login)
    filled: str  # what the card says after filling them in


@dataclass(frozen=True)
class Provider:
    key: str  # stable: stored on connections, in SEND_RATE_LIMITS, in URLs
    name: str  # lazily translated, as the card shows it
    # The card's mail sender value its OAuth flow sends with ("" when it has no OAuth flow).
    mode: str = ""
    # Dotted path of its OAuth flow module (imported only when used).
    oauth_module: str = ""
    # The settings name of its SMTP server ("host:port") and the encryption it speaks there.
    server_setting: str = ""
    security: str = "starttls"
    # Its MX hosts (the domain check and the card's preset), and its SPF include.
    mx: re.Pattern | None = None
    spf_include: str = ""
    # Card e-mail -> what its preset fills in; None: no preset.
    preset: Callable[[str], Preset] | None = None
    explanations: tuple[Explanation, ...] = ()
    rules: tuple[Rule, ...] = ()  # tried before the catalogue's own, in this order
    # The Event kind (outbox.models.EventKind) when it refuses a refresh, and the explanation.
    reconnect_event: str = ""
    reconnect_explanation: str = ""

    @property
    def oauth(self) -> ModuleType:
        return import_module(self.oauth_module)

    def server(self) -> tuple[str, int, str]:
        """(host, port, security) of its SMTP server, from the settings as they are now."""
        host, port = split_server(getattr(settings, self.server_setting))
        return host, port, self.security

    def bound_server(self, connection) -> tuple[str, int, str] | None:
        """The server a connection's tokens were connected for; None when unbound."""
        if not (connection.smtp_host and connection.smtp_port):
            return None
        return (connection.smtp_host, connection.smtp_port, self.security)
