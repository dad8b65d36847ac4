"""Letters as bulk mail (issue 12, item 7): the one-click List-Unsubscribe (RFC 8058) and its
link, the customer's opt-out that later letter jobs respect (invoices do not), hard-bounced
addresses skipped with the same override as invoices, a failed delivery sent again, the admin;
and the attacks: forged or altered tokens, link scanners, cross-site POSTs, header injection."""

from __future__ import annotations

import time
import urllib.request
from email import message_from_bytes, policy

import pytest
from django.core import mail, signing
from django.core.exceptions import ValidationError
from django.db import DataError, connection, transaction
from django.test import Client
from django.utils import timezone

from invoices.models import Customer, Letter, LetterDelivery
from invoices.services import invoice_send_one, letters_send
from invoices.unsubscribe import (
    customer_letters_opt_out,
    unsubscribe_token,
    unsubscribe_token_read,
    unsubscribe_url,
)
from outbox.message import build_message, extra_headers_check
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from outbox.staff import StaffActionRefused, outbox_message_retry
from smtp_settings.errors import PermanentSendError
from smtp_settings.resolve import SenderConfig
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english")]

ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"


def _letter(user, subject="News for {{ customer.name }}", body="Dear {{ customer.name }},\n"):
    return Letter.objects.create(subject=subject, body=body, created_by=user)


def _path(customer: Customer, letter: Letter) -> str:
    return f"/unsubscribe/{unsubscribe_token(customer_id=customer.pk, letter_id=letter.pk)}/"


def _mime(message: OutgoingMessage):
    """The message as the worker builds it, read back from its bytes as a receiver would."""
    built = build_message(message, SenderConfig.from_snapshot(message.sender))
    return message_from_bytes(built.as_bytes(policy=policy.SMTP), policy=policy.default)


def _opted_out(customer: Customer) -> bool:
    customer.refresh_from_db()
    return customer.letters_opted_out_at is not None


# -- the token ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_token_names_customer_and_letter_and_a_forged_one_names_nobody():
    token = unsubscribe_token(customer_id=12, letter_id=5)
    assert unsubscribe_token_read(token) == (12, 5)
    value, signature = token.split(":")
    forged = [
        f"13-5:{signature}",  # another customer, the signature kept
        f"12-6:{signature}",
        f"{value}:{signature[:-1]}",
        f"{value}:",
        value,
        "",
        "12-5:" + "A" * len(signature),
        signing.Signer(salt="directo_mail.email_verification").sign("12-5"),  # another salt
        signing.Signer(salt="directo_mail.invoices.unsubscribe", key="x" * 50).sign("12-5"),
        signing.dumps({"c": 12}),
    ]
    assert [unsubscribe_token_read(t) for t in forged] == [None] * len(forged)
    # Our own signature over something that is not two ids (never made, but still refused).
    odd = signing.Signer(salt="directo_mail.invoices.unsubscribe")
    assert unsubscribe_token_read(odd.sign("²-1")) is None
    assert unsubscribe_token_read(odd.sign("12")) is None


def test_the_link_is_on_the_public_base_url_never_the_request_host(settings):
    settings.PUBLIC_BASE_URL = "https://mail.example.com"
    url = unsubscribe_url(customer_id=3, letter_id=4)
    token = unsubscribe_token(customer_id=3, letter_id=4)
    assert url == f"https://mail.example.com/unsubscribe/{token}/"


# -- the page and the one-click POST -----------------------------------------------------------
@pytest.mark.django_db
def test_a_get_or_head_shows_the_page_and_opts_nobody_out(client):
    """Link scanners and previews follow GETs: only the POST opts out."""
    factories.company("Acme Sp. z o.o.")
    customer = invoice_factories.customer("Kowalski")
    letter = _letter(factories.user("ANNA"))

    response = client.get(_path(customer, letter))
    client.head(_path(customer, letter))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Stop receiving letters from Acme Sp. z o.o. by e-mail?" in html
    assert '<form method="post">' in html and ">Unsubscribe</button>" in html
    assert "Kowalski" not in html  # the page names nobody to whoever holds the link
    assert response["Referrer-Policy"] == "no-referrer"
    assert not _opted_out(customer)


