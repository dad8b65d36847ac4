"""Accessibility (issue 14, item 5): axe-core (axe-playwright-python) on the pages users live
in, in each card mode, with a validation error and with a flash message shown: no critical or
serious finding. Plus what axe cannot judge: the skip link works, and after a refused Save
the focus is on the message.
"""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe

from smtp_settings.models import SenderMode
from tests import factories
from tests.test_browser import _login

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]
BLOCKING = {"critical", "serious"}


def _findings(page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + "; ".join(node["target"][0] if node["target"] else "?" for node in v["nodes"][:3])
        for v in results.response["violations"]
        if v["impact"] in BLOCKING
    ]


@pytest.fixture
def people(transactional_db, settings):
    settings.PLATFORM_SENDING_IPS = ["203.0.113.10"]
    factories.company(slug="acme")
    users = {}
    for code, mode, extra in [
        ("DEF", SenderMode.DEFAULT, {}),
        ("SMTP", SenderMode.SMTP, {"host": "smtp.acme.test", "port": 587, "security": "starttls"}),
        ("M365", SenderMode.MICROSOFT365, {"login": "m365@acme.test"}),
        ("REPLY", SenderMode.REPLY_TO, {}),
    ]:
        users[code] = factories.user(code, name=code.title(), email=f"{code.lower()}@acme.test")
        factories.profile(users[code], mode=mode, **extra)
    users["ADMIN"] = factories.user(
        "ADMIN", email="admin@acme.test", is_staff=True, is_superuser=True
    )
    return users


PAGES = ["/accounts/card/", "/invoices/", "/jobs/", "/customers/", "/letters/", "/events/"]


def _object_pages(people) -> tuple[list[str], list[str]]:
    """Pages of one object each (a job, an invoice, its composer, a customer, a letter, a
    message), and the staff pages."""
    from django.urls import reverse

    from invoices.models import Letter
    from invoices.services import invoices_send
    from invoices.unsubscribe import unsubscribe_token
    from outbox.models import OutgoingMessage
    from outbox.services import outbox_enqueue
    from tests.invoices import factories as invoice_factories

    invoice = invoice_factories.invoices(2)[0]
    job = invoices_send(user=people["SMTP"], unsent=True)
    message = outbox_enqueue(user=people["SMTP"], to=["a@acme.test"], subject="S", body_text="x")
    own = [
        reverse("invoices:job", args=[job.pk]),
        reverse("invoices:invoice", args=[invoice.pk]),
        reverse("invoices:invoice_compose", args=[invoice.pk]),
        reverse("invoices:customer", args=[invoice.customer_id]),
        reverse("invoices:letter_new"),
        reverse("outbox:message", args=[message.pk]),
    ]
    letter = Letter.objects.create(
        subject="Nowy cennik", body="Dzień dobry {{ customer.name }}", created_by=people["SMTP"]
    )
    token = unsubscribe_token(customer_id=invoice.customer_id, letter_id=letter.pk)
    own += [
        reverse("invoices:customer_write", args=[invoice.customer_id]),
        reverse("invoices:letter", args=[letter.pk]),
        reverse("invoices:letter_edit", args=[letter.pk]),
        reverse("invoices:unsubscribe", args=[token]),
    ]
    staff = [
        reverse("card:card_of", kwargs={"code": "SMTP"}),
        reverse("mail_templates:edit", kwargs={"kind": "invoice", "lang": "pl"}),
        reverse("outbox:staff_outbox"),
        reverse("outbox:staff_message", args=[OutgoingMessage.objects.first().pk]),
        reverse("mail_templates:list"),
        reverse("smtp_settings:system"),
    ]
    return own, staff


