"""Issue 12, done when: as a Default, a Directo-Reply-to and an SMTP user, open an invoice, send
it with the composer, see it arrive at the server with its PDF, and see "sent" in the invoice's
history (Debian's Chromium through Playwright, the real worker, the plain test server: the
platform relay of the worker is that server too). Any CSP violation fails the test."""

from __future__ import annotations

import time

import pytest

from invoices.models import SendState
from outbox.models import MessageState, OutgoingMessage
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.test_browser import TIMEOUT_MS, _login

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("celery_worker", "transactional_db"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def _user(mode: str, server):
    factories.company()
    if mode == SenderMode.SMTP:
        return invoice_factories.smtp_sender("SENDER", server)
    user = factories.user("SENDER", email="sender@acme.example")
    factories.profile(user, mode=mode, security="")
    return user


@pytest.mark.parametrize("mode", [SenderMode.DEFAULT, SenderMode.REPLY_TO, SenderMode.SMTP])
def test_send_an_invoice_with_the_composer_and_see_it_sent(
    chromium, live_server, smtp_servers, mode
):
    server = smtp_servers.plain
    user = _user(mode, server)
    customer = invoice_factories.customer("Smith Ltd", emails=["ap@smith.example"], language="en")
    invoice = invoice_factories.invoice("FV/12/2026", customer=customer)

    context = chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, live_server.url, user.code)
        page.goto(f"{live_server.url}/invoices/")
        with page.expect_navigation():
            page.get_by_role("link", name="FV/12/2026").click()
        assert page.url == f"{live_server.url}/invoices/{invoice.pk}/"
        with page.expect_navigation():
            page.get_by_role("link", name="Send by e-mail").click()
        assert page.get_by_label("To", exact=True).input_value() == "ap@smith.example"
        assert page.get_by_label("Subject").input_value() == "Invoice FV/12/2026"
        page.get_by_label("Cc", exact=True).fill("copy@smith.example")
        with page.expect_navigation():
            page.get_by_role("button", name="Send").click()
        assert page.url == f"{live_server.url}/invoices/{invoice.pk}/"

        [mail] = server.wait_for(1)
        deadline = time.monotonic() + 10

        def shown_sent() -> bool:
            # Both, on one page: the page reads the invoice and its history in two statements,
            # so under READ COMMITTED one load may fall between them and the worker's commit.
            row = page.locator("tr.history-row").first.get_attribute("class")
            return "state-sent" in row and "state-sent" in page.locator(
                "dd.send-state span"
            ).get_attribute("class")

        while not shown_sent():
            assert time.monotonic() < deadline, page.content()
            time.sleep(0.2)
            page.reload()
        assert page.locator("tr.history-row .message-state").first.inner_text().startswith("sent")
        assert page.locator("dd.send-state").inner_text().startswith("sent")
    finally:
        context.close()

    assert mail.message["Subject"] == "Invoice FV/12/2026"
    assert sorted(mail.rcpt_tos) == ["ap@smith.example", "copy@smith.example"]
    [pdf] = list(mail.message.iter_attachments())
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_filename() == "FV-12-2026.pdf"
    assert pdf.get_content().startswith(b"%PDF")
    [message] = OutgoingMessage.objects.all()
    assert (message.state, message.sender["mode"]) == (MessageState.SENT, mode)
    if mode == SenderMode.REPLY_TO:  # the signed VERP leaves with the single invoice
        assert mail.mail_from == message.envelope_from
        assert mail.mail_from.startswith(f"bounces+{message.pk}-")
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.SENT
    time.sleep(0.3)
    assert len(server.messages) == 1  # once


NAME = "Smith <script>document.title='owned'</script> Ltd"


def test_write_a_letter_with_an_attachment_to_a_customer_and_see_it_sent(
    chromium, live_server, smtp_servers, tmp_path
):
    """Open a customer from the list, write a letter with a file, send it, see it arrive and
    turn "sent" in the customer's history. The name carries a script: shown as text on every
    page (were it markup, the CSP's refusal of the inline script would fail the test)."""
    server = smtp_servers.plain
    user = _user(SenderMode.SMTP, server)
    customer = invoice_factories.customer(NAME, emails=["ap@smith.example"], language="en")
    attachment = tmp_path / "cennik-łódź.txt"
    attachment.write_bytes(b"price list")

    context = chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, live_server.url, user.code)
        with page.expect_navigation():
            page.get_by_role("link", name="Customers").click()
        page.get_by_label("Name or e-mail").fill("smith")
        with page.expect_navigation():
            page.get_by_role("button", name="Filter").click()
        with page.expect_navigation():
            page.get_by_role("link", name=NAME).click()
        assert page.url == f"{live_server.url}/customers/{customer.pk}/"
        assert page.locator("h1").inner_text() == NAME and page.title() != "owned"
        with page.expect_navigation():
            page.get_by_role("link", name="Write a letter").click()
        assert page.get_by_label("To", exact=True).input_value() == "ap@smith.example"
        page.get_by_label("Subject").fill("Our prices")
        page.get_by_label("Message").fill("The new price list is attached.")
        page.get_by_label("Attach files").set_input_files(str(attachment))
        with page.expect_navigation():
            page.get_by_role("button", name="Send").click()
        assert page.url == f"{live_server.url}/customers/{customer.pk}/"

        [mail] = server.wait_for(1)
        deadline = time.monotonic() + 10

        while "state-sent" not in page.locator("tr.history-row").first.get_attribute("class"):
            assert time.monotonic() < deadline, page.content()
            time.sleep(0.2)
            page.reload()
        row = page.locator("tr.history-row").first
        assert row.locator(".message-state").inner_text().startswith("sent")
        assert "Our prices" in row.locator(".about").inner_text()
    finally:
        context.close()

    assert mail.message["Subject"] == "Our prices"
    [part] = list(mail.message.iter_attachments())
    assert (part.get_filename(), part.get_content()) == ("cennik-łódź.txt", "price list")
    [message] = OutgoingMessage.objects.all()
    assert (message.state, message.related) == (MessageState.SENT, customer)