@pytest.mark.django_db
def test_the_one_click_post_without_cookies_opts_out_idempotently_and_sends_nothing():
    """RFC 8058 §3.2: the mailbox provider POSTs `List-Unsubscribe=One-Click`, with no cookie
    and no CSRF token."""
    factories.company()
    customer = invoice_factories.customer("Kowalski")
    other = invoice_factories.customer("Nowak")
    letter = _letter(factories.user("ANNA"))
    provider = Client(enforce_csrf_checks=True)  # no session, no cookie, no token
    messages_before = OutgoingMessage.objects.count()

    first = provider.post(_path(customer, letter), ONE_CLICK, content_type=FORM)

    assert first.status_code == 200
    assert "You are unsubscribed" in first.content.decode()
    customer.refresh_from_db()
    when = customer.letters_opted_out_at
    assert when is not None and customer.letters_opted_out_letter == letter
    again = provider.post(_path(customer, letter), ONE_CLICK, content_type=FORM)
    assert again.status_code == 200
    customer.refresh_from_db()
    assert customer.letters_opted_out_at == when  # the first time is kept
    assert not _opted_out(other)
    assert OutgoingMessage.objects.count() == messages_before and not mail.outbox


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["en", "pl", "et"])
def test_a_forged_or_altered_token_opts_nobody_out_and_says_so_in_the_readers_language(language):
    customer = invoice_factories.customer("Kowalski")
    victim = invoice_factories.customer("Nowak")
    letter = _letter(factories.user("ANNA"))
    token = unsubscribe_token(customer_id=customer.pk, letter_id=letter.pk)
    signature = token.split(":")[1]
    titles = {
        "en": "This unsubscribe link is not valid",
        "pl": "Ten link do wypisania się jest nieprawidłowy",
        "et": "See loobumislink ei kehti",
    }
    client = Client(HTTP_ACCEPT_LANGUAGE=language, raise_request_exception=False)
    for bad in (
        f"{victim.pk}-{letter.pk}:{signature}",  # another customer, the signature kept
        f"{customer.pk}-{letter.pk}:{signature[::-1]}",
        "garbage",
        "1-1:%C2%B2",
        "9" * 40 + "-1:x",
    ):
        for response in (
            client.get(f"/unsubscribe/{bad}/"),
            client.post(f"/unsubscribe/{bad}/", ONE_CLICK, content_type=FORM),
        ):
            assert response.status_code == 404, (bad, response.status_code)
            assert titles[language] in response.content.decode()
    assert not _opted_out(customer) and not _opted_out(victim)


@pytest.mark.django_db
def test_a_deleted_customers_link_is_a_clear_404():
    customer = invoice_factories.customer("Kowalski")
    letter = _letter(factories.user("ANNA"))
    path = _path(customer, letter)
    customer.delete()
    response = Client().post(path, ONE_CLICK, content_type=FORM)
    assert response.status_code == 404
    assert "This unsubscribe link is not valid" in response.content.decode()


@pytest.mark.django_db
def test_the_page_escapes_the_company_name(client):
    factories.company('<script>alert(1)</script><img src=x onerror="alert(2)">')
    customer = invoice_factories.customer()
    letter = _letter(factories.user("ANNA"))
    for response in (
        client.get(_path(customer, letter)),
        client.post(_path(customer, letter), ONE_CLICK, content_type=FORM),
    ):
        html = response.content.decode()
        assert "<script>alert(1)" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.django_db
