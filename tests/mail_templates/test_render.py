"""Mail templates: shipped defaults per language (the invoice mail's wording unchanged), a
company's own template overriding them per language, reset, and the placeholder language's
refusals (walks, tags, a template bomb) with a message."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from directo_mail.placeholders import TemplateError
from invoices.letters import PLACEHOLDERS as LETTER_PLACEHOLDERS
from invoices.mail import invoice_mail_context, invoice_mail_render, mail_html
from invoices.services import invoice_compose_defaults
from mail_templates.kinds import KINDS
from mail_templates.kinds import LETTER_PLACEHOLDERS as KIND_LETTER_PLACEHOLDERS
from mail_templates.models import MailTemplate, MailTemplateKind
from mail_templates.selectors import (
    mail_template_check,
    mail_template_error_text,
    mail_template_render,
    mail_template_sample,
    mail_template_source,
)
from mail_templates.services import mail_template_reset, mail_template_save
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english"), pytest.mark.django_db]

LANGUAGES = [code for code, _name in settings.LANGUAGES]
# The invoice mail as templates/emails/invoice/*.txt wrote it, in each language.
OLD_WORDING = {
    "en": (
        "Invoice FV/7/2026",
        "Dear Kowalski & Syn,\n\nplease find attached invoice FV/7/2026 for 1230.50 PLN, due on "
        "2026-02-14.\n\nKind regards\n",
    ),
    "pl": (
        "Faktura FV/7/2026",
        "Dzień dobry, Kowalski & Syn,\n\nw załączeniu przesyłamy fakturę FV/7/2026 na kwotę "
        "1230,50 PLN, płatną do 2026-02-14.\n\nZ poważaniem\n",
    ),
    "et": ("Arve FV/7/2026", None),  # Estonian body: checked piece by piece below
}


def _invoice(language: str):
    customer = invoice_factories.customer("Kowalski & Syn", language=language)
    invoice = invoice_factories.invoice(
        "FV/7/2026",
        customer=customer,
        due_date=datetime.date(2026, 2, 14),
        issue_date=datetime.date(2026, 1, 31),
        currency="PLN",
    )
    invoice.total_gross = Decimal("1230.50")  # as its lines would sum it
    invoice.save(update_fields=["total_gross"])
    return invoice


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_shipped_invoice_mail_keeps_the_former_wording_in_each_language(language):
    factories.company()
    invoice = _invoice(language)
    subject, body = invoice_mail_render(invoice=invoice, user=None)
    old_subject, old_body = OLD_WORDING[language]
    assert subject == old_subject
    if old_body is not None:
        assert body == old_body
    else:
        assert body.startswith("Lugupeetud Kowalski & Syn,\n\n")
        assert "FV/7/2026" in body and "1230,50 PLN" in body and "2026-02-14" in body
        assert body.endswith("\n\nLugupidamisega\n")
    # The composer prefills the same words (and the customer's addresses).
    defaults = invoice_compose_defaults(invoice=invoice)
    assert (defaults["subject"], defaults["body"]) == (subject, body)


@pytest.mark.parametrize("kind", MailTemplateKind.values)
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_default_renders_on_its_sample_in_every_language(kind, language):
    source = mail_template_source(kind=kind, language=language, company=None)
    assert not source.customised
    mail_template_check(kind=kind, language=language, subject=source.subject, body=source.body)
    subject, body = mail_template_render(
        kind=kind,
        language=language,
        context=mail_template_sample(kind=kind, language=language),
        company=None,
    )
    assert subject and body and "{{" not in subject + body
    if language != "en":  # translated, not English
        assert (
            source.subject != mail_template_source(kind=kind, language="en", company=None).subject
        )


def test_the_letter_kind_offers_exactly_the_placeholders_of_letters():
    assert KIND_LETTER_PLACEHOLDERS == LETTER_PLACEHOLDERS
    assert KINDS[MailTemplateKind.LETTER].placeholders == LETTER_PLACEHOLDERS


def test_the_invoice_context_is_plain_strings_with_every_placeholder():
    company = factories.company()
    user = factories.user("ANNA", name="Anna Kowalska")
    context = invoice_mail_context(invoice=_invoice("pl"), user=user, company=company)
    assert set(context) == set(KINDS[MailTemplateKind.INVOICE].placeholders)
    assert all(type(value) is str for value in context.values())
    assert context == {
        "invoice.number": "FV/7/2026",
        "invoice.total": "1230,50",
        "invoice.currency": "PLN",
        "invoice.issue_date": "2026-01-31",
        "invoice.due_date": "2026-02-14",
        "customer.name": "Kowalski & Syn",
        "company.name": "Acme Sp. z o.o.",
        "user.name": "Anna Kowalska",
    }


def test_a_company_template_overrides_the_default_in_its_language_only_and_reset_restores_it():
    company = factories.company()
    staff = factories.user("STAFF", is_staff=True)
    mail_template_save(
        company=company,
        kind=MailTemplateKind.INVOICE,
        language="pl",
        subject="Twoja faktura {{ invoice.number }} od {{ company.name }}",
        body="{{ customer.name|upper }}: {{ invoice.total }} {{ invoice.currency }}\n"
        "{{ user.name }}",
        user=staff,
    )
    polish, english = (
        _invoice("pl"),
        invoice_factories.invoice(
            "FV/8/2026", customer=invoice_factories.customer("Smith Ltd", language="en")
        ),
    )
    sender = factories.user("ANNA", name="Anna Kowalska")
    assert invoice_mail_render(invoice=polish, user=sender) == (
        "Twoja faktura FV/7/2026 od Acme Sp. z o.o.",
        "KOWALSKI & SYN: 1230,50 PLN\nAnna Kowalska",
    )
    assert invoice_mail_render(invoice=english, user=sender)[0] == "Invoice FV/8/2026"
    source = mail_template_source(kind=MailTemplateKind.INVOICE, language="pl")
    assert source.customised and source.updated_by == "STAFF"

    assert mail_template_reset(company=company, kind=MailTemplateKind.INVOICE, language="pl")
    assert not MailTemplate.objects.exists()
    assert invoice_mail_render(invoice=polish, user=sender)[0] == "Faktura FV/7/2026"


def test_an_unknown_language_falls_back_to_the_site_default():
    subject, _body = mail_template_render(
        kind=MailTemplateKind.TEST_EMAIL,
        language="xx",
        context=mail_template_sample(kind=MailTemplateKind.TEST_EMAIL, language="xx"),
        company=None,
    )
    assert subject == "Test e-mail: your mail sender works"


# -- what a template may not do ----------------------------------------------------------------
@pytest.mark.parametrize(
    "body, says",
    [
        ("{{ invoice.customer.__class__ }}", "Unknown placeholder “invoice.customer.__class__”"),
        ("{{ invoice.customer.emails }}", "Unknown placeholder"),
        ("{{ user.password }}", "Unknown placeholder “user.password”"),
        ("{{ customer.name.__class__.__mro__ }}", "Unknown placeholder"),
        ("{% for x in invoice %}{{ x }}{% endfor %}", "tags and comments are not supported"),
        ("{% load static %}", "tags and comments are not supported"),
        ("{{ customer.name|safe }}", "Unknown filter “safe”"),
        ("{{ customer.name", "is not closed"),
    ],
)
def test_walks_tags_and_unknown_filters_are_refused_with_a_message(body, says):
    factories.company()
    staff = factories.user("STAFF", is_staff=True)
    with pytest.raises(TemplateError) as refused:
        mail_template_save(
            company=factories.company("Other", "other"),
            kind=MailTemplateKind.INVOICE,
            language="en",
            subject="Invoice",
            body=body,
            user=staff,
        )
    assert says in mail_template_error_text(refused.value)
    assert mail_template_error_text(refused.value).startswith("Body: ")
    assert not MailTemplate.objects.exists()


def test_a_template_bomb_is_bounded_by_the_placeholder_language(settings):
    """A body repeating the longest value until the output passes its bound: refused at save
    (sample record) and, stored behind the editor's back, refused at render."""
    settings.TEMPLATE_MAX_OUTPUT_CHARS = 10_000
    company = factories.company()
    staff = factories.user("STAFF", is_staff=True)
    bomb = "{{ customer.name|upper|upper|upper|upper }}" * 1_000  # 43 kB: passes the input bound
    with pytest.raises(TemplateError) as refused:
        mail_template_save(
            company=company, kind="invoice", language="en", subject="x", body=bomb, user=staff
        )
    assert "longer than 10000 characters" in mail_template_error_text(refused.value)
    with pytest.raises(TemplateError) as too_long:
        mail_template_save(
            company=company,
            kind="invoice",
            language="en",
            subject="x",
            body="x" * (settings.TEMPLATE_MAX_CHARS + 1),
            user=staff,
        )
    assert "The template is too long" in mail_template_error_text(too_long.value)
    MailTemplate.objects.create(
        company=company, kind="invoice", language="en", subject="x", body=bomb
    )
    with pytest.raises(TemplateError):
        invoice_mail_render(invoice=_invoice("en"), user=None)


