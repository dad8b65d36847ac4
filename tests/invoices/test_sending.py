"""Bulk invoice sending through the real worker to a real SMTP server (S1.2).

The worker reads the database in its own connection, so these tests commit
(`transactional_db`). The sender of every job is a user whose card points at
smtp_servers.plain (SMTP, no TLS, no AUTH): mass mailing is allowed for them.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from invoices.models import Invoice, SendState
from outbox.models import BulkJob, JobState, MessageState
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english", "celery_worker", "transactional_db")]


def _progress(client: Client, job: BulkJob) -> dict:
    response = client.get(f"/jobs/{job.pk}/progress/")
    assert response.status_code == 200
    return response.json()


def _until_stopped(client: Client, job: BulkJob, timeout: float = 20.0) -> dict:
    """Poll the progress JSON, as the page does, until the job stops running and the message
    in flight at a cancel is settled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = _progress(client, job)
        if progress["state"] != JobState.RUNNING and not progress["remaining"]:
            return progress
        time.sleep(0.1)
    raise AssertionError(f"job still running after {timeout}s: {progress}")


def _send(client: Client, data: dict) -> BulkJob:
    response = client.post("/invoices/send/", data)
    assert response.status_code == 302, response.content
    job = BulkJob.objects.latest("pk")
    assert response["Location"] == f"/jobs/{job.pk}/"
    return job


def _mixed_invoices(count: int) -> list[Invoice]:
    """Invoices for a Polish and an English customer, alternately."""
    polish = invoice_factories.customer("Kowalski Sp. j.", language="pl")
    english = invoice_factories.customer("Smith Ltd", language="en")
    return [
        invoice_factories.invoice(customer=polish if i % 2 == 0 else english) for i in range(count)
    ]


def _check_delivered(server, invoices: list[Invoice]) -> None:
    """Each invoice arrived exactly once, in its customer's language, with its PDF."""
    received = server.wait_for(len(invoices))
    time.sleep(0.2)  # anything sent twice would arrive right after
    by_subject = collections.Counter(m.message["Subject"] for m in server.messages)
    assert len(server.messages) == len(invoices), by_subject
    for invoice in invoices:
        invoice.refresh_from_db()
        subject = {"pl": "Faktura", "en": "Invoice"}[invoice.customer.language]
        subject = f"{subject} {invoice.number}"
        assert by_subject[subject] == 1, by_subject
        [mail] = [m for m in received if m.message["Subject"] == subject]
        assert mail.rcpt_tos == invoice.customer.emails
        [pdf] = list(mail.message.iter_attachments())
        assert pdf.get_content_type() == "application/pdf"
        assert pdf.get_filename() == f"{invoice.number.replace('/', '-')}.pdf"
        assert pdf.get_content().startswith(b"%PDF")
        assert invoice.send_state == SendState.SENT
        assert invoice.sent_at is not None
    assert all(count == 1 for count in server.accepted.values())


def test_send_selected_delivers_each_chosen_invoice_once_with_its_pdf(client, smtp_servers):
    server = smtp_servers.plain
    client.force_login(invoice_factories.smtp_sender("ANNA", server))
    *chosen, left_out = _mixed_invoices(5)

    job = _send(client, {"action": "selected", "invoice": [i.pk for i in chosen]})
    progress = _until_stopped(client, job)

    assert progress["state"] == JobState.FINISHED
    assert (progress["total"], progress["sent"], progress["remaining"]) == (4, 4, 0)
    assert progress["percent"] == 100
    _check_delivered(server, chosen)
    left_out.refresh_from_db()
    assert left_out.send_state == SendState.UNSENT
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    assert html.count('class="message-row state-sent"') == 4
    assert "250 " in html  # the server's reply on each row
    assert "<noscript><meta" not in html  # finished: nothing to refresh


