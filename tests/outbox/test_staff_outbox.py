"""Staff's outbox (issue 12, item 5): the list and its filters, a message's page with envelope
and headers, the raw .eml, and the retry / send now / cancel actions.

The actions' goal is tested end to end where it matters: a retried failed message reaches a
real aiosmtpd server exactly once through the real worker (`transactional_db`, `celery_worker`).
The page tests use plain `db`: on_commit callbacks are dropped there, so no worker is asked.
"""

from __future__ import annotations

import email
import email.policy
import secrets

import pytest
from django.test import Client

from outbox.models import BulkJob, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from tests import factories
from tests.outbox.waiting import settled

pytestmark = [pytest.mark.usefixtures("english")]

ONLY_FAILED = "Only a failed message can be retried."
BEING_SENT = "The message is being sent right now and can no longer be cancelled."


def _smtp_user(server, code: str = "ANNA", password: str = "", **card):
    login = f"{code.lower()}-login" if password else ""
    if login:
        server.users[login] = password
    user = factories.user(code, email=f"{code.lower()}@acme.example", **card)
    factories.profile(
        user,
        host=server.host,
        port=server.port,
        security="none" if server.name == "plain" else "starttls",
        login=login,
        password=password,
    )
    return user


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _copy_queued(message: OutgoingMessage) -> OutgoingMessage:
    """A queued twin of `message` that no task was scheduled for (plain ORM save)."""
    message.pk = None
    message.message_id = f"<{secrets.token_hex(8)}@acme.example>"
    message.state = MessageState.QUEUED
    message.attempts = 0
    message.sent_at = None
    message.save()
    return message


# -- end to end: the worker sends what staff asked for, once ----------------------------------
@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_staff_retries_a_failed_message_and_it_arrives_once(smtp_servers):
    server = smtp_servers.plain
    anna = _smtp_user(server)
    staff = factories.user("STAFF", is_staff=True)
    server.script("MAIL", "550 5.7.1 Sender refused for now", 1)

    message = settled(
        outbox_enqueue(user=anna, to=["client@example.com"], subject="FV 1", body_text="Hello")
    )
    assert message.state == MessageState.FAILED
    assert server.messages == []

    # The owner is not staff: no retry from here, and nothing leaves.
    assert _client(anna).post(f"/staff/outbox/{message.pk}/retry/").status_code == 403
    message.refresh_from_db()
    assert message.state == MessageState.FAILED

    staff_client = _client(staff)
    response = staff_client.post(f"/staff/outbox/{message.pk}/retry/", follow=True)
    assert response.status_code == 200
    message = settled(message)
    assert message.state == MessageState.SENT, message.last_reply
    [received] = server.wait_for(1)
    assert server.times_accepted(message.message_id) == 1

    # A second click (a double submit, or a stale page) is refused and sends nothing more.
    again = staff_client.post(f"/staff/outbox/{message.pk}/retry/", follow=True)
    assert ONLY_FAILED in again.content.decode()
    message = settled(message)
    assert server.times_accepted(message.message_id) == 1

    # The .eml is exactly what the server received, byte for byte.
    eml = staff_client.get(f"/staff/outbox/{message.pk}/eml/")
    assert eml["Content-Type"] == "message/rfc822"
    assert eml["Content-Disposition"].startswith("attachment;")
    assert eml.content == received.content


@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_send_now_hands_a_queued_message_to_the_worker_once(smtp_servers):
    server = smtp_servers.plain
    anna = _smtp_user(server)
    staff_client = _client(factories.user("STAFF", is_staff=True))
    first = settled(outbox_enqueue(user=anna, to=["c@example.com"], subject="S", body_text="B"))
    assert first.state == MessageState.SENT
    waiting = _copy_queued(first)

    staff_client.post(f"/staff/outbox/{waiting.pk}/send_now/")
    waiting = settled(waiting)

    assert waiting.state == MessageState.SENT
    server.wait_for(2)
    assert server.times_accepted(waiting.message_id) == 1
    refused = staff_client.post(f"/staff/outbox/{waiting.pk}/send_now/", follow=True)
    assert "Only a queued message can be sent now." in refused.content.decode()
    assert server.times_accepted(waiting.message_id) == 1


# -- pages and actions without a worker -------------------------------------------------------
@pytest.fixture
def outbox(db):
    anna = factories.user("ANNA")
    piotr = factories.user("PIOTR")
    staff = factories.user("STAFF", is_staff=True)
    job = BulkJob.objects.create(user=anna, kind="invoices", total=1)
    made = {
        "anna": outbox_enqueue(
            user=anna, to=["kowalski@example.com"], subject="Faktura 7/2026", body_text="<b>x</b>"
        ),
        "piotr": outbox_enqueue(
            user=piotr, to=["nowak@example.com"], subject="Letter to Nowak", body_text="Hi"
        ),
    }
    OutgoingMessage.objects.filter(pk=made["anna"].pk).update(job=job)
    OutgoingMessage.objects.filter(pk=made["piotr"].pk).update(state=MessageState.FAILED)
    return anna, piotr, staff, job, made


