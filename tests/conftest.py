"""Fixtures shared by the whole suite."""

import logging
from pathlib import Path

import pytest

from tests.chromium import CHROMIUM, CHROMIUM_ARGS, WatchedBrowser

pytest_plugins = [
    "tests.smtp_fixtures",
    "tests.m365_fixtures",
    "tests.postfix_fixtures",
    "tests.processes",
    "tests.dns_fixtures",
]

# aiosmtpd warns at every AUTH; keep test output readable.
logging.getLogger("mail.log").setLevel(logging.ERROR)


@pytest.fixture
def english(settings):
    from django.utils import translation

    settings.LANGUAGE_CODE = "en"
    with translation.override("en"):
        yield


@pytest.fixture(autouse=True)
def _fast_hashing(settings) -> None:
    """Login passwords are not under test; the default hasher costs 0.2 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the module, its contexts watched for CSP violations
    (tests/chromium.py). Missing Chromium is a failure, never a skip."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. "
            "Run `make browser` (or `sudo apt-get install chromium`).",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in the main thread; Django then refuses ORM
    # calls from the test body unless told that this is intended.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield WatchedBrowser(browser)
            finally:
                browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A browser test fails on any Content-Security-Policy violation in its pages: a page that
    needs an inline script or style is broken under the policy, whatever else it shows."""
    browser = getattr(item, "funcargs", {}).get("chromium")
    if not isinstance(browser, WatchedBrowser):
        return (yield)
    browser.csp.clear()
    result = yield
    if not item.get_closest_marker("csp_violations_expected") and browser.csp.violations():
        pytest.fail(
            "Content-Security-Policy violations in the browser:\n" + browser.csp.report(),
            pytrace=False,
        )
    return result
