"""Letters to customers: rendering with the sandboxed placeholder language, the form, the
preview (escaped), who may change a letter, the S1.2 gate, and sending to a selection through
the real worker (each customer once)."""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils.html import escape
from django.utils.safestring import SafeData

from invoices.letters import render_letter
from invoices.models import Letter, LetterDelivery
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english")]

LOCKED = "Mass mailing needs your own mail server"
BODY = (
    "Dear {{ customer.name }},\n\nwe write to {{ customer.emails }} at\n{{ customer.address }}.\n"
    "Regards, {{ customer.name|upper }}\n"
)


def _letter(user=None, subject="News for {{ customer.name }}", body=BODY) -> Letter:
    user = user or factories.user()
    return Letter.objects.create(subject=subject, body=body, created_by=user)


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_render_fills_the_placeholders_for_each_customer():
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
        "ul. Długa 1\n00-001 Warszawa.\nRegards, KOWALSKI SP. J.\n"
    )
    assert en_subject == "News for Smith Ltd"
    assert en_body == (
        "Dear Smith Ltd,\n\nwe write to office@smith.example at\n1 High St.\nRegards, SMITH LTD\n"
    )


@pytest.mark.django_db
def test_render_is_plain_text_not_escaped():
    customer = invoice_factories.customer("Smith & <Sons>", language="en")
    subject, body = render_letter(_letter(body="{{ customer.name }}"), customer)
    assert (subject, body) == ("News for Smith & <Sons>", "Smith & <Sons>")
    assert not isinstance(body, SafeData)  # a page showing it escapes it


@pytest.mark.django_db
@pytest.mark.parametrize(
    "placeholder",
    [
        "customer.invoices",
        "customer.pk",
        "customer.id",
        "customer.invoices.all",
        "customer.language",
        "customer.save",
        "invoice",
        "user",
        "settings.SECRET_KEY",
    ],
)
def test_only_the_whitelisted_placeholders_exist_and_each_other_is_named(
    placeholder, django_assert_num_queries
):
    """The old renderer printed "" for a name it did not know; now the name is an error."""
    customer = invoice_factories.customer("Kowalski", language="pl")
    invoice_factories.invoice("FV/1/2026", customer=customer)
    letter = _letter(subject="Hello", body=f"Line\n[{{{{ {placeholder} }}}}]")
    with django_assert_num_queries(0), pytest.raises(ValidationError) as refused:
        render_letter(letter, customer)
    (message,) = refused.value.message_dict["body"]
    assert message.startswith(f"Unknown placeholder “{placeholder}” on line 2. You can use:")
    assert "{{ customer.name }}" in message


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("subject", "body", "field", "expected"),
    [
        ("Hello", "{% if %}", "body", ["“{% if %}” on line 1: tags"]),
        ("Hello {{ customer.name|nosuchfilter }}", "Body", "subject", ["“nosuchfilter”"]),
        ("Hello", "A\n{% load i18n %}{% translate 'x' %}", "body", ["{% load i18n %}", "line 2"]),
        ("Hello", "{% include 'base.html' %}", "body", ["{% include 'base.html' %}"]),
        ("Hello", "{{ customer.name|ljust:'200000000' }}", "body", ["Unknown filter “ljust”"]),
        ("Hello", "{{ customer.name", "body", ["is not closed"]),
        ("At {{ customer.address }}", "Body", "subject", ["The subject may not contain"]),
    ],
)
def test_a_template_error_shows_its_message_and_stores_nothing(
    client, subject, body, field, expected
):
    client.force_login(factories.user("ANNA"))

    response = client.post("/letters/new/", {"subject": subject, "body": body})

    html = _html(response)
    form = response.context["form"]
    assert list(form.errors) == [field]
    message = form.errors[field][0]
    assert any(word in message for word in expected), message
    assert escape(message) in html
    assert not Letter.objects.exists()


