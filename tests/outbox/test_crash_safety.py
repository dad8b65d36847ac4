"""A worker SIGKILLed mid-job loses nothing: after a restart and a sweep the job completes, and
at most the message in flight may go twice — recorded as "possibly sent twice"."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest

from invoices.demo import seed_invoices
from invoices.models import Invoice, SendState
from invoices.services import invoices_send
from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import bulk_job_progress, outbox_sweep
from tests import factories

INVOICES = 40


@pytest.mark.usefixtures("english")
def test_sigkill_mid_job_loses_nothing(transactional_db, smtp_servers, celery_worker, settings):
    settings.BULK_BATCH_SIZE = 10
    server = smtp_servers.plain
    server.stall_at("DATA", 0.05, times=None)  # ~20 mails/s: time to kill mid-job
    user = factories.user("PIOTR", email="piotr@acme.example")
    factories.profile(user, host=server.host, port=server.port, security="none")
    seed_invoices(customers=3, invoices=INVOICES)

    job = invoices_send(user=user, unsent=True)
    server.wait_for(12, timeout=30)
    celery_worker.kill()
    delivered_before_restart = len(server.messages)
    assert delivered_before_restart < INVOICES, "the job ended before the kill"

    celery_worker.restart()
    time.sleep(0.5)
    sweep = outbox_sweep(stuck_after=timedelta(0))  # what beat does every minute
    deadline = time.monotonic() + 60
    while bulk_job_progress(job=job)["remaining"] and time.monotonic() < deadline:
        time.sleep(0.2)

    progress = bulk_job_progress(job=job)
    assert (progress["sent"], progress["failed"], progress["remaining"]) == (INVOICES, 0, 0)
    received = Counter(m.message_id for m in server.messages)
    assert len(received) == INVOICES  # every invoice arrived: nothing lost
    duplicates = [mid for mid, n in received.items() if n > 1]
    assert len(duplicates) <= 1  # at most the one in flight when the worker died
    flagged = set(
        OutgoingMessage.objects.filter(possibly_duplicated=True).values_list(
            "message_id", flat=True
        )
    )
    assert {f"<{d.strip('<>')}>" for d in duplicates} <= flagged  # and it is recorded
    assert Event.objects.filter(kind=EventKind.SEND_DUPLICATE_RISK).count() == len(flagged)
    assert sweep["redispatched"] > 0
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.SENT}
    assert not OutgoingMessage.objects.exclude(state=MessageState.SENT).exists()


@pytest.mark.usefixtures("english")
def test_a_job_whose_building_task_was_lost_is_restarted_by_the_sweeper(
    transactional_db, smtp_servers, celery_worker
):
    """The worker dies before it builds the job's messages, and the broker loses the task:
    the sweeper starts building again, and every invoice goes exactly once."""
    from directo_mail.celery import app

    server = smtp_servers.plain
    user = factories.user("PIOTR", email="piotr@acme.example")
    factories.profile(user, host=server.host, port=server.port, security="none")
    seed_invoices(customers=3, invoices=12)
    celery_worker.kill()

    job = invoices_send(user=user, unsent=True)
    app.control.purge()  # the building task is lost with the worker
    celery_worker.restart()
    time.sleep(0.5)
    assert not job.messages.exists()

    sweep = outbox_sweep(stuck_after=timedelta(0))
    deadline = time.monotonic() + 30
    while bulk_job_progress(job=job)["remaining"] and time.monotonic() < deadline:
        time.sleep(0.2)

    assert sweep["restarted_jobs"] == 1
    assert bulk_job_progress(job=job)["sent"] == 12
    received = Counter(m.message_id for m in server.messages)
    assert len(received) == 12
    assert set(received.values()) == {1}
    job.refresh_from_db()
    assert job.prepared
