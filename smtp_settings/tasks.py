"""Celery tasks of the sender settings: the domain check kept current (issue 14)."""

from __future__ import annotations

import datetime
import logging

from celery import shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from accounts.models import User

from .domaincheck import DomainError, domain_of
from .models import DomainCheck
from .services import domain_check_refresh

logger = logging.getLogger(__name__)

# A run of the periodic refresh checks at most this many domains (each within DNS_TIMEOUT).
REFRESH_PER_RUN = 200
_NEVER = datetime.datetime.min.replace(tzinfo=datetime.UTC)


@shared_task(ignore_result=True)
def domain_check(address: str) -> None:
    """Check an address's domain now (a card e-mail just verified): the next mail goes by it."""
    domain_check_refresh(address=address)


@shared_task
def domain_checks_refresh() -> dict[str, int]:
    """Periodic (beat): the domains of verified card e-mails whose verdict is missing or older
    than DOMAIN_CHECK_CACHE_SECONDS, the oldest first, at most REFRESH_PER_RUN a run."""
    if not settings.PLATFORM_SENDING_IPS:
        return {"checked": 0}
    domains: set[str] = set()
    for email in (
        User.objects.exclude(email="")
        .filter(email_verified_address=F("email"))
        .values_list("email", flat=True)
        .distinct()
    ):
        try:
            domains.add(domain_of(email))
        except DomainError:
            continue
    cutoff = timezone.now() - datetime.timedelta(seconds=settings.DOMAIN_CHECK_CACHE_SECONDS)
    ips = list(settings.PLATFORM_SENDING_IPS)
    current = {
        domain: checked_at
        for domain, checked_at, verdict in DomainCheck.objects.filter(
            domain__in=domains
        ).values_list("domain", "checked_at", "verdict")
        if verdict.get("ips") == ips  # checked for other IPs: as good as never
    }
    due = sorted(
        (d for d in domains if d not in current or current[d] < cutoff),
        key=lambda d: (d in current, current.get(d, _NEVER)),
    )[:REFRESH_PER_RUN]
    for domain in due:
        domain_check_refresh(address=domain)
    logger.info("domain checks refreshed: %s of %s domains", len(due), len(domains))
    return {"checked": len(due), "domains": len(domains)}


@shared_task
def oauth_refresh() -> dict[str, dict[str, int]]:
    """Periodic (beat, daily): refresh every OAuth connection of every provider, so refresh
    tokens do not lapse unused; a refusal becomes an Event for its user before a mail fails."""
    from . import providers

    results: dict[str, dict[str, int]] = {}
    for provider in providers.oauth_providers():  # one provider's trouble stops no other
        try:
            results[provider.key] = provider.oauth.refresh_all()
        except Exception:
            logger.exception("daily OAuth refresh of %s failed", provider.key)
            results[provider.key] = {"failed": 1}
    return results
