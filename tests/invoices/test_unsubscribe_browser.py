"""A letter's unsubscribe page in Debian's Chromium (Playwright): opening the link changes
nothing, the button opts the customer out, without a login and in the reader's language. Any
CSP violation fails the test (the page has no script of its own)."""

from __future__ import annotations

import pytest

from invoices.models import Customer, Letter
from invoices.unsubscribe import unsubscribe_url
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.test_browser import TIMEOUT_MS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("transactional_db"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


@pytest.mark.parametrize(
    ("locale", "question", "button", "done"),
    [
        (
            "en-US",
            "Stop receiving letters from Acme Sp. z o.o.",
            "Unsubscribe",
            "You are unsubscribed",
        ),
        (
            "pl-PL",
            "Zrezygnować z otrzymywania listów od Acme Sp. z o.o.",
            "Wypisz się",
            "Wypisano Cię",
        ),
    ],
)
def test_open_the_link_then_press_the_button(
    chromium, live_server, settings, locale, question, button, done
):
    settings.PUBLIC_BASE_URL = live_server.url
    factories.company("Acme Sp. z o.o.")
    customer = invoice_factories.customer("Kowalski")
    letter = Letter.objects.create(subject="News", body="Hi", created_by=factories.user("ANNA"))
    url = unsubscribe_url(customer_id=customer.pk, letter_id=letter.pk)

    context = chromium.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(url)
        assert question in page.locator("main").inner_text()
        assert Customer.objects.get(pk=customer.pk).letters_opted_out_at is None  # a GET
        with page.expect_navigation():
            page.get_by_role("button", name=button).click()
        assert page.get_by_role("heading", name=done).is_visible()
        assert page.url == url
    finally:
        context.close()
    assert Customer.objects.get(pk=customer.pk).letters_opted_out_at is not None
