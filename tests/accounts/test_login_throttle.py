"""Login throttling (django-axes, accounts/throttle.py): counted in the database, each counter
with its own limit, explained on the login page, lifted by staff. The attacker's view (100
wrong passwords, sprays) is in tests/reliability/test_attacks_defaults.py."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.test import Client

from tests import factories

pytestmark = pytest.mark.django_db


def _attempt(code: str, password: str, address: str = "203.0.113.5", **headers):
    client = Client(REMOTE_ADDR=address, **headers)
    response = client.post("/accounts/login/", {"username": code, "password": password})
    return response, "_auth_user_id" in client.session


def test_the_lockout_is_explained_and_holds_the_right_password(settings, english):
    factories.user("EWA")
    limit = settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS
    for _ in range(limit - 1):
        response, _ = _attempt("EWA", "wrong")
        assert response.status_code == 200  # the usual "wrong password"

    response, _ = _attempt("EWA", "wrong")

    assert response.status_code == 429
    assert response["Retry-After"] == str(settings.LOGIN_LOCKOUT_MINUTES * 60)
    page = response.content.decode()
    assert "Too many failed logins" in page and "Ask your administrator" in page
    assert 'value="EWA"' in page  # the user code stays in the form
    response, logged_in = _attempt("EWA", factories.LOGIN_PASSWORD)
    assert response.status_code == 429 and not logged_in


def test_the_message_is_in_the_user_s_language(settings):
    factories.user("EWA")
    for _ in range(settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS):
        response, _ = _attempt("EWA", "wrong", HTTP_ACCEPT_LANGUAGE="pl")
    assert "Zbyt wiele nieudanych logowań" in response.content.decode()


def test_a_user_locked_from_one_address_logs_in_from_another(settings):
    factories.user("EWA")
    for _ in range(settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS):
        _attempt("EWA", "wrong", "203.0.113.5")
    assert _attempt("EWA", factories.LOGIN_PASSWORD, "198.51.100.7")[1]


def test_staff_unlock_in_the_admin(settings, client):
    factories.user("EWA")
    for _ in range(settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS):
        _attempt("EWA", "wrong")
    [attempt] = AccessAttempt.objects.filter(username="EWA")
    client.force_login(factories.user("ROOT", is_staff=True, is_superuser=True))

    listed = client.get("/admin/axes/accessattempt/")
    deleted = client.post(
        f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"}, follow=True
    )

    assert listed.status_code == 200 and "EWA" in listed.content.decode()
    assert deleted.status_code == 200
    assert _attempt("EWA", factories.LOGIN_PASSWORD)[1]


def test_behind_a_proxy_each_client_has_its_own_address(settings):
    """Every request comes from the proxy (10.0.0.1); the proxy appends the client's address
    to X-Forwarded-For, after whatever the client sent there."""
    settings.TRUSTED_PROXY_COUNT = 1
    factories.user("EWA")
    guesser = {"HTTP_X_FORWARDED_FOR": "203.0.113.5"}
    for index in range(settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS):
        # A forged entry to the left changes nothing: the proxy's own entry counts.
        forged = {"HTTP_X_FORWARDED_FOR": f"192.0.2.{index}, 203.0.113.5"}
        _attempt("EWA", "wrong", "10.0.0.1", **(forged if index % 2 else guesser))
    assert not _attempt("EWA", factories.LOGIN_PASSWORD, "10.0.0.1", **guesser)[1]
    ewa = {"HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    assert _attempt("EWA", factories.LOGIN_PASSWORD, "10.0.0.1", **ewa)[1]
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}


def test_an_ipv6_network_counts_as_one_address_direct_or_behind_a_proxy(settings):
    """A host holds a whole /64: each of its addresses is the same guesser. An IPv4 address
    inside IPv6 (a dual-stack socket) is that IPv4 address."""
    factories.user("OLA")
    for index in range(settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS):
        _attempt("OLA", "wrong", f"2001:db8:1:2::{index + 1:x}")
    assert not _attempt("OLA", factories.LOGIN_PASSWORD, "2001:db8:1:2:ffff::9")[1]
    settings.TRUSTED_PROXY_COUNT = 1
    proxied = {"HTTP_X_FORWARDED_FOR": "2001:db8:1:2:abcd::1"}
    assert not _attempt("OLA", factories.LOGIN_PASSWORD, "10.0.0.1", **proxied)[1]
    assert _attempt("OLA", factories.LOGIN_PASSWORD, "2001:db8:1:3::1")[1], "another /64"
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"2001:db8:1:2::"}
    settings.TRUSTED_PROXY_COUNT = 0
    factories.user("PIA")
    for _ in range(settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS):
        _attempt("PIA", "wrong", "::ffff:198.51.100.8")
    assert not _attempt("PIA", factories.LOGIN_PASSWORD, "198.51.100.8")[1]


def test_tries_refused_by_a_lockout_do_not_lock_the_user_out(settings):
    """A guesser locked out at one user goes on trying from the same address: the refused tries
    add nothing, so the user's own counter (any address) is not filled by them."""
    factories.user("ROOT", is_staff=True)
    for _ in range(3 * settings.LOGIN_FAILURES_PER_USER):
        _attempt("ROOT", "wrong", "203.0.113.66")
    assert _attempt("ROOT", factories.LOGIN_PASSWORD, "198.51.100.1")[1]
