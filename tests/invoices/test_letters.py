"""Letters to customers: rendering in a restricted context, the form, the preview, the S1.2
gate, and sending to a selection through the real worker (each customer once)."""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils.html import escape

from invoices.letters import render_letter
from invoices.models import Letter, LetterDelivery
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english")]

LOCKED = "Mass mailing needs your own mail server"
BODY = (
    "Dear {{ customer.name }},\n\nwe write to {{ customer.emails }} at\n{{ customer.address }}.\n"
    "Amount: {{ '1234.5'|floatformat:1 }}\n"
)


def _letter(user=None, subject="News for {{ customer.name }}", body=BODY) -> Letter:
    user = user or factories.user()
    return Letter.objects.create(subject=subject, body=body, created_by=user)


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_render_fills_the_placeholders_in_each_customers_language():
    polish = invoice_factories.customer(
        "Kowalski Sp. j.",
        emails=["a@kowalski.example", "b@kowalski.example"],
        language="pl",
        address="ul. Długa 1\n00-001 Warszawa",
    )
    english = invoice_factories.customer(
        "Smith Ltd", emails=["office@smith.example"], language="en", address="1 High St"
    )
    letter = _letter()

    pl_subject, pl_body = render_letter(letter, polish)
    en_subject, en_body = render_letter(letter, english)

    assert pl_subject == "News for Kowalski Sp. j."
    assert pl_body == (
        "Dear Kowalski Sp. j.,\n\nwe write to a@kowalski.example, b@kowalski.example at\n"
        "ul. Długa 1\n00-001 Warszawa.\nAmount: 1234,5\n"
    )
    assert en_subject == "News for Smith Ltd"
    assert en_body == (
        "Dear Smith Ltd,\n\nwe write to office@smith.example at\n1 High St.\nAmount: 1234.5\n"
    )


@pytest.mark.django_db
def test_render_is_plain_text_not_escaped():
    customer = invoice_factories.customer("Smith & <Sons>", language="en")
    subject, body = render_letter(_letter(body="{{ customer.name }}"), customer)
    assert (subject, body) == ("News for Smith & <Sons>", "Smith & <Sons>")


@pytest.mark.django_db
def test_the_context_is_restricted_to_plain_values(django_assert_num_queries):
    customer = invoice_factories.customer("Kowalski", language="pl")
    invoice_factories.invoice("FV/1/2026", customer=customer)
    letter = _letter(
        subject="X{{ customer.invoices }}{{ customer.pk }}{{ customer.id }}",
        body="[{{ customer.invoices.all }}|{{ customer.invoices.first.number }}|"
        "{{ customer.language }}|{{ customer.save }}|{{ invoice }}|{{ user }}]",
    )
    with django_assert_num_queries(0):
        subject, body = render_letter(letter, customer)
    assert subject == "X"
    assert body == "[|||||]"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("subject", "body", "field"),
    [
        ("Hello", "{% if %}", "body"),
        ("Hello {{ customer.name|nosuchfilter }}", "Body", "subject"),
        ("Hello", "{% load i18n %}{% translate 'x' %}", "body"),
        ("Hello", "{% include 'base.html' %}", "body"),
        ("At {{ customer.address }}", "Body", "subject"),  # the sample's address has two lines
    ],
)
def test_a_template_error_shows_its_message_and_stores_nothing(client, subject, body, field):
    client.force_login(factories.user("ANNA"))

    response = client.post("/letters/new/", {"subject": subject, "body": body})

    html = _html(response)
    form = response.context["form"]
    assert list(form.errors) == [field]
    message = form.errors[field][0]
    assert message.startswith(("The template has an error:", "The subject may not contain"))
    assert escape(message) in html
    assert not Letter.objects.exists()


@pytest.mark.django_db
def test_render_raises_a_validation_error_for_a_subject_with_a_line_break():
    customer = invoice_factories.customer(address="Line 1\nLine 2")
    with pytest.raises(ValidationError) as raised:
        render_letter(_letter(subject="{{ customer.address }}"), customer)
    assert "subject" in raised.value.message_dict