def test_send_all_unsent_and_again_sends_nothing_twice(client, smtp_servers):
    server = smtp_servers.plain
    client.force_login(invoice_factories.smtp_sender("ANNA", server))
    unsent = _mixed_invoices(6)
    already = invoice_factories.invoice(send_state=SendState.SENT)

    job = _send(client, {"action": "unsent"})
    progress = _until_stopped(client, job)

    assert (progress["total"], progress["sent"], progress["failed"]) == (6, 6, 0)
    _check_delivered(server, unsent)
    assert already.number not in {m.message["Subject"].split()[-1] for m in server.messages}

    # Clicking again: nothing to send, and the job made says so with no message.
    response = client.post("/invoices/send/", {"action": "unsent"}, follow=True)
    assert "Nothing to send: there are no unsent invoices." in response.content.decode()
    second = BulkJob.objects.latest("pk")
    assert second.pk != job.pk and second.messages.count() == 0
    # Nor do the same invoices go again when selected by hand.
    client.post("/invoices/send/", {"action": "selected", "invoice": [i.pk for i in unsent]})
    assert BulkJob.objects.latest("pk").messages.count() == 0
    time.sleep(0.5)
    assert len(server.messages) == 6


def test_two_users_sending_the_same_invoices_send_each_once(smtp_servers):
    server = smtp_servers.plain
    users = [
        invoice_factories.smtp_sender("ANNA", server),
        invoice_factories.smtp_sender("PIOTR", server),
    ]
    invoices = _mixed_invoices(10)
    ids = [i.pk for i in invoices]
    start = threading.Barrier(len(users))
    responses: list = []

    def click(user) -> None:
        client = Client()
        client.force_login(user)
        try:
            start.wait(5)
            responses.append(client.post("/invoices/send/", {"action": "selected", "invoice": ids}))
        finally:
            connection.close()  # this thread's connection

    threads = [threading.Thread(target=click, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(r.status_code for r in responses) == [302, 302]
    jobs = list(BulkJob.objects.filter(user__in=users))
    assert len(jobs) == 2
    assert sum(job.total for job in jobs) == 10  # each invoice claimed by one job only
    watcher = Client()
    watcher.force_login(users[0])
    for job in jobs:
        watcher.force_login(job.user)
        if job.total:
            assert _until_stopped(watcher, job)["sent"] == job.total
    assert sum(job.messages.count() for job in jobs) == 10
    _check_delivered(server, invoices)


def test_cancel_while_sending_then_resume(client, smtp_servers):
    """The worker is held in the first message's SMTP transaction; cancel lands meanwhile."""
    server = smtp_servers.plain
    server.stall_at("MAIL", 1.5)
    client.force_login(invoice_factories.smtp_sender("ANNA", server))
    invoices = _mixed_invoices(5)

    job = _send(client, {"action": "unsent"})
    deadline = time.monotonic() + 15
    while not job.messages.filter(state=MessageState.SENDING).exists():
        assert time.monotonic() < deadline, "the worker never picked the job up"
        time.sleep(0.02)
    response = client.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert "Cancelled: 4 invoices will not be sent." in response.content.decode()

    # The message already being sent finishes; the rest wait, and their invoices are unsent.
    progress = _until_stopped(client, job)
    assert progress["state"] == JobState.CANCELLED
    assert (progress["sent"], progress["cancelled"], progress["remaining"]) == (1, 4, 0)
    server.wait_for(1)
    first = Invoice.objects.get(pk=invoices[0].pk)
    assert first.send_state == SendState.SENT
    assert set(Invoice.objects.exclude(pk=first.pk).values_list("send_state", flat=True)) == {
        SendState.UNSENT
    }
    time.sleep(0.5)
    assert len(server.messages) == 1

    response = client.post(f"/jobs/{job.pk}/resume/", follow=True)
    assert "Resumed: 4 invoices queued again." in response.content.decode()
    progress = _until_stopped(client, job)

    assert progress["state"] == JobState.FINISHED
    assert (progress["sent"], progress["cancelled"], progress["remaining"]) == (5, 0, 0)
    _check_delivered(server, invoices)
