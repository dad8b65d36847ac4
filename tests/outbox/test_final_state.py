"""Issue 13, item 1: a message's final state and what follows it change together.

- The invoice's state commits in the message's transaction: if it cannot be written, the
  message is not marked sent either (one rolls back with the other).
- A job is finished by whoever ends its last message, a retry included (`outbox_send`), not
  by whoever next reads its progress, and at that moment.
- The sweep reconciles a pair it finds apart (an invoice "sending" whose message ended; a job
  still running with nothing left), and leaves alone an invoice a job still being built holds.
The SIGKILL at every named point is tests/reliability/test_kill_points.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from invoices.models import Invoice, SendState
from invoices.services import invoices_job_prepare, invoices_send
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from outbox.services import bulk_job_progress, outbox_send, outbox_sweep
from outbox.signals import message_state_changed
from smtp_settings.errors import TransientSendError
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def _job(server, count: int) -> tuple[BulkJob, list[OutgoingMessage]]:
    factories.company()
    user = invoice_factories.smtp_sender("JOB", server)
    invoice_factories.invoices(count)
    job = invoices_send(user=user, unsent=True)
    invoices_job_prepare(job_id=job.pk)  # in process; its dispatch waits for a commit: never
    return job, list(job.messages.order_by("pk"))


def test_the_invoice_and_its_message_commit_together(smtp_servers):
    _, [message] = _job(smtp_servers.plain, 1)

    def broken(sender, **kwargs):
        raise RuntimeError("the invoice's row cannot be written")

    message_state_changed.connect(broken, sender=OutgoingMessage, dispatch_uid="broken")
    try:
        with pytest.raises(RuntimeError):
            outbox_send(message_id=message.pk)
    finally:
        message_state_changed.disconnect(sender=OutgoingMessage, dispatch_uid="broken")
    message.refresh_from_db()
    # Not "sent" without its invoice: still claimed, so the sweep returns it, flagged.
    assert message.state == MessageState.SENDING
    assert Invoice.objects.get().send_state == SendState.QUEUED
    assert len(smtp_servers.plain.messages) == 1


def test_the_job_is_finished_by_the_retry_that_ends_its_last_message(smtp_servers):
    server = smtp_servers.plain
    job, [first, second] = _job(server, 2)
    server.script("MAIL", "451 4.3.0 Try again later", times=1)
    with pytest.raises(TransientSendError):
        outbox_send(message_id=first.pk)  # deferred: back to the queue
    assert outbox_send(message_id=second.pk) == MessageState.SENT
    job.refresh_from_db()
    assert job.state == JobState.RUNNING  # one is left
    before = timezone.now()
    assert outbox_send(message_id=first.pk) == MessageState.SENT  # the retry (send_message)
    job.refresh_from_db()  # nobody read its progress
    assert job.state == JobState.FINISHED
    assert before <= job.finished_at <= timezone.now()
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.SENT}


def test_a_job_nobody_finished_is_finished_at_its_last_message_not_at_the_reading(smtp_servers):
    job, messages = _job(smtp_servers.plain, 2)
    ended = timezone.now() - timedelta(minutes=30)
    OutgoingMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
        state=MessageState.SENT, sent_at=ended, updated_at=ended
    )  # as a crash right after the last commit leaves it
    assert BulkJob.objects.get(pk=job.pk).state == JobState.RUNNING
    progress = bulk_job_progress(job=job)
    job.refresh_from_db()
    assert (progress["state"], job.state, job.finished_at) == (
        JobState.FINISHED,
        JobState.FINISHED,
        ended,
    )
    assert progress["seconds"] < 30 * 60


def test_the_sweep_finishes_a_job_and_reconciles_an_invoice_found_apart(smtp_servers):
    job, [message] = _job(smtp_servers.plain, 1)
    sent_at = timezone.now() - timedelta(minutes=5)
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.SENT, sent_at=sent_at, updated_at=sent_at
    )  # the message committed "sent"; the invoice and the job never heard of it
    invoice = Invoice.objects.get()
    assert invoice.send_state == SendState.QUEUED

    sweep = outbox_sweep()
    assert (sweep["reconciled"], sweep["finished_jobs"]) == (1, 1)
    invoice.refresh_from_db()
    assert (invoice.send_state, invoice.sent_at) == (SendState.SENT, sent_at)
    job.refresh_from_db()
    assert (job.state, job.finished_at) == (JobState.FINISHED, sent_at)
    again = outbox_sweep()
    assert (again["reconciled"], again["finished_jobs"]) == (0, 0)


@pytest.mark.parametrize("state", [MessageState.FAILED, MessageState.CANCELLED])
def test_a_failed_or_cancelled_message_gives_its_state_to_an_invoice_found_apart(
    smtp_servers, state
):
    _, [message] = _job(smtp_servers.plain, 1)
    OutgoingMessage.objects.filter(pk=message.pk).update(state=state)
    assert outbox_sweep()["reconciled"] == 1
    expected = SendState.FAILED if state == MessageState.FAILED else SendState.UNSENT
    assert Invoice.objects.get().send_state == expected


def test_the_sweep_leaves_alone_an_invoice_a_job_still_being_built_holds(smtp_servers):
    """The invoice failed in an earlier job, then a new job claimed it: until the new job has
    built its message, the earlier (final) message is not the claim's, and a repair would
    undo the claim."""
    server = smtp_servers.plain
    earlier, [message] = _job(server, 1)
    OutgoingMessage.objects.filter(pk=message.pk).update(state=MessageState.FAILED)
    invoice = Invoice.objects.get()
    Invoice.objects.filter(pk=invoice.pk).update(send_state=SendState.FAILED)
    later = invoices_send(user=earlier.user)  # claims the failed invoice; not built yet
    invoice.refresh_from_db()
    assert (invoice.send_state, invoice.job_id) == (SendState.QUEUED, later.pk)

    assert outbox_sweep()["reconciled"] == 0
    invoice.refresh_from_db()
    assert (invoice.send_state, invoice.job_id) == (SendState.QUEUED, later.pk)
    BulkJob.objects.filter(pk=later.pk).update(prepared=True)  # built, yet no message of its own
    assert outbox_sweep()["reconciled"] == 0  # the last message is another job's: left alone
    assert Invoice.objects.get().send_state == SendState.QUEUED


def test_a_batch_row_read_before_a_retry_counts_the_attempts_the_claim_left(smtp_servers, settings):
    """A batch reads its rows when it begins; by a message's turn another try may have been
    made (a retry, a second worker). The claim's own count decides: a message at its last
    attempt fails for good instead of getting one more (and a second "retrying" Event)."""
    from outbox.services import _Connections, _deliver

    settings.SEND_MAX_ATTEMPTS = 3
    server = smtp_servers.plain
    _, (message, *_rest) = _job(server, 1)
    stale = OutgoingMessage.objects.select_related("user").get(pk=message.pk)
    OutgoingMessage.objects.filter(pk=message.pk).update(attempts=2)  # tried twice meanwhile
    server.script("RCPT", "451 4.3.0 Try again later")

    with _Connections() as connections:
        state, _error = _deliver(message.pk, connections, message=stale)

    message.refresh_from_db()
    assert (state, message.state, message.attempts) == ("failed", "failed", 3)