def test_opting_out_cancels_the_customers_letters_still_queued_and_resume_leaves_them(client):
    user = invoice_factories.smtp_user_without_server("ANNA")  # no worker: messages stay queued
    client.force_login(user)
    leaving = invoice_factories.customer("Leaving")
    staying = invoice_factories.customer("Staying")
    letter = _letter(user)
    job = letters_send(user=user, letter=letter, customer_ids=[leaving.pk, staying.pk])

    customer_letters_opt_out(customer_id=leaving.pk, letter_id=letter.pk)

    states = dict(job.messages.values_list("related_id", "state"))
    assert states == {str(leaving.pk): MessageState.CANCELLED, str(staying.pk): MessageState.QUEUED}
    client.post(f"/jobs/{job.pk}/cancel/")
    client.post(f"/jobs/{job.pk}/resume/")
    states = dict(job.messages.values_list("related_id", "state"))
    assert states == {str(leaving.pk): MessageState.CANCELLED, str(staying.pk): MessageState.QUEUED}


# -- what a letter carries, and what an invoice does not ---------------------------------------
@pytest.mark.django_db
def test_a_letter_carries_the_one_click_headers_and_a_last_line_in_the_customers_language(
    settings,
):
    settings.PUBLIC_BASE_URL = "https://mail.example.com"
    factories.company("Acme Sp. z o.o.")
    user = invoice_factories.smtp_user_without_server("ANNA")
    polish = invoice_factories.customer("Kowalski", language="pl")
    english = invoice_factories.customer("Smith", language="en")
    letter = _letter(user)

    job = letters_send(user=user, letter=letter, customer_ids=[polish.pk, english.pk])

    by_customer = {m.related_id: m for m in job.messages.all()}
    for customer, line in (
        (polish, "Aby nie otrzymywać więcej listów od Acme Sp. z o.o., otwórz ten link:"),
        (english, "To receive no more letters from Acme Sp. z o.o., open this link:"),
    ):
        message = by_customer[str(customer.pk)]
        url = unsubscribe_url(customer_id=customer.pk, letter_id=letter.pk)
        assert url.startswith("https://mail.example.com/unsubscribe/")
        received = _mime(message)
        assert received["List-Unsubscribe"] == f"<{url}>"  # one URL, no encoded word, no mailto
        assert received["List-Unsubscribe-Post"] == ONE_CLICK
        body = received.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert body.startswith(f"Dear {customer.name},\n")
        assert f"{line} {url}\n" in body


@pytest.mark.django_db
def test_invoices_still_go_to_an_opted_out_customer_and_carry_no_unsubscribe():
    factories.company()
    user = invoice_factories.smtp_user_without_server("ANNA")
    customer = invoice_factories.customer("Kowalski", emails=["k@kowalski.example"])
    customer_letters_opt_out(customer_id=customer.pk, letter_id=0)
    invoice = invoice_factories.invoice("FV/7/2026", customer=customer)

    message = invoice_send_one(
        user=user, invoice=invoice, to=["k@kowalski.example"], subject="Invoice", body="Hi"
    )

    assert message.extra_headers == {}
    received = _mime(message)
    assert received["List-Unsubscribe"] is None and received["List-Unsubscribe-Post"] is None
    assert "/unsubscribe/" not in received.as_string()