def test_no_critical_or_serious_findings_on_the_pages_of_each_mode(chromium, live_server, people):
    found: dict[str, list[str]] = {}
    own, staff = _object_pages(people)
    for code in ("DEF", "SMTP", "M365", "REPLY", "ADMIN"):
        context = chromium.new_context(locale="pl-PL")
        page = context.new_page()
        _login(page, live_server.url, code)
        # The job, the message and the letter's own pages are SMTP's (and staff's); the rest
        # is the company's, open to everyone.
        mine = {own[0], own[5], own[7], own[8]}
        extra = own if code in ("SMTP", "ADMIN") else [p for p in own if p not in mine]
        for path in PAGES + extra + (staff if code == "ADMIN" else []):
            response = page.goto(f"{live_server.url}{path}")
            assert response.status == 200, f"{code} {path}: {response.status}"
            if findings := _findings(page):
                found[f"{code} {path}"] = findings
        # A refused Save: a flash message and a field with its error.
        page.goto(f"{live_server.url}/accounts/card/")
        page.select_option("#id_mode", "smtp")
        page.fill("#id_server", "not a server")
        with page.expect_navigation():
            page.click("form.card-form button[type=submit].primary")
        assert page.locator(".message.error").count() == 1
        # The focus is on the message, so a screen reader reads it and Tab goes on from there.
        assert page.evaluate("document.activeElement.id") == "messages"
        assert page.locator("#id_server[aria-invalid=true]").count() == 1
        if findings := _findings(page):
            found[f"{code} card, refused Save"] = findings
        context.close()
    assert not found, "\n".join(f"{where}: {f}" for where, fs in found.items() for f in fs)


def test_the_skip_link_is_the_first_tab_stop_and_jumps_to_the_content(
    chromium, live_server, people
):
    context = chromium.new_context()
    page = context.new_page()
    _login(page, live_server.url, "SMTP")
    page.goto(f"{live_server.url}/invoices/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    assert page.locator(".skip-link").is_visible()  # shown while it has the focus
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"
    context.close()


def test_no_critical_or_serious_findings_before_logging_in(chromium, live_server, people):
    """The login page, and a verification link that is not one (its explained refusal)."""
    context = chromium.new_context(locale="et-EE")
    page = context.new_page()
    found = {}
    for path, status in (("/accounts/login/", 200), ("/accounts/email/verify/x.y:z/", 400)):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == status, path
        if findings := _findings(page):
            found[path] = findings
    context.close()
    assert not found, found


def test_no_critical_or_serious_findings_on_refused_forms(chromium, live_server, people):
    """A validation error on each kind of form: a letter without a subject, a composer with a
    bad address, system settings with a bad server."""
    from django.urls import reverse

    from tests.invoices import factories as invoice_factories

    invoice = invoice_factories.invoices(1)[0]
    found = {}
    context = chromium.new_context(locale="pl-PL")
    page = context.new_page()
    _login(page, live_server.url, "ADMIN")

    def refused(path: str, fill: dict[str, str], button: str, select: dict | None = None) -> None:
        page.goto(f"{live_server.url}{path}")
        for selector, value in (select or {}).items():
            page.select_option(selector, value)
        for selector, value in fill.items():
            page.fill(selector, value)
        # The server's refusal is under test, not the browser's own checks of `required`.
        page.evaluate("document.querySelectorAll('form').forEach((f) => { f.noValidate = true; })")
        with page.expect_navigation():
            page.click(button)
        assert page.locator(".has-error, .errorlist").count() >= 1, f"{path}: nothing refused"
        if findings := _findings(page):
            found[path] = findings

    refused(
        reverse("invoices:letter_new"),
        {"#id_subject": "", "#id_body": "x"},
        "form.letter-form button[type=submit].primary",
    )
    refused(
        reverse("invoices:invoice_compose", args=[invoice.pk]),
        {"#id_to": "not an address"},
        "form.compose-form button[type=submit].primary",
    )
    refused(
        reverse("smtp_settings:system"),
        {"#id_global-server": "no port here"},
        "form.card-form button[type=submit].primary",
        select={"#id_global-mode": "smtp"},
    )
    context.close()
    assert not found, found
