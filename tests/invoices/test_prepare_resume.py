"""A job's preparation run again (the sweep restarts it after a crash, or two run at once):
each invoice gets exactly one message, and a run reads only a chunk's rows at a time."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from invoices.demo import seed_invoices
from invoices.models import Invoice
from invoices.services import invoices_job_prepare, invoices_send
from outbox.models import OutgoingMessage
from smtp_settings.models import Security
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def job(settings):
    settings.BULK_BATCH_SIZE = 10
    user = factories.user("ANNA")
    factories.profile(user, host="smtp.acme.test", port=587, security=Security.STARTTLS)
    seed_invoices(customers=5, invoices=35)
    return invoices_send(user=user, unsent=True)


def _messages_by_invoice(job) -> dict[str, int]:
    counts: dict[str, int] = {}
    for related_id in job.messages.values_list("related_id", flat=True):
        counts[related_id] = counts.get(related_id, 0) + 1
    return counts


def test_a_second_run_builds_only_what_the_first_left(job):
    """The first run died after two chunks (their rows committed): the next run builds the
    other 15, skipping the 20 built, including a chunk whose every invoice is built already."""
    first = list(Invoice.objects.filter(job=job).order_by("pk").values_list("pk", flat=True))
    # What a first run had written: chunks 1 and 3 (a chunk of built invoices in the middle).
    built = first[:10] + first[20:30]
    invoices_job_prepare(job_id=job.pk)
    OutgoingMessage.objects.filter(job=job).exclude(related_id__in=map(str, built)).delete()
    job.refresh_from_db()
    job.prepared = False
    job.save(update_fields=["prepared"])

    assert invoices_job_prepare(job_id=job.pk) == 15

    counts = _messages_by_invoice(job)
    assert sorted(map(int, counts)) == first
    assert set(counts.values()) == {1}


def test_a_chunk_reads_a_chunks_rows_not_the_whole_job(job):
    """Finding what to build next looks up the chunk's invoices by index, never every message
    of the job (a 20,000-invoice job would scan 20,000 rows for each of its 200 chunks)."""
    with CaptureQueriesContext(connection) as queries:
        invoices_job_prepare(job_id=job.pk)

    statements = [q["sql"] for q in queries.captured_queries]
    assert not [sql for sql in statements if "NOT (" in sql and "outbox_outgoingmessage" in sql]
    assert len(_messages_by_invoice(job)) == 35