# -- header injection --------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [
        {"Bcc": "eve@attacker.example"},
        {"From": "ceo@acme.example"},
        {"list-unsubscribe": "<https://x.example/>"},  # the allow-list is exact
        {"List-Unsubscribe": "<https://x.example/>\r\nBcc: eve@attacker.example"},
        {"List-Unsubscribe": "<https://x.example/>\nBcc: eve@attacker.example"},
        {"List-Unsubscribe": "<https://x.example/>\u2028Bcc: eve@attacker.example"},
        {"List-Unsubscribe": "<https://x.example/\x00>"},
        {"List-Unsubscribe": "<https://é.example/>"},
        {"List-Unsubscribe": "<https://x.example/" + "a" * 1000 + ">"},
        {"List-Unsubscribe": 7},
    ],
)
def test_extra_headers_outside_the_allow_list_or_with_a_line_break_are_refused(headers):
    user = invoice_factories.smtp_user_without_server("ANNA")
    with pytest.raises(ValueError):
        extra_headers_check(headers)
    with pytest.raises(ValueError):
        outbox_enqueue(
            user=user, to=["a@b.example"], subject="S", body_text="B", extra_headers=headers
        )
    assert not OutgoingMessage.objects.exists()
    # A row changed behind the service's back is never built either: it fails, named.
    message = outbox_enqueue(user=user, to=["a@b.example"], subject="S", body_text="B")
    if connection.vendor == "postgresql" and any("\x00" in str(v) for v in headers.values()):
        # PostgreSQL cannot even store a NUL in JSON: the row can't be changed that way at all.
        with pytest.raises(DataError), transaction.atomic():
            OutgoingMessage.objects.filter(pk=message.pk).update(extra_headers=headers)
        return
    OutgoingMessage.objects.filter(pk=message.pk).update(extra_headers=headers)
    message.refresh_from_db()
    with pytest.raises(PermanentSendError) as refused:
        build_message(message, SenderConfig.from_snapshot(message.sender))
    assert refused.value.explanation == "header_line_break"


@pytest.mark.django_db
def test_no_header_can_be_injected_through_a_letter_subject_or_a_customer_name(settings):
    settings.PUBLIC_BASE_URL = "https://mail.example.com\r\nBcc: eve@attacker.example"
    user = invoice_factories.smtp_user_without_server("ANNA")
    sneaky = invoice_factories.customer(
        "Acme\r\nList-Unsubscribe: <https://attacker.example/>", language="en"
    )
    letter = _letter(user, subject="News", body="Dear {{ customer.name }}\n")
    job = letters_send(user=user, letter=letter, customer_ids=[sneaky.pk])
    received = _mime(job.messages.get())
    # The name stays in the body; the link stays one percent-encoded URL on our one header.
    assert received.get_all("List-Unsubscribe") == [received["List-Unsubscribe"]]
    assert "https://attacker.example/" not in received["List-Unsubscribe"]
    assert received["Bcc"] is None
    assert "%0D%0ABcc" in received["List-Unsubscribe"]

    encoded = _letter(user, subject="News =?utf-8?q?=0D=0AList-Unsubscribe=3A_x?=")
    with pytest.raises(ValidationError):
        letters_send(user=user, letter=encoded, customer_ids=[sneaky.pk])
    assert job.messages.count() == 1 and OutgoingMessage.objects.count() == 1


