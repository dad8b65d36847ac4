"""The invoice list, the S1.2 gate, and a job's page without the worker.

Plain `db`: the request's transaction is the test's, so a job's on_commit dispatch never runs
and its messages stay queued — what cancel and resume need to be seen step by step.
"""

from __future__ import annotations

import pytest
from django.utils.html import escape

from invoices.models import Invoice, SendState
from invoices.services import invoices_job_prepare
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english"), pytest.mark.django_db]

LOCKED = "Mass mailing needs your own mail server"
SEND_SELECTED = 'name="action" value="selected"'
SEND_UNSENT = 'name="action" value="unsent"'


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def _button(html: str, marker: str) -> str:
    start = html.index(marker)
    return html[start : html.index(">", start)]


# -- the list ----------------------------------------------------------------------------------


def test_the_list_needs_a_login(client):
    response = client.get("/invoices/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_list_shows_invoices_with_their_totals_and_the_nav_link(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    customer = invoice_factories.customer(
        "Kowalski i Syn", emails=["a@kowalski.example", "b@kowalski.example"]
    )
    invoice_factories.invoice("FV/7/2026", customer=customer, currency="EUR")
    client.force_login(user)

    html = _html(client.get("/invoices/"))

    assert 'href="/invoices/"' in html  # the nav
    assert "FV/7/2026" in html and "Kowalski i Syn" in html
    assert "a@kowalski.example, b@kowalski.example" in html
    assert "123.00 EUR" in html
    assert 'type="checkbox" name="invoice"' in html


