"""The card in a real browser: Debian's Chromium driven by Playwright (sync API).

Acceptance: log in, open the card, switch to SMTP, enter smtp.gmail.com:465, SSL, a login and
a Google app password with spaces, save and reload. The password never comes back in the
HTML, the database column holds only ciphertext, and `sender show` reports the normalized
values. The SMTP fields appear through CSS `:has()` alone, so the same works with JavaScript
turned off.
"""

from __future__ import annotations

import io
import json
import random
import string

import pytest
from django.core.management import call_command
from django.db import connection

from accounts.models import User
from smtp_settings import crypto
from smtp_settings.models import SenderProfile
from tests import factories

pytestmark = [
    pytest.mark.browser,
    # whitenoise warns that STATIC_ROOT was never collected; live_server serves from finders.
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

TIMEOUT_MS = 5_000


def _app_password() -> tuple[str, str]:
    """A fresh Google-style app password: (as Google shows it, as it must be stored)."""
    rng = random.SystemRandom()
    letters = "".join(rng.choice(string.ascii_lowercase) for _ in range(16))
    shown = " ".join(letters[i : i + 4] for i in range(0, 16, 4))
    return shown, letters


def _login(page, base_url: str, code: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", code)
    page.fill("#id_password", factories.LOGIN_PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit].primary")
    assert page.url.rstrip("/").endswith("/accounts/card"), page.url


def _switch_save_and_check(browser, base_url: str, *, javascript: bool) -> None:
    code = "BROWSER"
    factories.user(code, email="piotr@acme.example")
    gmail_login = "piotr.nowak@gmail.com"
    shown, stored = _app_password()

    context = browser.new_context(
        java_script_enabled=javascript,
        locale="en-US",
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, base_url, code)

        # The card, in Default mode: the SMTP part is hidden by CSS.
        page.goto(f"{base_url}/accounts/card/")
        form = page.locator("form.card-form")
        server = form.locator('input[name="server"]')
        if not javascript:
            # Proof that scripts really are off: <noscript> content is rendered as elements.
            assert page.locator("form.lang noscript").count() == 1
            assert page.locator("form.lang button[type=submit]").is_visible()
        assert form.locator('select[name="mode"]').input_value() == "default"
        assert server.count() == 1
        assert server.is_hidden(), "the SMTP server field shows before SMTP is chosen"
        assert form.locator('input[name="password"]').is_hidden()

        # Choosing SMTP shows the fields with no script running (CSS :has()).
        form.locator('select[name="mode"]').select_option("smtp")
        server.wait_for(state="visible")
        assert server.is_visible()
        assert form.locator('select[name="security"]').is_visible()
        assert form.locator('input[name="login"]').is_visible()
        assert form.locator('input[name="password"]').is_visible()
        assert form.locator(".for-default").first.is_hidden()

        server.fill("smtp.gmail.com:465")
        form.locator('select[name="security"]').select_option("ssl")
        form.locator('input[name="login"]').fill(gmail_login)
        form.locator('input[name="password"]').fill(shown)
        with page.expect_navigation():
            form.locator("button[type=submit].primary").click()

        assert page.locator(".message.success").count() == 1, page.content()
        assert not page.locator(".has-error").count(), page.content()
        after_save = page.content()
        page.reload()
        html = page.content()

        # The page after saving and after reloading: no password, with or without spaces.
        for text in (after_save, html):
            assert shown not in text
            assert stored not in text
        assert page.locator('select[name="mode"]').input_value() == "smtp"
        assert server.is_visible()
        assert server.input_value() == "smtp.gmail.com:465"
        assert page.locator('select[name="security"]').input_value() == "ssl"
        assert page.locator('input[name="login"]').input_value() == gmail_login
        assert page.locator('input[name="password"]').input_value() == ""
        assert page.locator(".password-state").inner_text() == "A password is stored."
    finally:
        context.close()

    # The column itself, read without the ORM: Fernet ciphertext only.
    profiles = connection.ops.quote_name(SenderProfile._meta.db_table)
    users = connection.ops.quote_name(User._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.password_encrypted FROM {profiles} p "  # noqa: S608 (names from _meta)
            f"JOIN {users} u ON u.id = p.user_id WHERE u.code = %s",
            [code],
        )
        rows = cursor.fetchall()
    assert len(rows) == 1
    column = rows[0][0]
    assert column.startswith("gAAAAA"), column
    assert shown not in column
    assert stored not in column
    assert crypto.decrypt(column) == stored

    # `sender show` reports the normalized values and never the secret.
    out = io.StringIO()
    call_command("sender", "show", code, "--json", stdout=out)
    output = out.getvalue()
    assert shown not in output
    assert stored not in output
    shown_config = json.loads(output)
    assert shown_config["mode"] == "smtp"
    assert shown_config["server"] == "smtp.gmail.com"
    assert shown_config["port"] == 465
    assert shown_config["security"] == "ssl"
    assert shown_config["login"] == gmail_login
    assert shown_config["password_set"] is True


def test_card_smtp_gmail_app_password(chromium, live_server):
    _switch_save_and_check(chromium, live_server.url, javascript=True)


def test_card_smtp_without_javascript(chromium, live_server):
    _switch_save_and_check(chromium, live_server.url, javascript=False)
