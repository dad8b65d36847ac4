"""Issue 13, item 5, done when: two worker groups, each with its own local disk (MEDIA_ROOT),
against one database and broker, both take a job's work and every message is sent once,
because the PDFs are in a storage they share (FILE_STORAGE=database). The control: with each
machine's local disk (FILE_STORAGE=local) a worker does not find the PDF another one rendered,
and its messages fail (what a second machine did before).

On `make test` the database is SQLite and the broker the filesystem one; CI runs the same test
on PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from invoices.models import Invoice, SendState
from outbox.models import MessageState, OutgoingMessage
from tests.reliability.test_faults import start_job
from tests.smtp_fixtures import CeleryWorker

INVOICES = 40


def _machine(celery_worker, tmp_path, name: str, storage: str) -> CeleryWorker:
    disk = tmp_path / name / "media"
    disk.mkdir(parents=True)
    return CeleryWorker(
        {
            **celery_worker.env,
            "FILE_STORAGE": storage,
            "MEDIA_ROOT": str(disk),
            "BULK_BATCH_SIZE": "4",  # many small batches: both machines get some
        },
        tmp_path / name / "worker.log",
        f"{name}@%h",
    )


def _settled(job, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        open_ = OutgoingMessage.objects.filter(
            state__in=(MessageState.QUEUED, MessageState.SENDING)
        ).exists()
        if job.prepared and job.messages.count() == INVOICES and not open_:
            return
        assert time.monotonic() < deadline, "the job did not settle"
        time.sleep(0.1)


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize("storage", ["database", "local"])
def test_two_machines_share_a_jobs_work_and_send_every_message_once(
    transactional_db, smtp_servers, celery_worker, tmp_path, storage
):
    server = smtp_servers.plain
    server.stall_at("DATA", 0.02, times=None)  # a little work per mail: both machines take some
    celery_worker.kill()
    machines = [_machine(celery_worker, tmp_path, name, storage) for name in ("one", "two")]
    try:
        for machine in machines:
            machine.start()
        job = start_job(server, INVOICES, code="TWO")
        _settled(job)
    finally:
        for machine in machines:
            machine.stop()
        celery_worker.start()

    messages = list(OutgoingMessage.objects.all())
    received = Counter(m.message_id for m in server.messages)
    if storage == "local":  # the control: the other machine's disk has no PDF for it
        failed = [m for m in messages if m.state == MessageState.FAILED]
        assert failed, "with local disks every message went: the control shows nothing"
        assert {m.explanation for m in failed} == {"file_missing"}  # named, for the admin
        assert all(count == 1 for count in received.values())
        return
    assert [m.state for m in messages] == [MessageState.SENT] * INVOICES
    assert sorted(received) == sorted(m.message_id.strip("<>") for m in messages)
    assert set(received.values()) == {1}  # every message once
    senders = Counter(m.worker.split(":")[1] for m in messages)  # by process id
    assert len(senders) == 2, senders  # both machines sent some
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.SENT}
    for message in messages[:3]:
        [pdf] = [p for p in _received(server, message).iter_attachments()]
        assert pdf.get_content().startswith(b"%PDF")


def _received(server, message):
    [mail] = [m for m in server.messages if m.message_id == message.message_id.strip("<>")]
    return mail.message
