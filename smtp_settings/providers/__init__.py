"""The registry of mail providers (django-allauth's shape: smtp_settings/providers/<key>/).

Adding a provider: a package next to these with a `PROVIDER` (see base.py), and one line in
`_PROVIDERS` below. The order is the order their reply rules are tried in.

No provider imports another; the card, the resolver, the transports and the explanation
catalogue reach a provider only through the functions here (tests/test_import_graph.py).
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from .base import Preset, Provider
from .google import PROVIDER as GOOGLE
from .microsoft365 import PROVIDER as MICROSOFT365

_PROVIDERS: tuple[Provider, ...] = (GOOGLE, MICROSOFT365)

REGISTRY: dict[str, Provider] = {provider.key: provider for provider in _PROVIDERS}
# An OAuth provider's mode is its key: the resolved sender's transport names the provider.
if any(p.mode not in ("", p.key) for p in _PROVIDERS):
    raise ImproperlyConfigured("An OAuth provider's mode must be its key.")

__all__ = ["REGISTRY", "Preset", "Provider", "for_mode", "get", "oauth_modes"]


def get(key: str) -> Provider | None:
    return REGISTRY.get(key)


def for_mode(mode: str) -> Provider | None:
    """The provider whose OAuth flow sends for this card's mail sender value, if any."""
    return next((p for p in _PROVIDERS if p.mode and p.mode == mode), None)


def oauth_modes() -> frozenset[str]:
    return frozenset(p.mode for p in _PROVIDERS if p.mode)


def oauth_providers() -> tuple[Provider, ...]:
    return tuple(p for p in _PROVIDERS if p.oauth_module)


def explanations() -> tuple:
    return tuple(entry for p in _PROVIDERS for entry in p.explanations)


def rules() -> tuple:
    return tuple(rule for p in _PROVIDERS for rule in p.rules)


def of_mx(hosts: list[str]) -> str | None:
    """The key of the provider the first (most preferred) MX host names; "other" for anyone
    else's; None for no MX at all."""
    if not hosts:
        return None
    for provider in _PROVIDERS:
        if provider.mx is not None and provider.mx.search(hosts[0]):
            return provider.key
    return "other"