def test_filters_by_state_customer_and_number(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    kowalski = invoice_factories.customer("Kowalski")
    nowak = invoice_factories.customer("Nowak")
    invoice_factories.invoice("FV/1/2026", customer=kowalski)
    invoice_factories.invoice("FV/2/2026", customer=nowak, send_state=SendState.SENT)
    invoice_factories.invoice("KOR/3/2026", customer=nowak)
    client.force_login(user)

    def numbers(query: str) -> set[str]:
        html = _html(client.get(f"/invoices/?{query}"))
        return {n for n in ("FV/1/2026", "FV/2/2026", "KOR/3/2026") if n in html}

    assert numbers("") == {"FV/1/2026", "FV/2/2026", "KOR/3/2026"}
    assert numbers("state=sent") == {"FV/2/2026"}
    assert numbers("state=unsent") == {"FV/1/2026", "KOR/3/2026"}
    assert numbers("customer=nowa") == {"FV/2/2026", "KOR/3/2026"}
    assert numbers("number=kor") == {"KOR/3/2026"}
    assert numbers("customer=nowak&state=unsent") == {"KOR/3/2026"}


def test_paginated_by_fifty(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    invoice_factories.invoices(51, customer=invoice_factories.customer())
    client.force_login(user)

    first = _html(client.get("/invoices/"))
    second = _html(client.get("/invoices/?page=2"))

    assert first.count('name="invoice"') == 50
    assert second.count('name="invoice"') == 1
    assert "1 / 2" in first


def test_a_failed_invoice_shows_the_reason_and_links_its_latest_message(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    invoice = invoice_factories.invoice("FV/9/2026", send_state=SendState.FAILED)
    older = outbox_enqueue(user=user, to=["x@customer.example"], subject="1", body_text="-")
    latest = outbox_enqueue(
        user=user, to=["x@customer.example"], subject="2", body_text="-", related=invoice
    )
    OutgoingMessage.objects.filter(pk=latest.pk).update(
        state=MessageState.FAILED,
        explanation="recipient_unknown",
        last_reply="550 5.1.1 <x@customer.example>: Recipient address rejected",
    )
    client.force_login(user)

    html = _html(client.get("/invoices/"))

    assert escape("The recipient's address does not exist.") in html
    assert "550 5.1.1" in html
    assert f'href="/outbox/{latest.pk}/"' in html
    assert f'href="/outbox/{older.pk}/"' not in html


# -- the S1.2 gate -----------------------------------------------------------------------------


def test_a_relay_user_sees_the_buttons_disabled_and_why(client):
    user = factories.user("EWA")  # Default mode: the platform relay
    invoice_factories.invoice()
    client.force_login(user)

    html = _html(client.get("/invoices/"))

    assert LOCKED in html
    assert 'href="/accounts/card/#sender"' in html
    assert "disabled" in _button(html, SEND_SELECTED)
    assert "disabled" in _button(html, SEND_UNSENT)


@pytest.mark.parametrize("action", ["selected", "unsent"])
def test_a_relay_users_post_is_refused_and_queues_nothing(client, action):
    user = factories.user("EWA")
    invoice = invoice_factories.invoice()
    client.force_login(user)

    response = client.post(
        "/invoices/send/", {"action": action, "invoice": [invoice.pk]}, follow=True
    )

    html = _html(response)
    assert response.redirect_chain[-1][0] == "/invoices/"
    assert 'class="message error"' in html and LOCKED in html
    assert not BulkJob.objects.exists()
    assert not OutgoingMessage.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.UNSENT


def test_an_smtp_user_has_the_buttons_enabled(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    invoice_factories.invoice()
    client.force_login(user)

    html = _html(client.get("/invoices/"))

    assert LOCKED not in html
    assert "disabled" not in _button(html, SEND_SELECTED)
    assert "disabled" not in _button(html, SEND_UNSENT)


# -- sending without the worker ----------------------------------------------------------------


def test_send_selected_starts_a_job_with_the_selected_invoices_only(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    chosen, other = invoice_factories.invoices(2)
    client.force_login(user)

    response = client.post("/invoices/send/", {"action": "selected", "invoice": [chosen.pk]})

    job = BulkJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/jobs/{job.pk}/"
    assert job.total == 1
    chosen.refresh_from_db()
    other.refresh_from_db()
    assert (chosen.send_state, other.send_state) == (SendState.QUEUED, SendState.UNSENT)
    assert (chosen.job, other.job) == (job, None)
    assert not job.messages.exists()  # the worker builds them (prepare_job), not the request

    assert invoices_job_prepare(job_id=job.pk) == 1
    [message] = job.messages.all()
    assert message.related == chosen
    assert invoices_job_prepare(job_id=job.pk) == 0  # run again (a restart): nothing twice


def test_nothing_selected_says_so(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    invoice_factories.invoice()
    client.force_login(user)

    html = _html(client.post("/invoices/send/", {"action": "selected"}, follow=True))

    assert "Select the invoices to send first." in html
    assert not BulkJob.objects.exists()


@pytest.mark.parametrize("number", ["²", "Ⅻ", "1e3", "-1", "9" * 25, "abc"])
def test_a_selection_that_is_not_invoice_numbers_says_so(client, number):
    """Issue 11, item 12: `invoice=²` gave a 500 (str.isdigit() accepts it, int() does not)."""
    user = invoice_factories.smtp_user_without_server("ANNA")
    invoice = invoice_factories.invoice()
    client.force_login(user)

    response = client.post(
        "/invoices/send/", {"action": "selected", "invoice": [invoice.pk, number]}, follow=True
    )

    assert "Nothing was sent: the selection is not a list of invoices." in _html(response)
    assert not BulkJob.objects.exists()


def test_nothing_unsent_says_so_and_keeps_the_filters(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    invoice_factories.invoice(send_state=SendState.SENT)
    client.force_login(user)

    response = client.post("/invoices/send/?state=sent", {"action": "unsent"}, follow=True)

    assert response.redirect_chain[-1][0] == "/invoices/?state=sent"
    assert "Nothing to send: there are no unsent invoices." in _html(response)
    assert not OutgoingMessage.objects.exists()


def test_selected_invoices_already_sent_say_so(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    invoice = invoice_factories.invoice(send_state=SendState.SENT)
    client.force_login(user)

    html = _html(
        client.post("/invoices/send/", {"action": "selected", "invoice": [invoice.pk]}, follow=True)
    )

    assert "the selected invoices are already sent or being sent" in html
    assert not OutgoingMessage.objects.exists()


def test_the_send_url_refuses_get(client):
    client.force_login(invoice_factories.smtp_user_without_server("ANNA"))
    assert client.get("/invoices/send/").status_code == 405


# -- the job page, cancel and resume -----------------------------------------------------------


def _start(client, user, count: int = 3, *, built: bool = True) -> BulkJob:
    """Start a job of `count` invoices; `built`: and build its messages, as the worker would."""
    invoice_factories.invoices(count)
    client.force_login(user)
    response = client.post("/invoices/send/", {"action": "unsent"})
    assert response.status_code == 302, response.content
    job = BulkJob.objects.get(user=user)
    if built:
        invoices_job_prepare(job_id=job.pk)
    return job


def test_the_job_page_shows_progress_rows_and_cancel(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, user, built=False)

    html = _html(client.get(f"/jobs/{job.pk}/"))
    assert "Preparing the messages and their PDFs: 0 of 3 ready." in html
    assert "This job has no messages." not in html

    invoices_job_prepare(job_id=job.pk)  # what the worker does next
    html = _html(client.get(f"/jobs/{job.pk}/"))

    assert '<progress id="job-progress" max="100" value="0.0">' in html
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in html
    assert 'src="/static/js/progress.js"' in html
    assert f'data-progress-url="/jobs/{job.pk}/progress/"' in html
    assert html.count('class="message-row state-queued"') == 3
    assert f'action="/jobs/{job.pk}/cancel/"' in html
    assert f'action="/jobs/{job.pk}/resume/"' not in html


def test_the_progress_json(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, user)

    progress = client.get(f"/jobs/{job.pk}/progress/").json()

    assert progress["total"] == 3
    assert progress["remaining"] == 3
    assert progress["sent"] == progress["failed"] == progress["cancelled"] == 0
    assert progress["state"] == JobState.RUNNING
    assert progress["percent"] == 0


def test_cancel_then_resume(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, user)

    response = client.post(f"/jobs/{job.pk}/cancel/", follow=True)

    html = _html(response)
    assert "Cancelled: 3 invoices will not be sent." in html
    assert set(job.messages.values_list("state", flat=True)) == {MessageState.CANCELLED}
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.UNSENT}
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert f'action="/jobs/{job.pk}/resume/"' in html
    assert f'action="/jobs/{job.pk}/cancel/"' not in html
    assert "<noscript><meta" not in html  # nothing to follow
    assert client.get(f"/jobs/{job.pk}/progress/").json()["cancelled"] == 3

    html = _html(client.post(f"/jobs/{job.pk}/resume/", follow=True))

    assert "Resumed: 3 invoices queued again." in html
    assert set(job.messages.values_list("state", flat=True)) == {MessageState.QUEUED}
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.QUEUED}
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


def test_cancel_before_the_messages_are_built_then_resume(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, user, built=False)

    html = _html(client.post(f"/jobs/{job.pk}/cancel/", follow=True))

    assert "Cancelled: 3 invoices will not be sent." in html
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.UNSENT}
    assert client.get(f"/jobs/{job.pk}/progress/").json()["cancelled"] == 3
    assert invoices_job_prepare(job_id=job.pk) == 0  # the worker's task stops at once
    assert not job.messages.exists()

    html = _html(client.post(f"/jobs/{job.pk}/resume/", follow=True))

    assert "Resumed: 3 invoices queued again." in html
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.QUEUED}
    assert invoices_job_prepare(job_id=job.pk) == 3
    assert set(job.messages.values_list("state", flat=True)) == {MessageState.QUEUED}
    progress = client.get(f"/jobs/{job.pk}/progress/").json()
    assert (progress["state"], progress["remaining"], progress["cancelled"]) == ("running", 3, 0)


@pytest.mark.parametrize("built", [True, False], ids=["built", "not-built-yet"])
def test_resume_skips_an_invoice_another_job_took_meanwhile(client, built):
    user = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, user, count=2, built=built)
    client.post(f"/jobs/{job.pk}/cancel/")
    first, second = Invoice.objects.order_by("pk")
    client.post("/invoices/send/", {"action": "selected", "invoice": [first.pk]})
    other_job = BulkJob.objects.exclude(pk=job.pk).get()

    html = _html(client.post(f"/jobs/{job.pk}/resume/", follow=True))
    invoices_job_prepare(job_id=job.pk)
    invoices_job_prepare(job_id=other_job.pk)

    assert "Resumed: 1 invoice queued again." in html
    [queued] = job.messages.filter(state=MessageState.QUEUED)
    assert queued.related == second
    [other] = other_job.messages.all()
    assert other.related == first


def test_resume_and_cancel_only_when_they_make_sense(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, user, count=1)

    html = _html(client.post(f"/jobs/{job.pk}/resume/", follow=True))
    assert "Only a cancelled job can be resumed." in html

    client.post(f"/jobs/{job.pk}/cancel/")
    html = _html(client.post(f"/jobs/{job.pk}/cancel/", follow=True))
    assert "The job is no longer running." in html


def test_resume_is_refused_once_the_user_sends_through_the_relay(client):
    user = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, user, count=1)
    client.post(f"/jobs/{job.pk}/cancel/")
    user.sender_profile.delete()

    html = _html(client.post(f"/jobs/{job.pk}/resume/", follow=True))

    assert LOCKED in html
    assert set(job.messages.values_list("state", flat=True)) == {MessageState.CANCELLED}


def test_staff_resuming_a_job_whose_owner_lost_the_gate_gets_the_reason(client):
    """The gate is the job owner's, checked once in the service: never a 500 for staff."""
    user = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, user, count=1)
    client.post(f"/jobs/{job.pk}/cancel/")
    user.sender_profile.delete()
    staff = factories.user("ADMIN", is_staff=True)
    factories.profile(staff, host="smtp.acme.example", port=587, security="starttls")
    client.force_login(staff)

    response = client.post(f"/jobs/{job.pk}/resume/", follow=True)

    assert response.status_code == 200
    assert LOCKED in _html(response)
    assert set(job.messages.values_list("state", flat=True)) == {MessageState.CANCELLED}


def test_the_jobs_list_shows_own_jobs_with_something_to_send(client):
    anna = invoice_factories.smtp_user_without_server("ANNA")
    piotr = invoice_factories.smtp_user_without_server("PIOTR")
    job = _start(client, anna, count=2)
    empty = BulkJob.objects.create(user=anna, kind="invoices", total=0, description="empty")
    others = BulkJob.objects.create(user=piotr, kind="invoices", total=1, description="other")

    html = _html(client.get("/jobs/"))

    assert f'href="/jobs/{job.pk}/"' in html
    assert f'href="/jobs/{empty.pk}/"' not in html
    assert f'href="/jobs/{others.pk}/"' not in html
    assert "0 / 2" in html


# -- access control ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/jobs/{pk}/", "/jobs/{pk}/progress/"])
def test_only_the_owner_and_staff_see_a_job(client, path):
    anna = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, anna, count=1)
    url = path.format(pk=job.pk)

    assert client.get(url).status_code == 200
    client.force_login(factories.user("PIOTR"))
    assert client.get(url).status_code == 404
    client.force_login(factories.user("ADMIN", is_staff=True))
    assert client.get(url).status_code == 200
    client.logout()
    assert client.get(url).status_code == 302  # to the login page


