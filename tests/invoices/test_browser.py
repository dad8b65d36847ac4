"""The job page in a real browser: "Send all unsent", then the progress bar moves to 100 % with
no reload (Debian's Chromium through Playwright, the real worker, the plain test server)."""

from __future__ import annotations

import pytest

from outbox.models import BulkJob
from tests.invoices import factories as invoice_factories
from tests.test_browser import TIMEOUT_MS, _login

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("celery_worker", "transactional_db"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def test_send_all_unsent_and_watch_the_progress_reach_100(chromium, live_server, smtp_servers):
    server = smtp_servers.plain
    server.stall_at("MAIL", 0.4, times=None)  # ~2 s for the job: the bar is seen moving
    invoice_factories.smtp_sender("ANNA", server)
    invoices = invoice_factories.invoices(5)

    context = chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, live_server.url, "ANNA")
        page.goto(f"{live_server.url}/invoices/")
        with page.expect_navigation():
            page.get_by_role("button", name="Send all unsent").click()
        job = BulkJob.objects.get()
        assert page.url == f"{live_server.url}/jobs/{job.pk}/"

        # A mark that a reload or a navigation would wipe out, and a record of the bar's values.
        page.evaluate(
            """() => {
                window.stillTheSamePage = true;
                window.barValues = [];
                const bar = document.querySelector("progress");
                window.setInterval(() => window.barValues.push(bar.value), 50);
            }"""
        )
        bar = page.get_by_role("progressbar", name="Progress")
        page.wait_for_function(
            "() => document.querySelector('progress').value === 100", timeout=20_000
        )
        page.wait_for_function(
            "() => document.querySelectorAll('tr.message-row.state-sent').length === 5"
        )

        assert page.evaluate("() => window.stillTheSamePage") is True
        values = page.evaluate("() => window.barValues")
        assert any(0 < value < 100 for value in values), values  # seen on its way
        assert bar.get_attribute("value") == "100"
        assert page.locator('[data-field="state"]').inner_text() == "Finished."
        assert page.locator('[data-field="sent"]').inner_text() == "5"
        assert page.locator('[data-field="remaining"]').inner_text() == "0"
        # The Cancel button went with the refreshed parts: nothing left to cancel.
        assert page.get_by_role("button", name="Cancel").count() == 0
    finally:
        context.close()
    assert len(server.wait_for(5)) == 5
    for invoice in invoices:
        invoice.refresh_from_db()
        assert invoice.send_state == "sent"