@pytest.mark.django_db
def test_render_raises_a_validation_error_for_a_subject_with_a_line_break():
    customer = invoice_factories.customer(address="Line 1\nLine 2")
    with pytest.raises(ValidationError) as raised:
        render_letter(_letter(subject="{{ customer.address }}"), customer)
    assert "subject" in raised.value.message_dict


@pytest.mark.django_db
@pytest.mark.parametrize("breaker", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"])
def test_every_line_break_the_email_package_refuses_is_refused_with_its_reason(breaker):
    """A review of issue 11: a customer name with one of the other line breaks of
    str.splitlines() passed the subject check; the email package then refused the header in
    the worker, and each such letter failed with the "generic" explanation instead of this."""
    customer = invoice_factories.customer(name=f"Acme{breaker}Bcc: eve@attacker.example")
    with pytest.raises(ValidationError) as raised:
        render_letter(_letter(), customer)
    assert raised.value.message_dict["subject"][0].startswith("The subject may not contain")


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
    anna = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(anna)
    invoice_factories.customer("Adams", emails=["a@adams.example"], language="en")
    chosen = invoice_factories.customer(
        "Kowalski", emails=["k@kowalski.example"], language="pl", address="Długa 1"
    )
    letter = _letter(anna)  # her own: only its author (or staff) may send it

    html = _html(client.get(f"/letters/{letter.pk}/?customer={chosen.pk}"))

    assert "News for Kowalski" in html
    assert "Dear Kowalski,\n\nwe write to k@kowalski.example at\nDługa 1.\nRegards, KOWALSKI" in (
        html
    )
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
def test_a_script_in_a_letter_or_in_customer_data_is_escaped_on_the_preview(client):
    """The critical finding of issue 11: the preview printed the rendered body unescaped."""
    client.force_login(factories.user("ANNA", is_staff=True))  # the victim: a staff user
    customer = invoice_factories.customer(
        '<img src=x onerror="alert(2)">', address="<script>alert(3)</script>"
    )
    letter = _letter(
        subject="<script>alert(4)</script>{{ customer.name }}",
        body="<script>alert(1)</script>\n{{ customer.name }}\n{{ customer.address }}",
    )

    html = _html(client.get(f"/letters/{letter.pk}/?customer={customer.pk}"))

    for raw in ("<script>alert(", "<img src=x"):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html


@pytest.mark.django_db
def test_only_the_author_and_staff_may_edit_or_send_a_letter(client):
    author = invoice_factories.smtp_user_without_server("ANNA")
    other = invoice_factories.smtp_user_without_server("BOB")  # could mass-mail his own letters
    staff = factories.user("STAFF", is_staff=True)
    customer = invoice_factories.customer("Kowalski")
    letter = _letter(author, subject="Original", body="Hello {{ customer.name }}")
    reason = "Only the letter's author (ANNA) and staff can edit or send it."

    client.force_login(other)
    assert f'href="/letters/{letter.pk}/"' in _html(client.get("/letters/"))  # the company's
    page = _html(client.get(f"/letters/{letter.pk}/"))
    assert reason in page and f"/letters/{letter.pk}/edit/" not in page
    button = page[page.index('value="selected"') :]
    assert "disabled" in button[: button.index(">")]
    for response in (
        client.get(f"/letters/{letter.pk}/edit/"),
        client.post(f"/letters/{letter.pk}/edit/", {"subject": "Hacked", "body": "<b>x</b>"}),
        client.post(f"/letters/{letter.pk}/send/", {"customer": [customer.pk]}),
    ):
        assert response.status_code == 403
        assert reason in response.content.decode()
    letter.refresh_from_db()
    assert (letter.subject, letter.body) == ("Original", "Hello {{ customer.name }}")
    assert not BulkJob.objects.exists() and not LetterDelivery.objects.exists()

    client.force_login(staff)
    assert f"/letters/{letter.pk}/edit/" in _html(client.get(f"/letters/{letter.pk}/"))
    response = client.post(f"/letters/{letter.pk}/edit/", {"subject": "By staff", "body": "Hi"})
    assert response.status_code == 302
    letter.refresh_from_db()
    assert (letter.subject, letter.created_by) == ("By staff", author)  # still the author's

    client.force_login(author)
    response = client.post(f"/letters/{letter.pk}/send/", {"customer": [customer.pk]})
    assert response.status_code == 302 and BulkJob.objects.get().user == author


@pytest.mark.django_db
def test_a_stored_letter_in_the_old_template_syntax_says_why_and_is_not_sent(client):
    """Letters saved for the old Django-template renderer: those with {{ customer.x }} only
    still work; one with a tag fails on its page and when sent, and nothing is queued."""
    user = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(user)
    customer = invoice_factories.customer("Kowalski")
    still_fine = _letter(user, subject="For {{customer.name}}", body="Hi {{ customer.name }}!")
    old = _letter(user, body="Hi\n{% for c in customer.name %}{{ c }}{% endfor %}")

    assert "Hi Kowalski!" in _html(client.get(f"/letters/{still_fine.pk}/"))
    page = _html(client.get(f"/letters/{old.pk}/"))
    assert "Body: “{% for c in customer.name %}” on line 2: tags and comments are not" in page

    edit = _html(client.get(f"/letters/{old.pk}/edit/"))  # the error is on the field at once
    assert "“{% for c in customer.name %}” on line 2: tags and comments are not" in edit
    assert "Hi {{ customer.name }}!" in _html(client.get(f"/letters/{still_fine.pk}/edit/"))

    page = _html(client.post(f"/letters/{old.pk}/send/", {"customer": [customer.pk]}, follow=True))

    assert "The letter was not sent: Body: “{% for c in customer.name %}” on line 2" in page
    assert not BulkJob.objects.exists()
    assert not OutgoingMessage.objects.exists()
    assert not LetterDelivery.objects.exists()


@pytest.mark.django_db
def test_the_admin_checks_a_letter_as_the_letter_page_does(client):
    admin_user = factories.user("ROOT", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    letter = _letter(admin_user, subject="Fine", body="Hi")
    url = f"/admin/invoices/letter/{letter.pk}/change/"
    data = {"subject": "Fine", "body": "{% debug %}", "created_by": admin_user.pk}

    html = _html(client.post(url, data))

    assert "“{% debug %}” on line 1: tags and comments are not supported here" in html
    letter.refresh_from_db()
    assert letter.body == "Hi"
    response = client.post(url, {**data, "body": "Hello {{ customer.name|upper }}"})
    assert response.status_code == 302
    letter.refresh_from_db()
    assert letter.body == "Hello {{ customer.name|upper }}"


@pytest.mark.django_db
def test_customer_data_past_the_output_bound_names_the_customer(client, settings):
    settings.TEMPLATE_MAX_OUTPUT_CHARS = 1000
    user = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(user)
    small = invoice_factories.customer("Adams", address="1 High St")
    large = invoice_factories.customer("Bigcorp", address="x" * 990)
    letter = _letter(user, body="{{ customer.address }}\n{{ customer.address|upper }}")

    assert "1 High St\n1 HIGH ST" in _html(client.get(f"/letters/{letter.pk}/?customer={small.pk}"))
    page = _html(client.get(f"/letters/{letter.pk}/?customer={large.pk}"))
    assert "For the customer “Bigcorp”: The text would be longer than 1000 characters." in page

    page = _html(
        client.post(f"/letters/{letter.pk}/send/", {"customer": [small.pk, large.pk]}, follow=True)
    )
    assert "The letter was not sent: Body: For the customer “Bigcorp”" in page
    assert not OutgoingMessage.objects.exists()


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
    user = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(user)
    letter = _letter(user)
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
    assert "Dear Kowalski Sp. j.," in pl_body and "Długa 1." in pl_body
    assert "Dear Smith Ltd," in en_body and "1 High St." in en_body
    assert "Regards, SMITH LTD" in en_body and "&amp;" not in en_body
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
    assert "Nothing to send: 1 customer already has this letter (or it is being sent)." in html
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
