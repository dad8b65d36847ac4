"""The staff editor in Debian's Chromium under the app's Content-Security-Policy (any violation
fails the test): a script written into a template is shown as text in the preview and in the
composer, never run; save and reset work without inline script."""

from __future__ import annotations

import pytest

from mail_templates.models import MailTemplate
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.test_browser import TIMEOUT_MS, _login

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("transactional_db"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

SCRIPT = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def test_staff_edit_preview_save_and_reset_with_a_script_shown_as_text(chromium, live_server):
    factories.company()
    staff = factories.user("STAFF", is_staff=True, name="Stefan Staff")
    customer = invoice_factories.customer("Smith Ltd", language="en")
    invoice = invoice_factories.invoice("FV/21/2026", customer=customer)
    base = live_server.url
    context = chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, base, staff.code)
        with page.expect_navigation():
            page.get_by_role("link", name="Mail templates").click()
        with page.expect_navigation():
            page.locator('a[href="/staff/templates/invoice/en/"]').click()
        page.get_by_label("Subject").fill("Invoice {{ invoice.number }} {{ user.name }}")
        page.get_by_label("Body").fill(f"{SCRIPT}\n{{{{ customer.name }}}}")
        page.get_by_label("Invoice number").fill("FV/21/2026")
        with page.expect_navigation():
            page.get_by_role("button", name="Preview").click()
        assert page.locator(".preview-subject").inner_text() == "Invoice FV/21/2026 Stefan Staff"
        assert page.locator(".preview-body").inner_text() == f"{SCRIPT}\nSmith Ltd"
        assert not MailTemplate.objects.exists()  # a preview saves nothing

        with page.expect_navigation():
            page.get_by_role("button", name="Save").click()
        assert page.get_by_role("status").inner_text() == "The template is saved."
        assert MailTemplate.objects.get().body == f"{SCRIPT}\n{{{{ customer.name }}}}"

        page.goto(f"{base}/invoices/{invoice.pk}/send/")
        assert page.locator("#id_body").input_value() == f"{SCRIPT}\nSmith Ltd"
        assert page.get_by_label("Subject").input_value() == "Invoice FV/21/2026 Stefan Staff"
        assert page.evaluate("window.pwned") is None

        page.goto(f"{base}/staff/templates/invoice/en/")
        with page.expect_navigation():
            page.get_by_role("button", name="Reset to default").click()
        assert not MailTemplate.objects.exists()
        assert page.get_by_label("Subject").input_value() == "Invoice {{ invoice.number }}"
        assert page.evaluate("window.pwned") is None
    finally:
        context.close()
