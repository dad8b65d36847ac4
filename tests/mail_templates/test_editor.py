"""The staff editor (/staff/templates/): list, edit with preview on a real record, save,
reset; and who may not (non-staff, no CSRF token). Plus where templates are used outside bulk
jobs: the composer's prefill, a new letter, the test e-mail."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils.html import escape

from mail_templates.models import MailTemplate
from outbox.models import OutgoingMessage
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english"), pytest.mark.django_db]

URL = "/staff/templates/"
SCRIPT = "<script>alert('x')</script>"


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def staff(client):
    factories.company()
    user = factories.user("STAFF", is_staff=True, name="Stefan Staff")
    client.force_login(user)
    return user


def _acme():
    """The staff's company (ids are not 1 on PostgreSQL, whose sequences outlive rollbacks)."""
    return MailTemplate._meta.get_field("company").related_model.objects.get(slug="acme")


def _form(**fields) -> dict:
    return {"subject": "Invoice {{ invoice.number }}", "body": "Hello", "record": "", **fields}


def test_the_list_shows_every_kind_and_language_default_or_customised(client, staff):
    MailTemplate.objects.create(
        company=factories.company("Other", "other"),
        kind="letter",
        language="en",
        subject="s",
        body="b",
    )  # another company's row does not count
    MailTemplate.objects.create(
        company=_acme(), kind="invoice", language="pl", subject="s", body="b", updated_by=staff
    )
    html = _html(client.get(URL))
    for kind in ("invoice", "letter", "test_email"):
        for language in ("pl", "en", "et"):
            assert f'href="/staff/templates/{kind}/{language}/"' in html
    assert html.count('class="customised"') == 1 and html.count('class="default"') == 8
    assert "STAFF" in html
    assert 'href="/staff/templates/"' in html  # the staff navigation links it


def test_the_editor_shows_the_default_and_previews_it_on_the_sample(client, staff):
    html = _html(client.get(f"{URL}invoice/pl/"))
    assert "Faktura {{ invoice.number }}" in html  # the default's source, in Polish
    assert "{{ invoice.total }}" in html  # the placeholder help
    assert "Faktura FV/1/2026" in html  # previewed on the sample invoice
    assert "The shipped default" in html


def test_preview_on_a_real_invoice_renders_its_values_without_saving(client, staff):
    customer = invoice_factories.customer("Kowalski & Syn", language="pl")
    invoice = invoice_factories.invoice("FV/42/2026", customer=customer)
    response = client.post(
        f"{URL}invoice/en/",
        _form(
            subject="{{ invoice.number }} for {{ customer.name }}",
            body="Due {{ invoice.due_date }}, {{ invoice.total }} {{ invoice.currency }}, "
            "from {{ user.name }} at {{ company.name }}",
            record="FV/42/2026",
            action="preview",
        ),
    )
    html = _html(response)
    assert "FV/42/2026 for Kowalski &amp; Syn" in html
    assert f"Due {invoice.due_date.isoformat()}, 123,00 PLN, from Stefan Staff at Acme" in html
    assert not MailTemplate.objects.exists()
    # A GET names the record too (?record=), an unknown one is said so.
    html = _html(client.get(f"{URL}invoice/en/?record=FV/42/2026"))
    assert "Invoice FV/42/2026" in html
    html = _html(client.get(f"{URL}invoice/en/?record=FV/404"))
    assert "There is no invoice with the number “FV/404”." in html


def test_preview_on_a_customer_for_the_letter_and_a_user_for_the_test_email(client, staff):
    invoice_factories.customer("Smith Ltd", language="en", address="1 High St.")
    html = _html(
        client.post(
            f"{URL}letter/en/",
            _form(subject="News", body="To {{ customer.address }}", record="smith ltd"),
        )
    )
    assert "To 1 High St." in html
    factories.user("ANNA", email="anna@acme.example")
    html = _html(
        client.post(
            f"{URL}test_email/en/",
            _form(subject="Test for {{ user.email }}", body="x", record="ANNA"),
        )
    )
    assert "Test for anna@acme.example" in html


def test_save_stores_the_template_and_reset_brings_the_default_back(client, staff):
    response = client.post(
        f"{URL}invoice/pl/",
        _form(
            subject="Faktura {{ invoice.number }} – {{ company.name }}",
            body="A\r\nB\r\n",
            action="save",
        ),
    )
    assert response.status_code == 302 and response["Location"] == f"{URL}invoice/pl/"
    row = MailTemplate.objects.get()
    assert (row.kind, row.language, row.updated_by, row.body) == ("invoice", "pl", staff, "A\nB\n")
    html = _html(client.get(f"{URL}invoice/pl/"))
    assert "Customised: changed" in html and "Faktura FV/1/2026 – Przykładowa firma" in html

    response = client.post(f"{URL}invoice/pl/", {"action": "reset"})
    assert response.status_code == 302
    assert not MailTemplate.objects.exists()


def test_save_refuses_a_template_that_does_not_render_with_the_reason(client, staff):
    html = _html(
        client.post(
            f"{URL}invoice/en/",
            _form(body="{{ invoice.customer.__class__ }} {% debug %}", action="save"),
        )
    )
    assert "Unknown placeholder “invoice.customer.__class__”" in html
    assert not MailTemplate.objects.exists()
    html = _html(
        client.post(f"{URL}invoice/en/", _form(subject="{{ user.password }}", action="save"))
    )
    assert "Unknown placeholder “user.password”" in html
    assert not MailTemplate.objects.exists()


