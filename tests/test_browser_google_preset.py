"""A new user whose e-mail is at Google, in the browser (issue 14, done when).

The domain's MX is Google's in the local DNS server (tests/dns_fixtures.py, rejects.test); the
SSL test server stands in for smtp.gmail.com (GOOGLE_SMTP_SERVER points the preset at it) and
accepts the app password. The user logs in, lets the card fill in Gmail, pastes the app
password as Google shows it (with spaces), saves: mass mailing stays locked until the
connection test passes; the test e-mail arrives at that server; then the invoice list lets
them mass-mail. The scripted run takes under 60 s.
"""

from __future__ import annotations

import time

import pytest

from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.test_browser import TIMEOUT_MS, _app_password, _login

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("platform_dns"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def test_a_new_google_user_is_sending_and_mass_mailing_within_a_minute(
    chromium, live_server, smtp_servers, celery_worker, transactional_db, settings
):
    started = time.monotonic()
    gmail = smtp_servers.implicit_tls  # stands in for smtp.gmail.com:465
    settings.GOOGLE_SMTP_SERVER = f"{gmail.host}:{gmail.port}"
    address = "ewa@rejects.test"  # Google Workspace MX in the test DNS
    shown, stored = _app_password()
    gmail.users[address] = stored
    factories.company(slug="acme")
    user = factories.user("EWA", name="Ewa Nowak", email=address)
    factories.profile(user, mode=SenderMode.DEFAULT)
    invoice_factories.invoices(2)

    context = chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, live_server.url, "EWA")
        page.goto(f"{live_server.url}/accounts/card/")
        assert "Your e-mail is at Google" in page.content()

        # One click fills Gmail's server, SSL and the login; nothing is saved yet.
        with page.expect_navigation():
            page.click("button[name=action][value=preset]")
        form = page.locator("form.card-form")
        assert form.locator('select[name="mode"]').input_value() == "smtp"
        assert form.locator('input[name="server"]').input_value() == settings.GOOGLE_SMTP_SERVER
        assert form.locator('select[name="security"]').input_value() == "ssl"
        assert form.locator('input[name="login"]').input_value() == address

        form.locator('input[name="password"]').fill(shown)  # as Google shows it
        with page.expect_navigation():
            form.locator("button[type=submit].primary").click()
        assert page.locator(".message.success").count() == 1, page.content()
        assert "after a passed connection test of this server" in page.content()
        page.goto(f"{live_server.url}/invoices/")
        assert page.locator("button[value=unsent]").is_disabled()

        # The connection test passes against "smtp.gmail.com": mass mailing unlocks.
        page.goto(f"{live_server.url}/accounts/card/")
        with page.expect_navigation():
            page.click("button:has-text('Test connection')")
        assert "Connection test passed" in page.content(), page.content()
        assert "mass mailing is available now" in page.content()

        # The test e-mail arrives there, sent by the worker with the app password.
        with page.expect_navigation():
            page.click("button:has-text('Send test e-mail')")
        [received] = gmail.wait_for(1, timeout=30)
        assert received.auth_login == address
        assert received.message["From"] == f"Ewa Nowak <{address}>"

        page.goto(f"{live_server.url}/invoices/")
        assert page.locator("button[value=unsent]").is_enabled()
    finally:
        context.close()
    assert time.monotonic() - started < 60