# -- pages -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_pages_need_a_login(client):
    letter = _letter()
    for url in ["/letters/", "/letters/new/", f"/letters/{letter.pk}/"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_create_a_letter_then_list_it_with_the_nav_link(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(user)

    response = client.post("/letters/new/", {"subject": "News", "body": BODY.replace("\n", "\r\n")})

    letter = Letter.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/letters/{letter.pk}/"
    assert (letter.created_by, letter.body) == (user, BODY)
    html = _html(client.get("/letters/"))
    assert 'href="/letters/"' in html  # the nav
    assert f'href="/letters/{letter.pk}/"' in html and "News" in html

    client.post(f"/letters/{letter.pk}/edit/", {"subject": "News 2", "body": "Hi"})
    letter.refresh_from_db()
    assert (letter.subject, letter.body, letter.created_by) == ("News 2", "Hi", user)


@pytest.mark.django_db
def test_the_preview_for_a_chosen_customer(client):
    client.force_login(invoice_factories.smtp_user_without_server("ANNA"))
    invoice_factories.customer("Adams", emails=["a@adams.example"], language="en")
    chosen = invoice_factories.customer(
        "Kowalski", emails=["k@kowalski.example"], language="pl", address="Długa 1"
    )
    letter = _letter()

    html = _html(client.get(f"/letters/{letter.pk}/?customer={chosen.pk}"))

    assert "News for Kowalski" in html
    assert "Dear Kowalski,\n\nwe write to k@kowalski.example at\nDługa 1.\nAmount: 1234,5" in html
    assert f'<option value="{chosen.pk}" selected>' in html
    assert 'type="checkbox" name="customer"' in html
    # No choice: the first customer by name.
    assert "News for Adams" in _html(client.get(f"/letters/{letter.pk}/"))
    # Not a customer number (issue 11, item 12: `customer=²` gave a 500): the first one too.
    for number in ("²", "Ⅻ", "1e3", "9" * 25):
        assert "News for Adams" in _html(client.get(f"/letters/{letter.pk}/?customer={number}"))
    # And sending to such a selection says so, sending nothing.
    sent = client.post(f"/letters/{letter.pk}/send/", {"customer": [chosen.pk, "²"]}, follow=True)
    assert "Nothing was sent: the selection is not a list of customers." in _html(sent)


@pytest.mark.django_db
def test_a_preview_that_does_not_render_says_why(client):
    client.force_login(invoice_factories.smtp_user_without_server("ANNA"))
    customer = invoice_factories.customer(address="Line 1\nLine 2")
    letter = _letter(subject="{{ customer.address }}")  # saved around the form's check

    html = _html(client.get(f"/letters/{letter.pk}/?customer={customer.pk}"))

    assert "The subject may not contain line breaks" in html


@pytest.mark.django_db
def test_a_relay_user_sees_the_selection_disabled_and_why_and_cannot_send(client):
    user = factories.user("EWA")  # the platform relay: no mass mailing
    customer = invoice_factories.customer()
    letter = _letter(user)
    client.force_login(user)

    html = _html(client.get(f"/letters/{letter.pk}/"))
    assert LOCKED in html
    button = html[html.index('value="selected"') :]
    assert "disabled" in button[: button.index(">")]
    checkbox = html[html.index(f'value="{customer.pk}" id="customer-') :]
    assert "disabled" in checkbox[: checkbox.index(">")]

    response = client.post(f"/letters/{letter.pk}/send/", {"customer": [customer.pk]}, follow=True)
    assert LOCKED in _html(response)
    assert not BulkJob.objects.exists()
    assert not OutgoingMessage.objects.exists()
    assert not LetterDelivery.objects.exists()


@pytest.mark.django_db
def test_sending_without_a_selection_says_so(client):
    client.force_login(invoice_factories.smtp_user_without_server("ANNA"))
    letter = _letter()
    html = _html(client.post(f"/letters/{letter.pk}/send/", {}, follow=True))
    assert "Select the customers to send the letter to first." in html
    assert not BulkJob.objects.exists()


@pytest.mark.django_db
def test_cancel_and_resume_requeue_only_what_is_still_this_jobs(client):
    """Without the worker: the messages stay queued until cancelled."""
    user = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(user)
    first, second = invoice_factories.customer("A"), invoice_factories.customer("B")
    letter = _letter(user)

    client.post(f"/letters/{letter.pk}/send/", {"customer": [first.pk, second.pk]})
    job = BulkJob.objects.get()
    assert (job.kind, job.total) == ("letters", 2)
    html = _html(client.post(f"/jobs/{job.pk}/cancel/", follow=True))
    assert "Cancelled: 2 letters will not be sent." in html
    # The cancelled customers are free again: another job takes the second one.
    client.post(f"/letters/{letter.pk}/send/", {"customer": [second.pk]})
    other = BulkJob.objects.latest("pk")
    assert other.pk != job.pk and other.total == 1

    html = _html(client.post(f"/jobs/{job.pk}/resume/", follow=True))

    assert "Resumed: 1 letter queued again." in html
    states = dict(job.messages.values_list("related_id", "state"))
    assert states == {str(first.pk): MessageState.QUEUED, str(second.pk): MessageState.CANCELLED}
    assert OutgoingMessage.objects.filter(state=MessageState.QUEUED).count() == 2


# -- through the worker ------------------------------------------------------------------------


def _until_stopped(client: Client, job: BulkJob, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.get(f"/jobs/{job.pk}/progress/").json()
        if progress["state"] != JobState.RUNNING and not progress["remaining"]:
            return progress
        time.sleep(0.1)
    raise AssertionError(f"job still running after {timeout}s: {progress}")


@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_send_to_a_selection_through_the_worker_and_again_sends_nothing_twice(client, smtp_servers):
    server = smtp_servers.plain
    user = invoice_factories.smtp_sender("ANNA", server)
    client.force_login(user)
    polish = invoice_factories.customer(
        "Kowalski Sp. j.",
        emails=["a@kowalski.example", "b@kowalski.example"],
        language="pl",
        address="Długa 1",
    )
    english = invoice_factories.customer(
        "Smith Ltd", emails=["office@smith.example"], language="en", address="1 High St"
    )
    left_out = invoice_factories.customer("Nowak", emails=["nowak@nowak.example"])
    letter = _letter(user)

    response = client.post(f"/letters/{letter.pk}/send/", {"customer": [polish.pk, english.pk]})

    job = BulkJob.objects.latest("pk")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    progress = _until_stopped(client, job)
    assert progress["state"] == JobState.FINISHED
    assert (progress["total"], progress["sent"], progress["failed"]) == (2, 2, 0)
    received = server.wait_for(2)
    by_subject = {m.message["Subject"]: m for m in received}
    assert set(by_subject) == {"News for Kowalski Sp. j.", "News for Smith Ltd"}
    pl_mail, en_mail = by_subject["News for Kowalski Sp. j."], by_subject["News for Smith Ltd"]
    assert pl_mail.rcpt_tos == ["a@kowalski.example", "b@kowalski.example"]
    assert en_mail.rcpt_tos == ["office@smith.example"]
    pl_body = pl_mail.message.get_body(("plain",)).get_content()
    en_body = en_mail.message.get_body(("plain",)).get_content()
    assert "Dear Kowalski Sp. j.," in pl_body and "Długa 1." in pl_body and "1234,5" in pl_body
    assert "Dear Smith Ltd," in en_body and "1 High St." in en_body and "1234.5" in en_body
    assert "nowak@nowak.example" not in {r for m in received for r in m.rcpt_tos}

    # The job's page names the customers and subjects, not invoice numbers.
    html = _html(client.get(f"/jobs/{job.pk}/"))
    assert html.count('class="message-row state-sent"') == 2
    assert "Kowalski Sp. j." in html and "News for Smith Ltd" in html
    # The letter's page marks them as sent.
    html = _html(client.get(f"/letters/{letter.pk}/"))
    assert html.count("sent or being sent") == 2

    # Sending again (the same and one more): only the new customer gets it.
    response = client.post(
        f"/letters/{letter.pk}/send/", {"customer": [polish.pk, english.pk, left_out.pk]}
    )
    again = BulkJob.objects.latest("pk")
    assert again.pk != job.pk and again.total == 1
    assert _until_stopped(client, again)["sent"] == 1
    html = _html(client.post(f"/letters/{letter.pk}/send/", {"customer": [polish.pk]}, follow=True))
    assert "Nothing to send: the selected customers already have this letter" in html
    server.wait_for(3)
    time.sleep(0.5)  # anything sent twice would arrive now
    assert len(server.messages) == 3
    assert [m.rcpt_tos for m in server.messages][-1] == ["nowak@nowak.example"]
    assert LetterDelivery.objects.filter(letter=letter).count() == 3


def test_the_debug_tag_is_refused():
    from django.core.exceptions import ValidationError

    from invoices.letters import render_letter
    from invoices.models import Customer, Letter

    letter = Letter(subject="Hello", body="{% debug %}")
    with pytest.raises(ValidationError) as refused:
        render_letter(letter, Customer(name="X", emails=["x@example.com"], language="en"))
    assert "body" in refused.value.message_dict
