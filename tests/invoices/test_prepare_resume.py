"""A job's preparation run again (the sweep restarts it after a crash, or two run at once):
each invoice gets exactly one message, and a run reads only a chunk's rows at a time."""

from __future__ import annotations

import base64
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from invoices import pdf as pdf_module
from invoices.demo import seed_invoices
from invoices.models import Invoice
from invoices.services import invoices_job_prepare, invoices_render_pdfs, invoices_send
from outbox.models import OutgoingMessage
from smtp_settings.models import Security
from tests import factories
from tests.smtp_fixtures import queued_payloads

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


def _bulk_lane() -> list[tuple[dict, list]]:
    """Every task waiting in the bulk lane, in order, with its arguments; takes them out."""
    found = []
    for raw in queued_payloads("bulk"):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        found.append((envelope, args))
    return found


def _render_tasks() -> list[list[int]]:
    """The invoice ids of every render task waiting in the bulk lane, in order; takes them out
    (and the lane's other tasks)."""
    return [
        args[0]
        for envelope, args in _bulk_lane()
        if envelope["headers"]["task"] == "invoices.tasks.render_pdfs"
    ]


def test_a_jobs_pdfs_are_shared_out_last_chunk_first(job, django_capture_on_commit_callbacks):
    """Issue 13, item 6: PDFs not rendered at issue are rendered by every idle worker process,
    not by the job's builder alone. Once the first chunk's batch is with the broker (the first
    mails go at once), each chunk but the next goes to the bulk lane as a render task, the
    last first, while the builder goes on from the next and finds the PDFs the others kept.
    Nobody has to take those tasks: the builder alone still builds every message, one PDF
    each."""
    _render_tasks()  # what earlier tests left in the lane
    ids = list(Invoice.objects.filter(job=job).order_by("pk").values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):  # each chunk's commit, in order
        assert invoices_job_prepare(job_id=job.pk) == 35

    tasks = [(envelope["headers"]["task"], args[0]) for envelope, args in _bulk_lane()]
    first_batch = [m.pk for m in job.messages.order_by("pk")[:10]]
    assert (
        tasks[:4]
        == [
            ("outbox.tasks.send_batch", first_batch),  # ahead of the rendering
            ("invoices.tasks.render_pdfs", ids[30:]),
            ("invoices.tasks.render_pdfs", ids[20:30]),
            ("outbox.tasks.send_batch", tasks[3][1]),  # the builder's second chunk
        ]
    )
    assert [t for t in tasks if t[0] == "invoices.tasks.render_pdfs"] == tasks[1:3]
    assert len(_messages_by_invoice(job)) == 35
    assert not Invoice.objects.filter(job=job, pdf="").exists()
    pdfs = set(Invoice.objects.filter(job=job).values_list("pdf", flat=True))
    assert len(pdfs) == 35  # one kept file each, attached to its message
    attached = {a.file.name for m in job.messages.all() for a in m.attachments.all()}
    assert attached == pdfs


def test_a_job_whose_pdfs_are_kept_shares_nothing_out(job, django_capture_on_commit_callbacks):
    """Rendered when issued (invoices_issued, as in production): no render task at all."""
    invoices_render_pdfs(invoice_ids=list(Invoice.objects.values_list("pk", flat=True)))
    _render_tasks()

    with django_capture_on_commit_callbacks(execute=True):
        assert invoices_job_prepare(job_id=job.pk) == 35
    lane = [envelope["headers"]["task"] for envelope, _args in _bulk_lane()]
    assert lane == ["outbox.tasks.send_batch"] * 4


def test_what_others_rendered_meanwhile_is_not_rendered_again(job, monkeypatch):
    """The builder reaches a chunk another process kept meanwhile: it attaches that file."""
    _render_tasks()
    ids = list(Invoice.objects.filter(job=job).order_by("pk").values_list("pk", flat=True))
    invoices_render_pdfs(invoice_ids=ids[10:])  # what idle processes did ahead of it
    theirs = dict(Invoice.objects.filter(pk__in=ids[10:]).values_list("pk", "pdf"))
    rendered = []
    real = pdf_module.render_invoice_pdf
    monkeypatch.setattr(
        pdf_module,
        "render_invoice_pdf",
        lambda invoice, **kwargs: rendered.append(invoice.pk) or real(invoice, **kwargs),
    )

    assert invoices_job_prepare(job_id=job.pk) == 35

    assert rendered == ids[:10]
    assert dict(Invoice.objects.filter(pk__in=ids[10:]).values_list("pk", "pdf")) == theirs
    _render_tasks()
