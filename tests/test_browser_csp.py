"""The Content-Security-Policy in a real browser: the pages' own scripts still work under it,
and the watcher every browser test relies on (tests/chromium.py) does see violations.

The language menu (static/js/language.js), the admin's scripts (select all, the date
shortcuts) and the staff pages run with the policy on; tests/conftest.py fails any of these
tests on a single violation. The policy itself is checked on every page of the access matrix
in tests/reliability/test_attacks_csp.py.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

from tests import factories
from tests.test_browser import TIMEOUT_MS, _login

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def _context(chromium, **options):
    context = chromium.new_context(
        locale="en-US", viewport={"width": 1280, "height": 900}, **options
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.mark.django_db(transaction=True)
def test_the_policy_is_strict(client: Client):
    header = client.get("/accounts/login/")["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in header.split("; ")}
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["form-action"] == ["'self'"]
    assert "unsafe" not in header


def test_the_language_menu_switches_with_its_script(chromium, live_server):
    factories.user("LANG", language="en")
    context = _context(chromium)
    try:
        page = context.new_page()
        _login(page, live_server.url, "LANG")
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.locator("form.lang button[type=submit]").count() == 0  # <noscript> inert
        with page.expect_navigation():
            page.select_option("#language", "pl")
        assert page.locator("html").get_attribute("lang") == "pl"
        assert page.url.rstrip("/").endswith("/accounts/card")
        with page.expect_navigation():
            page.select_option("#language", "en")
        assert page.locator("html").get_attribute("lang") == "en"
    finally:
        context.close()


def test_the_admin_and_staff_pages_work_under_the_policy(chromium, live_server):
    factories.user("ROOT", is_staff=True, is_superuser=True)
    others = [factories.user(f"U{n}") for n in range(3)]
    factories.profile(others[0])
    base = live_server.url
    context = _context(chromium)
    try:
        page = context.new_page()
        # The admin's own login form.
        page.goto(f"{base}/admin/login/")
        page.fill("#id_username", "ROOT")
        page.fill("#id_password", factories.LOGIN_PASSWORD)
        with page.expect_navigation():
            page.click("#login-form input[type=submit]")
        assert page.locator("#site-name").count() == 1, page.content()

        # The user list: "select all" ticks every row and counts them (admin/js/actions.js).
        page.goto(f"{base}/admin/accounts/user/")
        page.check("#action-toggle")
        counter = page.locator(".action-counter")
        counter.wait_for(state="visible")
        assert "4 of 4 selected" in counter.inner_text()

        # A user's change form: the date shortcuts are the admin's scripts
        # (admin/js/admin/DateTimeShortcuts.js) adding links and handlers.
        page.goto(f"{base}/admin/accounts/user/{others[1].pk}/change/")
        date = page.locator("#id_date_joined_0")
        date.fill("")
        page.locator("#id_date_joined_0 ~ .datetimeshortcuts a", has_text="Today").click()
        assert date.input_value() != ""

        # A sender profile, the system settings (admin and staff page), the add-user form.
        for url in (
            f"/admin/smtp_settings/senderprofile/{others[0].sender_profile.pk}/change/",
            "/admin/smtp_settings/systemsettings/",
            "/admin/accounts/user/add/",
            "/settings/system/",
            f"/accounts/card/{others[2].code}/",
        ):
            response = page.goto(base + url)
            assert response.status == 200, url
    finally:
        context.close()


# -- the watcher itself ---------------------------------------------------------------------------
PAGE = (
    b"<!doctype html><title>x</title><style>p { color: red }</style>"
    b'<p style="color: blue">x</p><script>window.ran = true</script>'
    b'<img src="/none.png" onerror="window.ran = true">'
)


@pytest.fixture
def inline_site():
    """A page full of inline script and style, served under the app's own policy."""
    policy = Client().get("/accounts/login/")["Content-Security-Policy"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Security-Policy", policy)
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
@pytest.mark.csp_violations_expected
@pytest.mark.parametrize("javascript", [True, False])
def test_the_watcher_sees_every_violation(chromium, inline_site, javascript):
    """Two inline styles, an inline script and an inline handler: four refusals, seen by the
    DOM event and the console alike; with scripts off the console still sees the styles."""
    context = _context(chromium, java_script_enabled=javascript)
    try:
        page = context.new_page()
        page.goto(inline_site)
        page.wait_for_timeout(300)
        if javascript:
            assert page.evaluate("() => window.ran") is None  # refused, not run
    finally:
        context.close()
    watcher = chromium.csp
    if javascript:
        assert len(watcher.events) == 4, watcher.report()
        assert len(watcher.console) == 4, watcher.report()
        directives = sorted(v.text.split()[0] for v in watcher.events)
        assert directives == [
            "script-src-attr",
            "script-src-elem",
            "style-src-attr",
            "style-src-elem",
        ]
    else:
        assert watcher.events == []
        assert len(watcher.console) == 2, watcher.report()
    assert watcher.count() == (4 if javascript else 2)
