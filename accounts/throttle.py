"""Login throttling with django-axes: failures counted in the database (every process sees
them), each kind of lockout with its own limit, and the login page saying what happened.

Three counters, each over the last LOGIN_LOCKOUT_MINUTES (a failure restarts the window; a try
refused by a lockout is no failure, so it neither restarts it nor adds to the other counters),
an IPv6 address counted as its /64:
- one user from one address (LOGIN_FAILURES_PER_USER_AND_ADDRESS, 5): a typo-prone user or
  a guesser at one account; the same user from another address is not affected;
- one address, whatever user (LOGIN_FAILURES_PER_ADDRESS, 20): one machine spraying users;
- one user, whatever address (LOGIN_FAILURES_PER_USER, 20): a guess spread over many
  addresses. This one lets a stranger lock a user out, which is why its limit is higher,
  it ends by itself, and staff can lift it (admin: Axes → Access attempts, or
  `manage.py axes_reset_username CODE`).
https://django-axes.readthedocs.io/en/latest/4_configuration.html
"""

from __future__ import annotations

import datetime
import ipaddress

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


def _limits() -> list[int]:
    """Own limit of each entry of AXES_LOCKOUT_PARAMETERS, in the same order."""
    return [
        settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS,
        settings.LOGIN_FAILURES_PER_ADDRESS,
        settings.LOGIN_FAILURES_PER_USER,
    ]


class LoginThrottleHandler(AxesDatabaseHandler):
    """Axes compares one number with AXES_FAILURE_LIMIT; each counter is scaled so that it
    reaches that limit exactly when it reaches its own."""

    def get_failures(self, request, credentials: dict | None = None) -> int:
        common = settings.AXES_FAILURE_LIMIT
        worst = 0
        counters = zip(self.get_user_attempts(request, credentials), _limits(), strict=True)
        for attempts, own in counters:
            failures = attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            worst = max(worst, failures * common // own)
        return worst


def client_address(request: HttpRequest) -> str:
    """The address a lockout counts: the connection's, or behind TRUSTED_PROXY_COUNT reverse
    proxies the entry the outermost of them appended to X-Forwarded-For (entries to its left
    come from the client and may be forged). Without this, every user behind a TLS proxy
    would share the proxy's address and one guesser would lock them all out."""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        forwarded = [entry.strip() for entry in forwarded if entry.strip()]
        if len(forwarded) >= hops:
            try:  # the column is an IP address (inet on PostgreSQL)
                return _counted(ipaddress.ip_address(forwarded[-hops]))
            except ValueError:
                pass
    address = request.META.get("REMOTE_ADDR", "")
    try:
        return _counted(ipaddress.ip_address(address))
    except ValueError:
        return address


def _counted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An IPv6 address counts as its /64 (written as the network's first address, the column
    takes no prefix): one host usually holds a whole /64, and with an address a try it passed
    every address limit, spraying all users and locking any one out. IPv4 inside IPv6 (a
    dual-stack socket) counts as the IPv4 address. As bounces.listener.peer_key does."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address)
    return str(address)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """The login page again, with what happened and when to try again (HTTP 429)."""
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    retry_at = timezone.localtime() + datetime.timedelta(minutes=minutes)
    response = render(
        request,
        "registration/login.html",
        {
            # Unbound: validating the posted form again would count one more failure.
            "form": AuthenticationForm(request, initial={"username": request.POST.get("username")}),
            "lockout": {"minutes": minutes, "retry_at": retry_at},
            "next": request.POST.get("next", ""),
        },
        status=429,
    )
    response["Retry-After"] = str(minutes * 60)
    return response