def test_a_subject_with_a_line_break_from_a_value_is_refused():
    company = factories.company()
    MailTemplate.objects.create(
        company=company, kind="invoice", language="en", subject="{{ customer.name }}", body="x"
    )
    invoice = invoice_factories.invoice(
        customer=invoice_factories.customer("Two\nLines", language="en")
    )
    with pytest.raises(TemplateError) as refused:
        invoice_mail_render(invoice=invoice, user=None)
    assert "Subject: The subject may not contain line breaks" in mail_template_error_text(
        refused.value
    )
    # The composer still opens, with the shipped default the user can edit.
    assert invoice_compose_defaults(invoice=invoice)["subject"] == f"Invoice {invoice.number}"


def test_values_are_data_and_the_html_part_is_escaped():
    """A customer named like a template prints as written; the HTML part made from the text
    escapes it (no markup from a template or a value)."""
    factories.company()
    customer = invoice_factories.customer(
        "<script>alert(1)</script> {{ user.name }}", language="en"
    )
    invoice = invoice_factories.invoice(customer=customer)
    _subject, body = invoice_mail_render(invoice=invoice, user=None)
    assert "Dear <script>alert(1)</script> {{ user.name }}," in body
    html = mail_html(body)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; {{ user.name }}" in html
    assert html.count("<p>") == 3


def test_an_error_text_without_fields_is_joined():
    assert mail_template_error_text(ValidationError(["a", "b"])) == "a b"
