"""One invoice: its page (data, PDF, history) and "Send by e-mail" (issue 12, items 1 and 3).

Plain `db`: the request's transaction is the test's, so the message stays queued and the
refusals can be looked at row by row. tests/invoices/test_composer_delivery.py sends for real.
"""

from __future__ import annotations

import pytest
from django.utils import timezone
from django.utils.html import escape

from invoices.models import Invoice, SendState
from invoices.services import invoices_send
from outbox.models import Attachment, BulkJob, Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english"), pytest.mark.django_db]


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def _default_user(code: str = "DORA"):
    """A user on the Default mode: the platform relay (mass mailing locked, S1.2)."""
    factories.company()
    user = factories.user(code)
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    return user


def _compose(**fields) -> dict:
    return {
        "to": "billing@kowalski.example",
        "cc": "",
        "bcc": "",
        "subject": "Invoice FV/1/2026",
        "body": "Please find the invoice attached.",
        **fields,
    }


# -- the invoice page --------------------------------------------------------------------------


def test_the_invoice_page_needs_a_login_and_so_does_its_pdf(client):
    invoice = invoice_factories.invoice()
    for url in (f"/invoices/{invoice.pk}/", f"/invoices/{invoice.pk}/pdf/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_the_list_links_each_invoice_to_its_page_and_its_composer(client):
    invoice = invoice_factories.invoice("FV/3/2026")
    client.force_login(_default_user())
    html = _html(client.get("/invoices/"))
    assert f'href="/invoices/{invoice.pk}/">FV/3/2026</a>' in html
    assert f'href="/invoices/{invoice.pk}/send/"' in html


def test_the_invoice_page_shows_its_data_pdf_link_and_a_bounced_address_marked(client):
    customer = invoice_factories.customer(
        "Kowalski", emails=["ok@kowalski.example", "gone@kowalski.example"]
    )
    customer.bounced_emails = {"gone@kowalski.example": "2026-11-01"}
    customer.save()
    invoice = invoice_factories.invoice("FV/4/2026", customer=customer, currency="EUR")
    client.force_login(_default_user())

    html = _html(client.get(f"/invoices/{invoice.pk}/"))

    assert "Invoice FV/4/2026" in html and "Kowalski" in html
    assert "123.00 EUR" in html
    assert '<s class="bounced-address"' in html and "gone@kowalski.example</s>" in html
    assert f'href="/invoices/{invoice.pk}/pdf/"' in html
    assert f'href="/invoices/{invoice.pk}/send/"' in html
    assert "No message about this invoice yet." in html


def test_the_pdf_preview_is_the_invoice_pdf(client):
    invoice = invoice_factories.invoice("FV/5/2026")
    client.force_login(_default_user())
    response = client.get(f"/invoices/{invoice.pk}/pdf/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert response["Content-Disposition"] == 'inline; filename="FV-5-2026.pdf"'
    invoice.refresh_from_db()
    assert not invoice.pdf  # a GET writes nothing; sending keeps the file (test below)


def test_an_unknown_invoice_is_a_404(client):
    client.force_login(_default_user())
    for url in ("/invoices/999999/", "/invoices/999999/pdf/", "/invoices/999999/send/"):
        assert client.get(url).status_code == 404


def test_the_history_lists_every_message_with_state_reply_explanation_and_link(client):
    user = _default_user()
    invoice = invoice_factories.invoice()
    other = invoice_factories.invoice()

    def message(**fields) -> OutgoingMessage:
        made = outbox_enqueue(
            user=user, to=invoice.customer.emails, subject="Invoice", body_text="x", related=invoice
        )
        OutgoingMessage.objects.filter(pk=made.pk).update(**fields)
        return made

    sent = message(state=MessageState.SENT, sent_at=timezone.now(), last_reply="250 2.0.0 Ok")
    failed = message(
        state=MessageState.FAILED,
        last_reply="550 5.1.1 <x@y>: Recipient address rejected",
        explanation="recipient_unknown",
        explanation_params={"address": "x@y"},
    )
    twice = message(state=MessageState.SENT, possibly_duplicated=True, sent_at=timezone.now())
    bounced = message(state=MessageState.SENT, sent_at=timezone.now(), bounced_at=timezone.now())
    Event.objects.create(
        user=user,
        message=bounced,
        kind=EventKind.BOUNCED,
        explanation="mailbox_full",
        reply="552 5.2.2 Mailbox full",
    )
    queued = message()
    elsewhere = outbox_enqueue(
        user=user, to=other.customer.emails, subject="Other", body_text="x", related=other
    )
    client.force_login(user)

    html = _html(client.get(f"/invoices/{invoice.pk}/"))

    rows = html.count('class="history-row')
    assert rows == 5
    for made in (sent, failed, twice, bounced, queued):
        assert f'href="/outbox/{made.pk}/"' in html
    assert f'href="/outbox/{elsewhere.pk}/"' not in html
    assert "250 2.0.0 Ok" in html and "Recipient address rejected" in html
    assert "possibly sent twice" in html
    assert '<span class="state-bounced">bounced</span>' in html
    assert '<span class="state-failed">failed</span>' in html
    assert '<span class="state-queued">queued</span>' in html
    # The catalogue's explanations, in the reader's language.
    from smtp_settings.explain import explain

    assert escape(explain("recipient_unknown", {"address": "x@y"})["title"]) in html
    assert escape(explain("mailbox_full")["title"]) in html
    # Newest first.
    assert html.index(f"/outbox/{queued.pk}/") < html.index(f"/outbox/{sent.pk}/")


def test_the_history_explanation_follows_the_readers_language(client):
    user = _default_user()
    invoice = invoice_factories.invoice()
    made = outbox_enqueue(
        user=user, to=invoice.customer.emails, subject="F", body_text="x", related=invoice
    )
    OutgoingMessage.objects.filter(pk=made.pk).update(
        state=MessageState.FAILED, explanation="recipient_unknown"
    )
    client.force_login(user)
    english = _html(client.get(f"/invoices/{invoice.pk}/"))
    client.cookies["django_language"] = "pl"
    polish = _html(client.get(f"/invoices/{invoice.pk}/"))
    from django.utils import translation

    from smtp_settings.explain import explain

    with translation.override("pl"):
        title_pl = explain("recipient_unknown")["title"]
    assert escape(title_pl) in polish and escape(title_pl) not in english


# -- the composer ------------------------------------------------------------------------------


def test_the_composer_is_prefilled_from_the_invoice_mail_in_the_customers_language(client):
    factories.company()
    user = factories.user("ANNA", email="anna@acme.example", bcc="archive@acme.example")
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    customer = invoice_factories.customer(
        "Kowalski", emails=["ok@kowalski.example", "gone@kowalski.example"], language="pl"
    )
    customer.bounced_emails = {"gone@kowalski.example": "2026-11-01"}
    customer.save()
    invoice = invoice_factories.invoice("FV/8/2026", customer=customer)
    client.force_login(user)

    html = _html(client.get(f"/invoices/{invoice.pk}/send/"))

    assert 'name="to" value="ok@kowalski.example"' in html  # the bounced one left out…
    assert '<s class="bounced-address">gone@kowalski.example</s>' in html  # …and shown marked
    assert 'value="Faktura FV/8/2026"' in html  # Polish: the customer's language
    assert "Dzień dobry, Kowalski," in html
    assert "archive@acme.example" in html  # the card's BCC, which always gets a copy
    assert f'href="/invoices/{invoice.pk}/pdf/"' in html


def test_send_queues_one_message_with_the_pdf_and_shows_it_in_the_history(client):
    user = _default_user()
    invoice = invoice_factories.invoice("FV/9/2026")
    client.force_login(user)

    response = client.post(
        f"/invoices/{invoice.pk}/send/",
        _compose(to="a@kowalski.example; b@kowalski.example", cc="c@kowalski.example"),
    )

    assert response.status_code == 302
    assert response["Location"] == f"/invoices/{invoice.pk}/"
    [message] = OutgoingMessage.objects.all()
    assert message.to == ["a@kowalski.example", "b@kowalski.example"]
    assert message.cc == ["c@kowalski.example"]
    assert message.related == invoice and message.job is None
    assert message.sender["mode"] == SenderMode.DEFAULT
    [attachment] = Attachment.objects.filter(message=message)
    assert attachment.filename == "FV-9-2026.pdf" and attachment.content_type == "application/pdf"
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.QUEUED and attachment.file.name == invoice.pdf.name
    html = _html(client.get(response["Location"]))
    assert "queued for sending" in html
    assert f'href="/outbox/{message.pk}/"' in html


@pytest.mark.parametrize(
    ("fields", "field", "error"),
    [
        ({"to": "not-an-address"}, "to", "is not a valid e-mail address"),
        ({"to": ""}, "to", "This field is required."),
        ({"cc": "a@b.example\r\nBcc: victim@x.example"}, "cc", "is not a valid e-mail address"),
        ({"bcc": "x@y.example, @nope"}, "bcc", "is not a valid e-mail address"),
        ({"subject": "Invoice\r\nBcc: victim@x.example"}, "subject", "may not contain line"),
        ({"subject": "=?utf-8?q?a=0D=0ABcc:_v@x.example?="}, "subject", "may not contain line"),
    ],
)
def test_bad_input_is_explained_on_its_field_and_nothing_is_queued(client, fields, field, error):
    invoice = invoice_factories.invoice()
    client.force_login(_default_user())

    html = _html(client.post(f"/invoices/{invoice.pk}/send/", _compose(**fields)))

    assert error in html
    assert 'class="field has-error"' in html
    assert not OutgoingMessage.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.UNSENT


def test_too_many_recipients_are_refused_on_the_to_field(client, settings):
    settings.MAX_RECIPIENTS_PER_MESSAGE = 3
    invoice = invoice_factories.invoice()
    client.force_login(_default_user())
    to = ", ".join(f"r{n}@kowalski.example" for n in range(4))

    html = _html(client.post(f"/invoices/{invoice.pk}/send/", _compose(to=to)))

    assert "has-error" in html and "recipients" in html
    assert not OutgoingMessage.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.UNSENT


def test_the_relay_limit_refuses_with_its_explanation_and_keeps_the_invoice(client, settings):
    settings.RELAY_LIMIT_USER_HOUR = 1
    first, second = invoice_factories.invoices(2)
    client.force_login(_default_user())
    assert client.post(f"/invoices/{first.pk}/send/", _compose()).status_code == 302

    html = _html(client.post(f"/invoices/{second.pk}/send/", _compose()))

    assert OutgoingMessage.objects.count() == 1
    assert 'class="errorlist"' in html
    second.refresh_from_db()
    assert second.send_state == SendState.UNSENT


def test_an_invoice_a_bulk_job_holds_is_not_sent_again_by_the_composer(client):
    owner = invoice_factories.smtp_user_without_server("BULK")
    invoice = invoice_factories.invoice()
    job = invoices_send(user=owner, invoice_ids=[invoice.pk])
    client.force_login(_default_user())

    html = _html(client.post(f"/invoices/{invoice.pk}/send/", _compose()))

    assert "being sent right now" in html
    assert not OutgoingMessage.objects.filter(job=None).exists()
    invoice.refresh_from_db()
    assert (invoice.send_state, invoice.job_id) == (SendState.QUEUED, job.pk)


def test_a_bulk_job_after_the_composer_skips_the_invoice(client):
    invoice = invoice_factories.invoice()
    client.force_login(_default_user())
    assert client.post(f"/invoices/{invoice.pk}/send/", _compose()).status_code == 302

    job = invoices_send(
        user=invoice_factories.smtp_user_without_server("BULK"), invoice_ids=[invoice.pk]
    )

    assert job.total == 0
    assert OutgoingMessage.objects.count() == 1


def test_a_sent_invoice_can_be_sent_again_on_purpose(client):
    invoice = invoice_factories.invoice(send_state=SendState.SENT)
    client.force_login(_default_user())
    assert client.post(f"/invoices/{invoice.pk}/send/", _compose()).status_code == 302
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.QUEUED


def test_a_user_whose_sender_cannot_send_is_told_why_and_nothing_is_queued(client):
    user = factories.user("NOSRV")
    factories.profile(user, mode=SenderMode.SMTP, security="ssl")  # no server anywhere
    invoice = invoice_factories.invoice()
    client.force_login(user)

    html = _html(client.get(f"/invoices/{invoice.pk}/send/"))
    assert 'role="alert"' in html and "disabled" in html
    html = _html(client.post(f"/invoices/{invoice.pk}/send/", _compose()))
    assert not OutgoingMessage.objects.exists()
    assert not BulkJob.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.UNSENT
    assert Invoice.objects.count() == 1


def test_another_users_message_shows_only_its_time_and_state_but_staff_see_it_all(client):
    """The invoice is everyone's; a message is its sender's (outbox.selectors)."""
    anna, bob = _default_user("ANNA"), factories.user("BOB")
    staff = factories.user("BOSS", is_staff=True)
    invoice = invoice_factories.invoice()
    made = outbox_enqueue(
        user=anna,
        to=["secret-partner@kowalski.example"],
        subject="F",
        body_text="x",
        related=invoice,
    )
    OutgoingMessage.objects.filter(pk=made.pk).update(
        state=MessageState.FAILED, last_reply="550 private reply", explanation="recipient_unknown"
    )
    for user, sees in ((anna, True), (bob, False), (staff, True)):
        client.force_login(user)
        html = _html(client.get(f"/invoices/{invoice.pk}/"))
        assert '<span class="state-failed">failed</span>' in html
        for detail in (
            "secret-partner@kowalski.example",
            "550 private reply",
            f"/outbox/{made.pk}/",
        ):
            assert (detail in html) is sees, (user.code, detail)
        assert ("sent by another user" in html) is not sees


@pytest.mark.django_db
def test_the_plain_text_invoice_mail_is_not_html_escaped():
    """`Kowalski & Syn <biuro>` stays as written in the text part and the subject (they were
    `&amp;` / `&lt;`, in bulk mail too); the HTML part (made from the text) stays escaped."""
    from invoices.mail import mail_html
    from invoices.services import invoice_compose_defaults

    customer = invoice_factories.customer("Kowalski & Syn <biuro>", language="en")
    invoice = invoice_factories.invoice(customer=customer, number="FV/1&2/2026")
    defaults = invoice_compose_defaults(invoice=invoice)
    assert defaults["subject"] == "Invoice FV/1&2/2026"
    assert "Dear Kowalski & Syn <biuro>," in defaults["body"]
    html = mail_html(defaults["body"])
    assert "Kowalski &amp; Syn &lt;biuro&gt;" in html


def _failed(message: OutgoingMessage) -> OutgoingMessage:
    """The message as the worker leaves a permanent failure: failed, and its invoice too."""
    from outbox.signals import message_state_changed

    OutgoingMessage.objects.filter(pk=message.pk).update(state=MessageState.FAILED)
    message.refresh_from_db()
    message_state_changed.send(OutgoingMessage, message=message, state=MessageState.FAILED)
    return message


def test_staff_cannot_retry_an_old_failure_of_an_invoice_sent_again_meanwhile(client):
    """The attack-by-accident: the user sends the failed invoice again from the composer, and
    staff then retry its old failed message from the outbox. Both would arrive; the retry is
    refused in its transaction and the invoice goes once."""
    user = _default_user()
    staff = factories.user("STAFF", is_staff=True)
    invoice = invoice_factories.invoice("FV/11/2026")
    client.force_login(user)
    client.post(f"/invoices/{invoice.pk}/send/", _compose())
    old = _failed(OutgoingMessage.objects.get())
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.FAILED

    client.post(f"/invoices/{invoice.pk}/send/", _compose())  # sent again from the composer
    assert OutgoingMessage.objects.filter(state=MessageState.QUEUED).count() == 1

    client.force_login(staff)
    html = _html(client.post(f"/staff/outbox/{old.pk}/retry/", follow=True))
    assert "This invoice was sent again meanwhile" in html
    old.refresh_from_db()
    assert old.state == MessageState.FAILED  # rolled back: still failed, not queued
    assert OutgoingMessage.objects.filter(state=MessageState.QUEUED).count() == 1


def test_staff_retry_of_an_invoices_failure_claims_the_invoice_so_the_composer_waits(client):
    user = _default_user()
    staff = factories.user("STAFF", is_staff=True)
    invoice = invoice_factories.invoice("FV/12/2026")
    client.force_login(user)
    client.post(f"/invoices/{invoice.pk}/send/", _compose())
    old = _failed(OutgoingMessage.objects.get())

    client.force_login(staff)
    _html(client.post(f"/staff/outbox/{old.pk}/retry/", follow=True))
    old.refresh_from_db()
    invoice.refresh_from_db()
    assert old.state == MessageState.QUEUED and invoice.send_state == SendState.QUEUED

    # The invoice is taken by the retried message: neither the composer nor a bulk job sends
    # it a second time meanwhile.
    client.force_login(user)
    html = _html(client.post(f"/invoices/{invoice.pk}/send/", _compose()))
    assert "being sent right now" in html
    assert OutgoingMessage.objects.count() == 1