@pytest.mark.parametrize("action", ["cancel", "resume"])
def test_another_user_cannot_cancel_or_resume(client, action):
    anna = invoice_factories.smtp_user_without_server("ANNA")
    job = _start(client, anna, count=1)
    client.force_login(factories.user("PIOTR"))

    assert client.post(f"/jobs/{job.pk}/{action}/").status_code == 404
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


@pytest.mark.parametrize("emails", [["kowalski(at)example.pl"], []], ids=["invalid", "none"])
def test_an_invoice_whose_customer_has_no_valid_address_fails_with_the_reason(client, emails):
    """The others of the job go on; that invoice's row says what to correct."""
    user = invoice_factories.smtp_user_without_server("ANNA")
    bad = invoice_factories.invoice(
        customer=invoice_factories.customer("Kowalski", emails=emails), number="FV/9/2026"
    )
    job = _start(client, user, count=2)

    assert job.total == 3
    message = job.messages.get(related_id=str(bad.pk))
    reason = "bad_recipient" if emails else "no_recipient"
    assert (message.state, message.explanation) == (MessageState.FAILED, reason)
    bad.refresh_from_db()
    assert bad.send_state == SendState.FAILED
    assert job.messages.filter(state=MessageState.QUEUED).count() == 2
    html = _html(client.get(f"/jobs/{job.pk}/"))
    if emails:
        assert "e-mail address is missing or not valid" in html
        assert f"(it reads: “{emails[0]}”)" in html
    else:
        assert "the customer has no e-mail address" in html