# -- who a letter job skips --------------------------------------------------------------------
@pytest.mark.django_db
def test_the_job_skips_opted_out_bounced_and_addressless_customers_and_says_why(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(user)
    fine = invoice_factories.customer("Fine", emails=["f@fine.example"])
    opted = invoice_factories.customer("Opted", emails=["o@opted.example"])
    bounced = invoice_factories.customer("Bounced", emails=["b@bounced.example", "c@b.example"])
    half = invoice_factories.customer("Half", emails=["h@half.example", "x@half.example"])
    none = invoice_factories.customer("None", emails=[])
    Customer.objects.filter(pk=bounced.pk).update(
        bounced_emails={"b@bounced.example": "2026-11-01", "c@b.example": "2026-11-01"}
    )
    Customer.objects.filter(pk=half.pk).update(bounced_emails={"x@half.example": "2026-11-01"})
    customer_letters_opt_out(customer_id=opted.pk, letter_id=0)
    letter = _letter(user)
    everyone = [fine.pk, opted.pk, bounced.pk, half.pk, none.pk]

    page = client.get(f"/letters/{letter.pk}/").content.decode()
    assert "opted out of letters" in page and "every address bounced" in page
    checkbox = page[page.index(f'value="{opted.pk}" id="customer-') :]
    assert "disabled" in checkbox[: checkbox.index(">")]

    response = client.post(f"/letters/{letter.pk}/send/", {"customer": everyone})

    job = BulkJob.objects.get()
    assert response["Location"] == f"/jobs/{job.pk}/"
    to = {m.related_id: m.to for m in job.messages.all()}
    assert to == {str(fine.pk): ["f@fine.example"], str(half.pk): ["h@half.example"]}
    assert job.options["skipped"] == {"opted_out": 1, "no_address": 1, "bounced": 1, "taken": 0}
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "1 customer opted out of letters." in html
    assert "1 customer: every address bounced before." in html
    assert "1 customer has no e-mail address." in html

    # The same override as the invoices': the bounced addresses too; the opt-out still holds.
    client.post(f"/letters/{letter.pk}/send/", {"customer": everyone, "include_bounced": "on"})
    again = BulkJob.objects.latest("pk")
    assert [m.to for m in again.messages.all()] == [["b@bounced.example", "c@b.example"]]
    assert again.options["skipped"]["opted_out"] == 1 and again.options["skipped"]["taken"] == 2

    # Nothing left: the message says why.
    html = client.post(
        f"/letters/{letter.pk}/send/", {"customer": [opted.pk, none.pk]}, follow=True
    ).content.decode()
    assert (
        "Nothing to send: 1 customer opted out of letters. 1 customer has no e-mail address."
        in html
    )


# -- a failed delivery, sent again -------------------------------------------------------------
def _fail(message: OutgoingMessage, **fields) -> None:
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.FAILED, explanation="bad_recipient", **fields
    )


