"""Presets from MX on the card (issue 14, item 2), against the local DNS server.

A user types their e-mail and presses "Fill in from my e-mail's provider": Google MX fills
Gmail's server, port, SSL and the login; Microsoft 365 MX picks Microsoft 365 OAUTH; anything
else fills nothing and says so. Nothing is saved by it. An abuser's goal tried: making the
platform look up DNS without end with the button.
"""

from __future__ import annotations

import re

import pytest

from smtp_settings.models import SenderMode, SenderProfile
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english", "platform_dns")]
CARD_URL = "/accounts/card/"


@pytest.fixture
def ewa(client):
    user = factories.user("EWA", name="Ewa", email="ewa@old.test")
    factories.profile(user, mode=SenderMode.DEFAULT)
    client.force_login(user)
    return user


def _press(client, email: str, **fields) -> str:
    data = {"name": "Ewa", "email": email, "mode": "default", "action": "preset", **fields}
    response = client.post(CARD_URL, data)
    assert response.status_code == 200
    return response.content.decode()


def _value(html: str, name: str) -> str | None:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"[^>]*name="{name}"', html
    )
    return found[1] if found else None


def _selected(html: str, name: str) -> str | None:
    select = re.search(rf'<select name="{name}".*?</select>', html, re.S)
    found = select and re.search(r'<option value="([^"]*)"[^>]*selected', select[0])
    return found[1] if found else None


def test_google_mx_picks_google_oauth_when_the_platform_has_a_google_client(client, ewa, settings):
    settings.GOOGLE_CLIENT_ID, settings.GOOGLE_CLIENT_SECRET = "client.apps.test", "s"
    html = _press(client, "ewa@rejects.test")
    assert "Save, then click “Sign in with Google”" in html
    assert _selected(html, "mode") == "google"
    assert _value(html, "login") == "ewa@rejects.test"
    assert SenderProfile.objects.get(user=ewa).mode == SenderMode.DEFAULT  # nothing saved


def test_google_mx_fills_gmail_and_saves_nothing(client, ewa, settings):
    html = _press(client, "ewa@rejects.test")
    assert "Filled in for Gmail / Google Workspace" in html
    assert _selected(html, "mode") == "smtp"
    assert _value(html, "server") == settings.GOOGLE_SMTP_SERVER
    assert _selected(html, "security") == "ssl"
    assert _value(html, "login") == "ewa@rejects.test"
    assert _value(html, "email") == "ewa@rejects.test"  # the card as typed
    stored = SenderProfile.objects.get(user=ewa)
    assert stored.mode == SenderMode.DEFAULT and not stored.host  # nothing saved
    ewa.refresh_from_db()
    assert ewa.email == "ewa@old.test"


def test_microsoft_mx_picks_microsoft_365_oauth(client, ewa):
    html = _press(client, "ewa@monitors.test")
    assert "Filled in for Microsoft 365" in html
    assert _selected(html, "mode") == "microsoft365"
    assert _value(html, "login") == "ewa@monitors.test"


def test_another_provider_fills_nothing_and_says_so(client, ewa):
    html = _press(client, "ewa@includes.test", server="", login="")
    assert "not one the card knows" in html
    assert _selected(html, "mode") == "default"


def test_the_button_costs_one_lookup_per_domain_and_hour_and_is_limited(
    client, ewa, settings, platform_dns
):
    settings.DOMAIN_CHECKS_PER_HOUR = 2
    _press(client, "ewa@rejects.test")
    before = platform_dns.count()
    for _ in range(5):  # the same domain: answered from the cache
        assert "Filled in for Gmail" in _press(client, "ewa@rejects.test")
    assert platform_dns.count() == before
    _press(client, "ewa@monitors.test")  # the second fresh lookup of the hour
    before = platform_dns.count()
    html = _press(client, "x@sub.rejects.test")  # a third: refused, no DNS
    assert "the most allowed" in html
    assert platform_dns.count() == before


def test_the_provider_help_is_outside_every_mode_section(client, ewa):
    """Reachable from every mode: not inside a `.mode` block the CSS hides."""
    html = client.get(CARD_URL).content.decode()
    presets = html[html.index('<div class="presets">') :]
    assert "Google Gmail" in presets and "Microsoft 365" in presets
    before = html[: html.index('<div class="presets">')]
    assert 'class="provider-help"' not in before  # no copy hidden in a mode section


def test_a_login_other_than_the_card_email_is_explained(client):
    user = factories.user("PIOTR", email="piotr@acme.test")
    factories.profile(user, host="smtp.gmail.com", port=465, login="piotr.private@gmail.com")
    client.force_login(user)
    html = client.get(CARD_URL).content.decode()
    assert "you sign in as piotr.private@gmail.com" in html
    assert "“Send mail as”" in html