def test_the_list_filters_by_state_user_job_and_text(outbox):
    _anna, _piotr, staff, job, _made = outbox
    client = _client(staff)

    def shown(query: str) -> set[str]:
        html = client.get(f"/staff/outbox/?{query}").content.decode()
        return {s for s in ("Faktura 7/2026", "Letter to Nowak") if s in html}

    assert shown("") == {"Faktura 7/2026", "Letter to Nowak"}
    assert shown("state=failed") == {"Letter to Nowak"}
    assert shown("user=anna") == {"Faktura 7/2026"}
    assert shown(f"job={job.pk}") == {"Faktura 7/2026"}
    assert shown("text=nowak%40") == {"Letter to Nowak"}
    assert shown("text=faktura") == {"Faktura 7/2026"}
    assert shown("since=2999-01-01") == set()
    assert shown("until=2000-01-01") == set()


def test_bad_filters_are_explained_not_a_server_error(outbox):
    client = _client(outbox[2])
    response = client.get("/staff/outbox/?since=yesterday&job=x&state=lost&page=zz")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Enter a valid date." in html and "Enter a whole number." in html
    assert "Select a valid choice." in html


def test_non_staff_see_no_outbox_message_or_eml(outbox):
    anna, piotr, _staff, _job, made = outbox
    for user in (anna, piotr):
        client = _client(user)
        assert client.get("/staff/outbox/").status_code == 403
        for url in (f"/staff/outbox/{made['anna'].pk}/", f"/staff/outbox/{made['anna'].pk}/eml/"):
            response = client.get(url)
            assert response.status_code == 403
            assert b"Faktura 7/2026" not in response.content
    assert Client().get(f"/staff/outbox/{made['anna'].pk}/eml/").status_code == 302


def test_cancel_takes_a_queued_message_but_never_one_being_sent(outbox):
    _anna, _piotr, staff, job, made = outbox
    client = _client(staff)
    queued = made["anna"]

    assert (
        b"The message was cancelled."
        in client.post(f"/staff/outbox/{queued.pk}/cancel/", follow=True).content
    )
    queued.refresh_from_db()
    assert queued.state == MessageState.CANCELLED
    job.refresh_from_db()
    assert job.state == "finished"  # its last message is settled

    sending = _copy_queued(queued)
    OutgoingMessage.objects.filter(pk=sending.pk).update(state=MessageState.SENDING)
    html = client.post(f"/staff/outbox/{sending.pk}/cancel/", follow=True).content.decode()
    assert BEING_SENT in html
    sending.refresh_from_db()
    assert sending.state == MessageState.SENDING
    assert client.get(f"/staff/outbox/{sending.pk}/cancel/").status_code == 405
    assert client.post(f"/staff/outbox/{sending.pk}/explode/").status_code == 404


def test_a_possibly_duplicated_failure_is_not_retried(outbox):
    client = _client(outbox[2])
    failed = outbox[4]["piotr"]
    OutgoingMessage.objects.filter(pk=failed.pk).update(possibly_duplicated=True)
    html = client.post(f"/staff/outbox/{failed.pk}/retry/", follow=True).content.decode()
    assert "may already have arrived" in html
    failed.refresh_from_db()
    assert failed.state == MessageState.FAILED


def test_the_message_page_shows_envelope_and_headers_but_no_secret(db, smtp_servers):
    password = factories.secret()
    anna = _smtp_user(smtp_servers.plain, password=password, bcc="archive@acme.example")
    message = outbox_enqueue(
        user=anna,
        to=["client@example.com"],
        subject="<script>alert(1)</script>",
        body_text="Hi",
        body_html="<script>document.title='pwned'</script><p>Hi</p>",
    )
    client = _client(factories.user("STAFF", is_staff=True))

    html = client.get(f"/staff/outbox/{message.pk}/").content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "RCPT TO" in html and "archive@acme.example" in html  # staff see the envelope
    assert message.message_id.strip("<>") in html
    assert password not in html

    eml = client.get(f"/staff/outbox/{message.pk}/eml/")
    assert eml["Content-Type"] == "message/rfc822"
    assert eml["Content-Disposition"] == f'attachment; filename="message-{message.pk}.eml"'
    assert eml["X-Content-Type-Options"] == "nosniff"
    assert password.encode() not in eml.content
    parsed = email.message_from_bytes(eml.content, policy=email.policy.default)
    assert "Bcc" not in parsed and b"archive@acme.example" not in eml.content


def test_a_message_that_cannot_be_rebuilt_is_explained_not_a_server_error(outbox):
    client = _client(outbox[2])
    damaged = outbox[4]["anna"]
    OutgoingMessage.objects.filter(pk=damaged.pk).update(sender={"from_email": "a@acme.example"})
    cannot = "The message cannot be rebuilt from what is stored."

    page = client.get(f"/staff/outbox/{damaged.pk}/")
    assert page.status_code == 200 and cannot in page.content.decode()
    download = client.get(f"/staff/outbox/{damaged.pk}/eml/", follow=True)
    assert download.redirect_chain == [(f"/staff/outbox/{damaged.pk}/", 302)]
    assert cannot in download.content.decode()
