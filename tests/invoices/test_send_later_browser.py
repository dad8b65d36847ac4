"""Issue 12, done when: "send at" holds a message until its time. In Debian's Chromium, a user
whose card says New York sends an invoice with the composer's "Send at" a few seconds ahead,
typed as New York time: the invoice's history says "scheduled for", nothing reaches the server
before the time, and the mail arrives once after it (the real worker, the plain test server as
the platform relay). Any CSP violation fails the test."""

from __future__ import annotations

import time
import zoneinfo
from datetime import timedelta

import pytest
from django.utils import timezone

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

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
HOLD = 5  # seconds between the click and the time to send


def test_send_at_holds_the_invoice_until_its_time(chromium, live_server, smtp_servers):
    server = smtp_servers.plain
    factories.company()
    user = factories.user("SENDER", email="sender@acme.example", time_zone="America/New_York")
    factories.profile(user, mode=SenderMode.DEFAULT)
    customer = invoice_factories.customer("Smith Ltd", emails=["ap@smith.example"], language="en")
    invoice = invoice_factories.invoice("FV/50/2026", customer=customer)

    context = chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, live_server.url, user.code)
        page.goto(f"{live_server.url}/invoices/{invoice.pk}/send/")
        send_at = page.get_by_label("Send at")
        assert send_at.get_attribute("type") == "datetime-local"
        assert "Your time zone: America/New_York." in page.content()
        # The input steps by the minute (seconds do not matter to a person); a hold of a few
        # seconds needs seconds, so this test lets the input take them.
        send_at.evaluate("input => input.setAttribute('step', '1')")
        wanted = (timezone.now() + timedelta(seconds=HOLD)).replace(microsecond=0)
        send_at.fill(wanted.astimezone(NEW_YORK).strftime("%Y-%m-%dT%H:%M:%S"))
        with page.expect_navigation():
            page.get_by_role("button", name="Send").click()
        assert page.url == f"{live_server.url}/invoices/{invoice.pk}/"
        assert "will be sent at" in page.locator(".messages .message.success").inner_text()
        row = page.locator("tr.history-row").first
        assert "state-queued" in row.get_attribute("class")
        assert row.locator(".scheduled").inner_text().startswith("scheduled for")

        [message] = OutgoingMessage.objects.all()
        assert message.send_after == wanted  # typed as New York time, the same instant
        while (wanted - timezone.now()).total_seconds() > 0.5:
            assert not server.messages, "sent before its time"
            time.sleep(0.2)
        assert not server.messages

        [mail] = server.wait_for(1, timeout=15)
        deadline = time.monotonic() + 10
        while "state-sent" not in page.locator("tr.history-row").first.get_attribute("class"):
            assert time.monotonic() < deadline, page.content()
            time.sleep(0.3)
            page.reload()
    finally:
        context.close()

    assert mail.message["Subject"] == "Invoice FV/50/2026"
    message.refresh_from_db()
    assert message.state == MessageState.SENT and message.sent_at >= wanted
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.SENT
    time.sleep(0.3)
    assert len(server.messages) == 1  # once
