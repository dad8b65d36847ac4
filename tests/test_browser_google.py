"""Google sign-in from the card in a real browser: Debian's Chromium through Playwright.

Acceptance (issue 15): the user picks "Google OAUTH", saves, clicks "Sign in with Google",
completes the provider's form inside the popup; the popup closes itself and the card shows
"Google has been connected." with the address, and a test mail goes out through the XOAUTH2
server over SSL. Denying in the popup explains why and stores nothing.

The provider is tests/m365_fixtures.py's local OpenID stand-in acting as Google, over TLS with
a certificate from the test CA; the browser context ignores certificate errors for it (it
reaches nothing but the app on loopback and the stand-in), as in test_browser_microsoft365.py.
"""

from __future__ import annotations

import json
import re

import pytest

from smtp_settings import crypto
from smtp_settings.models import OAuthConnection, SenderProfile
from tests import factories
from tests.m365_fixtures import GOOGLE_REDIRECT_PATH
from tests.test_browser_microsoft365 import _browser_context

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

SUCCESS = "Google has been connected."
LABEL = "Sign in with Google"


def _login(page, base_url: str, code: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", code)
    page.fill("#id_password", factories.LOGIN_PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit].primary")
    assert page.url.rstrip("/").endswith("/accounts/card"), page.url


def test_choose_google_sign_in_in_the_popup_and_send(
    chromium, live_server, google_settings, settings
):
    provider, server = google_settings.provider, google_settings.smtp
    code, address = "GPOPUP", "anna@acme-gmail.test"
    provider.add_user("anna", address)
    factories.user(code, email=address)  # Default mode: she chooses Google herself

    context = _browser_context(chromium)
    try:
        page = context.new_page()
        _login(page, live_server.url, code)
        card_url = page.url
        assert not page.locator("a.google-connect").is_visible()  # shown for Google OAUTH only
        page.select_option('select[name="mode"]', "google")
        # The Google part shows at once (no JavaScript needed for it), the SMTP part hides.
        assert page.locator(".for-google .notice").first.is_visible()
        assert not page.locator('input[name="password"]').is_visible()
        with page.expect_navigation():
            page.get_by_role("button", name="Save", exact=True).click()
        assert page.locator('select[name="mode"]').input_value() == "google"

        link = page.locator("a.google-connect")
        assert link.inner_text().strip() == LABEL
        with page.expect_popup() as popup_info:
            link.click()
        popup = popup_info.value
        popup.wait_for_load_state()
        assert popup.url.startswith(provider.base_url + "/"), popup.url
        assert page.url == card_url, "the link navigated the card instead of opening a popup"
        popup.fill('input[name="sub"]', "anna")
        with page.expect_navigation(), popup.expect_event("close"):
            popup.get_by_role("button", name="Authorize").click()

        status = page.locator(".google-status .ok")
        status.wait_for(state="visible")
        assert SUCCESS in status.inner_text()
        assert status.locator("strong").inner_text() == address
        assert page.locator("a.google-connect").inner_text().strip() == f"{LABEL} again"

        # The card's connection test signs in over SSL with XOAUTH2 (nothing is sent).
        with page.expect_navigation():
            page.get_by_role("button", name="Test connection").click()
        assert "Connection test passed" in page.content()
        html = page.content()
    finally:
        context.close()

    stored = OAuthConnection.objects.get(user__code=code, provider="google")
    assert stored.address == address
    token = json.loads(crypto.decrypt(stored.token_encrypted))
    for secret in (token["access_token"], token["refresh_token"]):
        assert secret not in stored.token_encrypted and secret not in html
    assert SenderProfile.objects.get(user__code=code).login == address
    [attempt] = server.auth_attempts
    assert (attempt.login, attempt.success, attempt.tls) == (address, True, True)
    assert provider.token_requests == ["authorization_code"]


def test_google_popup_consent_denied(chromium, live_server, google_settings):
    provider = google_settings.provider
    code, address = "GDENY", "celina@acme-gmail.test"
    provider.add_user("celina", address)
    user = factories.user(code, email=address)
    factories.profile(user, mode="google", login=address)

    context = _browser_context(chromium)
    try:
        page = context.new_page()
        _login(page, live_server.url, code)
        with page.expect_popup() as popup_info:
            page.locator("a.google-connect").click()
        popup = popup_info.value
        popup.wait_for_load_state()
        with popup.expect_navigation(url=re.compile(re.escape(GOOGLE_REDIRECT_PATH))):
            popup.get_by_role("button", name="Deny").click()
        result = popup.locator(".oauth-result")
        result.wait_for(state="visible")
        assert result.get_attribute("data-ok") == "false"
        assert result.get_attribute("data-provider") == "google"
        assert "The permissions were not confirmed" in result.locator("[role=alert]").inner_text()
        popup.wait_for_timeout(300)
        assert not popup.is_closed()
        assert SUCCESS not in page.content()
    finally:
        context.close()

    assert not OAuthConnection.objects.exists()
    assert provider.token_requests == []
