"""PDFs rendered when invoices are issued (issue 13, item 6): the worker renders them in the
bulk lane once the issue commits, and a job sending them later attaches those very files."""

from __future__ import annotations

import pytest
from django.db import transaction

from invoices.demo import seed_invoices
from invoices.models import Invoice
from invoices.services import invoices_render_pdfs, invoices_send
from outbox.models import Attachment
from outbox.services import bulk_job_progress
from tests import factories
from tests.reliability.test_faults import wait_until

pytestmark = pytest.mark.usefixtures("english")


def test_issued_invoices_have_their_pdfs_before_anyone_sends_them(
    transactional_db, smtp_servers, celery_worker, settings
):
    settings.BULK_BATCH_SIZE = 4  # three render tasks for ten invoices
    server = smtp_servers.plain
    user = factories.user("PIOTR", email="piotr@acme.example")
    factories.profile(user, host=server.host, port=server.port, security="none")

    seed_invoices(customers=3, invoices=10, issue=True)

    wait_until(lambda: not Invoice.objects.filter(pdf="").exists(), 30, "every PDF kept")
    kept = dict(Invoice.objects.values_list("pk", "pdf"))
    job = invoices_send(user=user, unsent=True)
    wait_until(lambda: bulk_job_progress(job=job)["remaining"] == 0, 30, "the job sent")

    assert bulk_job_progress(job=job)["sent"] == 10
    attached = {
        int(a.message.related_id): a.file.name for a in Attachment.objects.select_related("message")
    }
    assert attached == kept  # the files rendered at issue, not new ones
    assert dict(Invoice.objects.values_list("pk", "pdf")) == kept
    assert all(m.message.get_body(("plain",)) for m in server.messages)
    assert {
        p.get_content_type() for m in server.messages for p in m.message.iter_attachments()
    } == {"application/pdf"}


@pytest.mark.django_db
def test_rendering_again_keeps_what_was_kept_and_ignores_unknown_ids():
    factories.company()
    with transaction.atomic():
        seed_invoices(customers=1, invoices=3)
    ids = list(Invoice.objects.values_list("pk", flat=True))

    assert invoices_render_pdfs(invoice_ids=[*ids, 999_999]) == 3
    kept = dict(Invoice.objects.values_list("pk", "pdf"))
    assert invoices_render_pdfs(invoice_ids=ids) == 0
    assert dict(Invoice.objects.values_list("pk", "pdf")) == kept


@pytest.mark.django_db
def test_a_pdf_rendered_twice_at_once_is_kept_once():
    """The issue's render task (invoices_issued) and a job's builder reach the same invoice at
    once: the second to finish keeps the first one's file and removes its own (no orphan, and
    the mail attaches the invoice's very file)."""
    from django.core.files.storage import default_storage

    from invoices.pdf import invoice_pdf

    factories.company()
    with transaction.atomic():
        seed_invoices(customers=1, invoices=1)
    here, there = Invoice.objects.get(), Invoice.objects.get()  # two processes' reads
    before = _all_files(default_storage)
    first = invoice_pdf(there, seller="Acme")
    second = invoice_pdf(here, seller="Acme")  # rendered too, before it saw the first

    assert second == first == Invoice.objects.get().pdf.name
    assert _all_files(default_storage) - before == {first}  # one file, not two


def _all_files(storage, folder: str = "") -> set[str]:
    """Every file's name in the storage (the database's: its rows; a folder's: walked)."""
    from filestore.models import StoredFile
    from filestore.storage import DatabaseStorage

    if isinstance(storage._wrapped if hasattr(storage, "_wrapped") else storage, DatabaseStorage):
        return set(StoredFile.objects.values_list("name", flat=True))
    folders, names = storage.listdir(folder) if storage.exists(folder or ".") else ([], [])
    found = {f"{folder}/{name}".lstrip("/") for name in names}
    for sub in folders:
        found |= _all_files(storage, f"{folder}/{sub}".lstrip("/"))
    return found
