"""Microsoft 365 sign-in from the card in a real browser: Debian's Chromium through Playwright.

Acceptance (S5.4): the user clicks "Authenticate with Microsoft 365" on the card, completes
the provider's sign-in form inside the popup, the popup closes itself and the card shows
"Microsoft 365 has been authenticated." with the address. Without JavaScript the same link
runs as a full-page redirect and lands back on the card. A user who denies at the provider
sees why in the popup, and nothing is stored.

The provider is tests/m365_fixtures.py's local OpenID stand-in for Entra ID, served over TLS
with a certificate from the test CA. Chromium does not read SSL_CERT_FILE or the test CA, so
the browser context is created with Playwright's `ignore_https_errors=True`: only for these
contexts, which reach nothing but the app on loopback and the stand-in.
"""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection

from accounts.models import User
from outbox.models import OutgoingMessage
from smtp_settings import crypto
from smtp_settings.models import OAuthConnection, SenderProfile
from tests import factories
from tests.m365_fixtures import REDIRECT_PATH, REDIRECT_URI_PATTERNS
from tests.outbox.waiting import settled

pytestmark = [
    pytest.mark.browser,
    # whitenoise warns that STATIC_ROOT was never collected; live_server serves from finders.
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
    # msal advises form_post; the stand-in (and the app) use the query response mode.
    pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended"),
]

TIMEOUT_MS = 5_000
SUCCESS = "Microsoft 365 has been authenticated."
REFUSED = "The permissions were not confirmed"
CONNECT_LABEL = "Authenticate with Microsoft 365"


@pytest.fixture
def m365_site(m365_settings, live_server):
    """The live server, checked to be reached by a host the provider allows as redirect URI:
    the callback URL the app builds (request.build_absolute_uri) is this base URL + the path."""
    base_url = live_server.url
    callback = f"{base_url}{REDIRECT_PATH}"
    assert any(re.fullmatch(p, callback) for p in REDIRECT_URI_PATTERNS), (
        f"{callback} is not a redirect URI the stand-in provider accepts"
    )
    return base_url


