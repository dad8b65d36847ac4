"""Presets from MX (issue 14, item 2): the card e-mail's mail provider, found from its domain's
MX records, fills the mail sender with one click.

Only providers whose settings are the same for every customer have a preset, each in its own
package (smtp_settings/providers/*): Google (Gmail and Google Workspace: Google OAuth when the
platform has a Google client, else its SMTP server with an app password) and Microsoft 365
(OAuth; its SMTP server is the platform's setting). Anything else is "Other": the card says to
ask the provider, and fills nothing.
"""

from __future__ import annotations

import spf
from django.conf import settings
from django.core.cache import cache

from . import providers
from .domaincheck import DomainError, _Lookups, domain_of, mx_hosts, provider_of_mx
from .providers import Preset


def preset_for(provider_key: str | None, email: str) -> Preset | None:
    """What "Fill in from my e-mail's provider" fills for this provider; None: nothing."""
    provider = providers.get(provider_key or "")
    return provider.preset(email) if provider and provider.preset else None


def mx_provider(address: str) -> str | None:
    """ "google", "microsoft365", "other", or None (no MX, not a domain, DNS did not answer),
    from the stored domain check or a lookup of the MX records alone (cached an hour; a
    failure a minute). The caller counts a lookup against the user's limit: `needs_lookup`."""
    try:
        domain = domain_of(address)
    except DomainError:
        return None
    cached = cache.get(_key(domain))
    if cached is not None:
        return cached or None
    try:
        hosts = mx_hosts(domain, _Lookups())
    except spf.TempError:  # DNS did not answer within the budget: nothing to suggest now
        cache.set(_key(domain), "", 60)
        return None
    provider = provider_of_mx(hosts)
    cache.set(_key(domain), provider or "", int(settings.DOMAIN_CHECK_CACHE_SECONDS))
    return provider


def needs_lookup(address: str) -> bool:
    """Whether `mx_provider` would ask DNS (nothing cached for the domain)."""
    try:
        return cache.get(_key(domain_of(address))) is None
    except DomainError:
        return False


def _key(domain: str) -> str:
    return f"mxprovider:{domain}"