def test_script_in_a_template_is_escaped_in_the_preview_and_in_the_composer(client, staff):
    customer = invoice_factories.customer("Kowalski", language="en")
    invoice = invoice_factories.invoice("FV/9/2026", customer=customer)
    client.post(
        f"{URL}invoice/en/",
        _form(subject=f"{SCRIPT} {{{{ invoice.number }}}}", body=f"{SCRIPT}\n", action="save"),
    )
    assert MailTemplate.objects.get().body == f"{SCRIPT}\n"
    for html in (
        _html(client.get(f"{URL}invoice/en/?record=FV/9/2026")),
        _html(client.get(f"/invoices/{invoice.pk}/send/")),
    ):
        assert SCRIPT not in html
        assert escape(SCRIPT) in html


def test_unknown_kinds_and_languages_are_404(client, staff):
    assert client.get(f"{URL}nope/en/").status_code == 404
    assert client.get(f"{URL}invoice/de/").status_code == 404


def test_non_staff_can_neither_read_nor_change_templates(client):
    company = factories.company()
    row = MailTemplate.objects.create(
        company=company, kind="invoice", language="en", subject="Ours", body="Secret wording"
    )
    anonymous = Client()
    for url in (URL, f"{URL}invoice/en/"):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(factories.user("ANNA"))
    assert client.get(URL).status_code == 403
    response = client.get(f"{URL}invoice/en/")
    assert response.status_code == 403 and b"Secret wording" not in response.content
    for data in (_form(subject="Hacked", body="Hacked", action="save"), {"action": "reset"}):
        assert client.post(f"{URL}invoice/en/", data).status_code == 403
        assert anonymous.post(f"{URL}invoice/en/", data).status_code == 302
        assert client.post(f"{URL}invoice/pl/", data).status_code == 403
    assert list(MailTemplate.objects.values_list("pk", "subject", "body")) == [
        (row.pk, "Ours", "Secret wording")
    ]
    assert "/staff/templates/" not in _html(client.get("/invoices/"))


def test_a_post_without_the_csrf_token_changes_nothing(staff):
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(staff)
    response = csrf_client.post(f"{URL}invoice/en/", _form(subject="Forged", action="save"))
    assert response.status_code == 403
    assert not MailTemplate.objects.exists()


# -- where templates are used besides bulk jobs -------------------------------------------------
def test_the_composer_prefills_the_customised_template_in_the_customers_language(client, staff):
    company_id = MailTemplate._meta.get_field("company").related_model.objects.get().pk
    for language, words in (("pl", "Dzień dobry"), ("en", "Hello")):
        MailTemplate.objects.create(
            company_id=company_id,
            kind="invoice",
            language=language,
            subject=f"{words} {{{{ invoice.number }}}}",
            body=f"{words} {{{{ customer.name }}}}, {{{{ user.name }}}}",
        )
    polish = invoice_factories.invoice(
        "FV/1/2026", customer=invoice_factories.customer("Kowalski", language="pl")
    )
    estonian = invoice_factories.invoice(
        "FV/2/2026", customer=invoice_factories.customer("Tamm OÜ", language="et")
    )
    html = _html(client.get(f"/invoices/{polish.pk}/send/"))
    assert 'value="Dzień dobry FV/1/2026"' in html
    assert "Dzień dobry Kowalski, Stefan Staff</textarea>" in html
    html = _html(client.get(f"/invoices/{estonian.pk}/send/"))
    assert 'value="Arve FV/2/2026"' in html  # no Estonian row: the shipped Estonian default


def test_a_new_letter_starts_with_the_letter_template_in_the_pages_language(client, staff):
    html = _html(client.get("/letters/new/"))
    assert 'value="Information for our customers"' in html
    assert "Dear {{ customer.name }}," in html
    MailTemplate.objects.create(
        company=_acme(),
        kind="letter",
        language="en",
        subject="Spring offer",
        body="Hi {{ customer.name }}",
    )
    html = _html(client.get("/letters/new/"))
    assert 'value="Spring offer"' in html and "Hi {{ customer.name }}</textarea>" in html


def test_the_test_email_uses_the_test_email_template_in_the_users_language(client):
    company = factories.company()
    MailTemplate.objects.create(
        company=company,
        kind="test_email",
        language="pl",
        subject="Test {{ company.name }}",
        body="Cześć {{ user.name }} <{{ user.email }}>",
    )
    user = factories.user("ANNA", name="Anna", email="anna@acme.example", language="pl")
    client.force_login(user)
    client.post("/outbox/test-email/")
    message = OutgoingMessage.objects.get()
    assert (message.subject, message.body_text) == (
        "Test Acme Sp. z o.o.",
        "Cześć Anna <anna@acme.example>",
    )


def test_a_test_email_template_that_fails_is_explained_not_a_500(client):
    company = factories.company()
    MailTemplate.objects.create(  # stored behind the editor's back
        company=company, kind="test_email", language="en", subject="{{ nope }}", body="x"
    )
    client.force_login(factories.user("ANNA", email="anna@acme.example", language="en"))
    response = client.post("/outbox/test-email/", follow=True)
    assert response.status_code == 200
    assert "Unknown placeholder “nope”" in response.content.decode()
    assert not OutgoingMessage.objects.exists()
