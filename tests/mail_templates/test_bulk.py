"""A bulk invoice job through the real worker to a real SMTP server sends the company's own
invoice mail template in each customer's language; an invoice the template fails for is
recorded failed with the reason, and the job goes on (transactional_db: the worker commits)."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from invoices.models import SendState
from mail_templates.models import MailTemplate
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english", "celery_worker", "transactional_db")]


def _until_stopped(client: Client, job: BulkJob, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.get(f"/jobs/{job.pk}/progress/").json()
        if progress["state"] != JobState.RUNNING and not progress["remaining"]:
            return progress
        time.sleep(0.1)
    raise AssertionError(f"job still running after {timeout}s: {progress}")


def test_a_bulk_job_sends_the_customised_template_and_fails_only_the_invoice_it_breaks_for(
    client, smtp_servers
):
    server = smtp_servers.plain
    company = factories.company()
    MailTemplate.objects.create(
        company=company,
        kind="invoice",
        language="pl",
        subject="Faktura {{ invoice.number }} dla {{ customer.name }}",
        body="Dzień dobry,\n{{ invoice.total }} {{ invoice.currency }} do {{ invoice.due_date }}."
        "\n<b>{{ user.name }}</b>, {{ company.name }}\n",
    )
    sender = invoice_factories.smtp_sender("ANNA", server, name="Anna Kowalska")
    client.force_login(sender)
    polish = invoice_factories.invoice(
        "FV/1/2026", customer=invoice_factories.customer("Kowalski", language="pl")
    )
    english = invoice_factories.invoice(
        "FV/2/2026", customer=invoice_factories.customer("Smith Ltd", language="en")
    )
    # Imported with a line break in its name: the customised subject cannot hold it.
    broken = invoice_factories.invoice(
        "FV/3/2026", customer=invoice_factories.customer("Nowak\nS.A.", language="pl")
    )

    response = client.post("/invoices/send/", {"action": "unsent"})
    assert response.status_code == 302
    job = BulkJob.objects.latest("pk")
    progress = _until_stopped(client, job)

    assert (progress["total"], progress["sent"], progress["failed"]) == (3, 2, 1)
    received = {m.message["Subject"]: m for m in server.wait_for(2)}
    assert set(received) == {"Faktura FV/1/2026 dla Kowalski", "Invoice FV/2/2026"}
    mail = received["Faktura FV/1/2026 dla Kowalski"].message
    text = mail.get_body(("plain",)).get_content()
    assert text.replace("\r\n", "\n") == (
        f"Dzień dobry,\n123,00 PLN do {polish.due_date.isoformat()}.\n"
        "<b>Anna Kowalska</b>, Acme Sp. z o.o.\n"
    )
    html = mail.get_body(("html",)).get_content()
    assert "&lt;b&gt;Anna Kowalska&lt;/b&gt;" in html and "<b>" not in html
    assert [p.get_filename() for p in mail.iter_attachments()] == ["FV-1-2026.pdf"]
    english_text = received["Invoice FV/2/2026"].message.get_body(("plain",)).get_content()
    assert english_text.startswith("Dear Smith Ltd,")  # no English row: the shipped default

    failed = OutgoingMessage.objects.get(state=MessageState.FAILED)
    assert failed.related_id == str(broken.pk) and failed.subject == "FV/3/2026"
    assert failed.explanation == "template_error"
    assert (
        "Subject: The subject may not contain line breaks" in failed.explanation_params["message"]
    )
    for invoice, state in (
        (polish, SendState.SENT),
        (english, SendState.SENT),
        (broken, SendState.FAILED),
    ):
        invoice.refresh_from_db()
        assert invoice.send_state == state, invoice.number
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "its mail template does not work for this record" in page
    assert "Mail templates" in page