def _browser_context(browser, *, javascript: bool = True):
    context = browser.new_context(
        java_script_enabled=javascript,
        locale="en-US",
        viewport={"width": 1280, "height": 900},
        # The stand-in's certificate comes from the test CA, which Chromium does not know.
        ignore_https_errors=True,
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def _m365_user(code: str, address: str) -> User:
    user = factories.user(code, email=address)
    factories.profile(user, mode="microsoft365", login=address)
    return user


def _login_and_open_card(page, base_url: str, code: str) -> None:
    """Log in through the real login form; the card is where it lands."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", code)
    page.fill("#id_password", factories.LOGIN_PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit].primary")
    assert page.url.rstrip("/").endswith("/accounts/card"), page.url
    assert page.locator('select[name="mode"]').input_value() == "microsoft365"


def _connect_link(page):
    link = page.locator("a.m365-connect")
    assert link.count() == 1, page.content()
    assert link.is_visible()
    assert link.inner_text().strip() == CONNECT_LABEL
    return link


def _assert_on_sign_in_form(window, provider) -> None:
    assert window.url.startswith(provider.base_url + "/"), window.url
    window.locator('input[name="sub"]').wait_for(state="visible")


def _stored_column(code: str) -> str:
    """token_encrypted read without the ORM: what the database really holds."""
    table = connection.ops.quote_name(OAuthConnection._meta.db_table)
    users = connection.ops.quote_name(User._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.token_encrypted FROM {table} c "  # noqa: S608 (names from _meta)
            f"JOIN {users} u ON u.id = c.user_id WHERE u.code = %s",
            [code],
        )
        rows = cursor.fetchall()
    assert len(rows) == 1, rows
    return rows[0][0]


def _assert_connected(code: str, address: str, pages_html: list[str]) -> None:
    """One connection for `address`, its token cache only as ciphertext, no token in any page."""
    stored = OAuthConnection.objects.select_related("user").get(user__code=code)
    assert stored.address == address
    assert not stored.needs_reconnect
    assert SenderProfile.objects.get(user=stored.user).login == address

    column = _stored_column(code)
    assert column.startswith("gAAAAA"), column[:40]
    cache = json.loads(crypto.decrypt(column))
    secrets = [
        entry["secret"]
        for kind in ("AccessToken", "RefreshToken", "IdToken")
        for entry in cache.get(kind, {}).values()
    ]
    assert len(cache.get("AccessToken", {})) == 1
    assert len(cache.get("RefreshToken", {})) == 1
    for secret in secrets:
        assert len(secret) >= 16
        assert secret not in column
        for html in pages_html:
            assert secret not in html


def test_connect_in_popup(chromium, m365_site, m365_settings):
    provider = m365_settings.provider
    code, address = "M365POPUP", "anna@contoso.test"
    provider.add_user("anna", address)
    _m365_user(code, address)

    context = _browser_context(chromium)
    try:
        page = context.new_page()
        _login_and_open_card(page, m365_site, code)
        card_url = page.url
        assert SUCCESS not in page.content()

        with page.expect_popup() as popup_info:
            _connect_link(page).click()
        popup = popup_info.value
        popup.wait_for_load_state()
        _assert_on_sign_in_form(popup, provider)
        assert page.url == card_url, "the link navigated the card instead of opening a popup"

        # Authorize: the popup comes back to the callback, tells the card and closes itself;
        # the card reloads.
        popup.fill('input[name="sub"]', "anna")
        with page.expect_navigation(), popup.expect_event("close"):
            popup.get_by_role("button", name="Authorize").click()
        assert popup.is_closed()
        assert page.url == card_url

        status = page.locator(".m365-status .ok")
        status.wait_for(state="visible")
        assert SUCCESS in status.inner_text()
        assert status.locator("strong").inner_text() == address
        assert page.locator("a.m365-connect").inner_text().strip() == (
            "Authenticate with Microsoft 365 again"
        )
        assert page.locator("form.m365-disconnect").count() == 1
        html = page.content()
    finally:
        context.close()

    _assert_connected(code, address, [html])
    assert provider.token_requests == ["authorization_code"]


def test_connect_without_javascript(chromium, m365_site, m365_settings):
    provider = m365_settings.provider
    code, address = "M365NOJS", "bartek@contoso.test"
    provider.add_user("bartek", address)
    _m365_user(code, address)

    context = _browser_context(chromium, javascript=False)
    try:
        page = context.new_page()
        _login_and_open_card(page, m365_site, code)
        card_url = page.url
        # Proof that scripts really are off: <noscript> content is rendered as elements.
        assert page.locator("form.lang noscript").count() == 1

        # The link itself: the whole page goes to the provider and comes back to the card.
        with page.expect_navigation():
            _connect_link(page).click()
        assert len(context.pages) == 1, "a popup opened with JavaScript off"
        _assert_on_sign_in_form(page, provider)
        page.fill('input[name="sub"]', "bartek")
        with page.expect_navigation(url=card_url):
            page.get_by_role("button", name="Authorize").click()

        message = page.locator(".message.success")
        assert message.count() == 1, page.content()
        assert message.inner_text().strip() == SUCCESS
        status = page.locator(".m365-status .ok")
        assert SUCCESS in status.inner_text()
        assert status.locator("strong").inner_text() == address
        html = page.content()
    finally:
        context.close()

    _assert_connected(code, address, [html])


def test_popup_consent_denied(chromium, m365_site, m365_settings):
    provider = m365_settings.provider
    code, address = "M365DENY", "celina@contoso.test"
    provider.add_user("celina", address)
    _m365_user(code, address)

    context = _browser_context(chromium)
    try:
        page = context.new_page()
        _login_and_open_card(page, m365_site, code)
        card_url = page.url

        with page.expect_popup() as popup_info:
            _connect_link(page).click()
        popup = popup_info.value
        popup.wait_for_load_state()
        _assert_on_sign_in_form(popup, provider)

        # Deny: the popup comes back to the callback with error=access_denied and explains.
        with popup.expect_navigation(url=re.compile(re.escape(REDIRECT_PATH))):
            popup.get_by_role("button", name="Deny").click()
        result = popup.locator(".m365-result")
        result.wait_for(state="visible")
        assert result.get_attribute("data-ok") == "false"
        assert REFUSED in result.locator("[role=alert]").inner_text()
        assert "access_denied" in result.inner_text()
        # It stays open so the user can read it; the card did not pretend otherwise.
        popup.wait_for_timeout(300)
        assert not popup.is_closed(), "the popup closed before the user could read why"
        assert page.url == card_url
        assert SUCCESS not in page.content()
        assert page.locator("a.m365-connect").inner_text().strip() == CONNECT_LABEL
    finally:
        context.close()

    assert not OAuthConnection.objects.exists()
    assert SenderProfile.objects.get(user__code=code).login == address
    assert provider.token_requests == []


AUTH_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
)


def test_smtp_auth_disabled_switches_to_graph_in_one_click(
    chromium, m365_site, m365_settings, celery_worker, transactional_db
):
    """The tenant has SMTP AUTH off (5.7.139): the connection test says so and the card offers
    Microsoft Graph; one click, the test e-mail goes out through Graph."""
    provider, graph = m365_settings.provider, m365_settings.graph
    code, address = "M365GRAPH", "dorota@contoso.test"
    provider.add_user("dorota", address)
    _m365_user(code, address)
    m365_settings.smtp.script("AUTH", AUTH_DISABLED, times=None)

    context = _browser_context(chromium)
    try:
        page = context.new_page()
        _login_and_open_card(page, m365_site, code)
        with page.expect_popup() as popup_info:
            _connect_link(page).click()
        popup = popup_info.value
        popup.wait_for_load_state()
        popup.fill('input[name="sub"]', "dorota")
        with page.expect_navigation(), popup.expect_event("close"):
            popup.get_by_role("button", name="Authorize").click()
        assert page.locator(".graph-offer").count() == 0  # nothing refused yet

        with page.expect_navigation():
            page.get_by_role("button", name="Test connection").click()
        assert "SMTP sign-in (SMTP AUTH) turned off" in page.content()
        offer = page.locator(".graph-offer")
        assert offer.is_visible() and "5.7.139" in offer.inner_text()

        with page.expect_navigation():
            offer.get_by_role("button", name="Send through Microsoft Graph").click()
        assert "Your mail is sent through Microsoft Graph now" in page.content()
        assert page.locator(".graph-on").is_visible()
        assert page.locator(".graph-offer").count() == 0

        with page.expect_navigation():
            page.get_by_role("button", name="Test connection").click()
        assert "Connection test passed" in page.content(), page.content()
        with page.expect_navigation():
            page.get_by_role("button", name="Send test e-mail").click()
        [received] = graph.wait_for(1, timeout=30)
    finally:
        context.close()

    assert received.user == address and received.recipients == [address]
    message = settled(OutgoingMessage.objects.get(user__code=code))
    assert message.state == "sent", message.last_reply
    assert message.last_reply.startswith("202 Accepted by Microsoft Graph")