@pytest.mark.django_db
def test_a_failed_delivery_is_sent_again_and_never_one_that_may_have_arrived(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(user)
    failed, maybe, sent, queued = (
        invoice_factories.customer(name) for name in ("Failed", "Maybe", "Sent", "Queued")
    )
    letter = _letter(user)
    job = letters_send(
        user=user, letter=letter, customer_ids=[failed.pk, maybe.pk, sent.pk, queued.pk]
    )
    by_customer = {m.related_id: m for m in job.messages.all()}
    old = by_customer[str(failed.pk)]
    _fail(old)
    _fail(by_customer[str(maybe.pk)], possibly_duplicated=True)
    OutgoingMessage.objects.filter(pk=by_customer[str(sent.pk)].pk).update(state=MessageState.SENT)
    # The customer's address was corrected since.
    Customer.objects.filter(pk=failed.pk).update(emails=["fixed@failed.example"])

    page = client.get(f"/letters/{letter.pk}/").content.decode()
    assert "Send again to the 1 customer whose delivery failed" in page

    response = client.post(f"/letters/{letter.pk}/send/", {"action": "failed"})

    again = BulkJob.objects.latest("pk")
    assert response["Location"] == f"/jobs/{again.pk}/" and again.total == 1
    [new] = again.messages.all()
    assert (new.related_id, new.to) == (str(failed.pk), ["fixed@failed.example"])
    assert LetterDelivery.objects.get(letter=letter, customer=failed).message == new
    old.refresh_from_db()
    # Retired, with its reply kept: staff's retry cannot send it next to the new one.
    assert (old.state, old.explanation) == (MessageState.CANCELLED, "bad_recipient")
    with pytest.raises(StaffActionRefused):
        outbox_message_retry(message=old)
    # The others (possibly sent, sent, queued) are never taken again, chosen by hand either.
    client.post(f"/letters/{letter.pk}/send/", {"customer": [maybe.pk, sent.pk, queued.pk]})
    assert BulkJob.objects.latest("pk").options["skipped"]["taken"] == 3
    assert OutgoingMessage.objects.count() == 5


@pytest.mark.django_db
def test_staffs_retry_first_keeps_the_delivery_from_being_sent_again(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    client.force_login(user)
    customer = invoice_factories.customer("Failed")
    letter = _letter(user)
    job = letters_send(user=user, letter=letter, customer_ids=[customer.pk])
    message = job.messages.get()
    _fail(message)
    message.refresh_from_db()
    outbox_message_retry(message=message)  # queued again

    client.post(f"/letters/{letter.pk}/send/", {"customer": [customer.pk]})

    assert BulkJob.objects.latest("pk").options["skipped"]["taken"] == 1
    assert OutgoingMessage.objects.count() == 1


# -- the admin ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_staff_see_and_clear_the_opt_out_in_the_admin(client):
    client.force_login(factories.user("ROOT", is_staff=True, is_superuser=True))
    opted = invoice_factories.customer("Opted")
    other = invoice_factories.customer("Other")
    customer_letters_opt_out(customer_id=opted.pk, letter_id=0)

    listing = client.get("/admin/invoices/customer/?letters=opted_out").content.decode()
    assert "Opted" in listing and ">Other<" not in listing
    change = client.get(f"/admin/invoices/customer/{opted.pk}/change/").content.decode()
    assert "Opted out of letters" in change
    assert 'name="letters_opted_out_at"' not in change  # read-only: no hand sets it

    response = client.post(
        "/admin/invoices/customer/",
        {"action": "resubscribe_letters", "_selected_action": [opted.pk, other.pk]},
        follow=True,
    )

    assert "1 customer receives letters again." in response.content.decode()
    assert not _opted_out(opted) and not _opted_out(other)


# -- done when: through the worker, the header's URL, a POST without cookies ------------------
@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_done_when_the_received_link_opts_out_and_the_next_letter_job_skips_them(
    client, live_server, smtp_servers, settings
):
    settings.PUBLIC_BASE_URL = live_server.url
    server = smtp_servers.plain
    factories.company()
    user = invoice_factories.smtp_sender("ANNA", server)
    client.force_login(user)
    leaving = invoice_factories.customer("Leaving", emails=["l@leaving.example"], language="en")
    staying = invoice_factories.customer("Staying", emails=["s@staying.example"], language="pl")
    first = _letter(user, subject="First for {{ customer.name }}")

    client.post(f"/letters/{first.pk}/send/", {"customer": [leaving.pk, staying.pk]})

    received = {m.rcpt_tos[0]: m.message for m in server.wait_for(2)}
    mime = received["l@leaving.example"]
    assert mime["List-Unsubscribe-Post"] == ONE_CLICK
    url = mime["List-Unsubscribe"].strip("<>")
    assert url.startswith(f"{live_server.url}/unsubscribe/")
    assert url in mime.get_body(("plain",)).get_content()
    # The mailbox provider's one-click POST: a plain HTTP client, no cookie, no CSRF token.
    request = urllib.request.Request(  # noqa: S310 (an http URL of our live server)
        url, data=ONE_CLICK.encode(), headers={"Content-Type": FORM}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (our live server)
        assert answer.status == 200
    assert _opted_out(leaving) and not _opted_out(staying)

    second = _letter(user, subject="Second for {{ customer.name }}")
    client.post(f"/letters/{second.pk}/send/", {"customer": [leaving.pk, staying.pk]})
    job = BulkJob.objects.latest("pk")
    deadline = time.monotonic() + 20
    while client.get(f"/jobs/{job.pk}/progress/").json()["state"] != JobState.FINISHED:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server.wait_for(3)
    time.sleep(0.5)  # a letter to the customer who left would arrive now
    assert [m.rcpt_tos for m in server.messages[2:]] == [["s@staying.example"]]
    assert server.messages[2].message["Subject"] == "Second for Staying"
    assert "1 customer opted out of letters." in client.get(f"/jobs/{job.pk}/").content.decode()
    assert timezone.now() >= Customer.objects.get(pk=leaving.pk).letters_opted_out_at
