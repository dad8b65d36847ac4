"""Issue 13, item 2: worker leases (outbox/leases.py). A dead worker's claims and tasks are
taken back at once; a live worker's never, however long they wait; a wait for the sender's
turn holds no claim; a restarted worker expires its host's dead leases.

The SIGKILL of a real worker, recovered by the restarted worker alone, is
tests/reliability/test_kill_points.py."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from invoices.services import PREPARE_TASK
from outbox import leases, ratelimit
from outbox.leases import UNDISPATCHED
from outbox.models import (
    BulkJob,
    Event,
    EventKind,
    MessageState,
    OutgoingMessage,
    SendingWindow,
    WorkerLease,
)
from outbox.services import (
    SEND_BATCH,
    SEND_MESSAGE,
    outbox_enqueue,
    outbox_received,
    outbox_send,
    outbox_send_batch,
    outbox_sweep,
    to_broker,
)
from outbox.signals import message_state_changed
from outbox.tasks import send_batch, send_message
from smtp_settings.resolve import SenderConfig
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.smtp_fixtures import queued_payloads

pytestmark = pytest.mark.usefixtures("english")


def _messages(server, count: int) -> list[OutgoingMessage]:
    factories.company()
    user = invoice_factories.smtp_sender("LEASE", server)
    return [
        outbox_enqueue(user=user, to=["a@b.example"], subject="S", body_text="B")
        for _ in range(count)
    ]


def _lease(name: str, *, age: float, host: str = "elsewhere", pid: int = 1) -> WorkerLease:
    return WorkerLease.objects.create(
        name=name, host=host, pid=pid, beat_at=timezone.now() - timedelta(seconds=age)
    )


def _claim(message: OutgoingMessage, worker: str, *, age: float) -> None:
    at = timezone.now() - timedelta(seconds=age)
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.SENDING, worker=worker, claimed_at=at, updated_at=at
    )


@pytest.mark.django_db
def test_a_live_workers_claim_is_never_taken_a_dead_ones_at_once(smtp_servers, settings):
    settings.WORKER_LEASE_SECONDS = 45
    settings.SEND_CLAIM_TIMEOUT = 600
    live, dead, leaseless = _messages(smtp_servers.plain, 3)
    _lease("live", age=5)
    _lease("dead", age=60)
    _claim(live, "live", age=1700)  # half an hour on one message: a slow server, but alive
    _claim(dead, "dead", age=2)  # two seconds ago, but its worker stopped beating
    _claim(leaseless, "", age=300)  # no lease (a command): the timeout decides

    sweep = outbox_sweep()
    assert sweep["returned"] == 1
    states = dict(OutgoingMessage.objects.values_list("pk", "state"))
    assert states == {
        live.pk: MessageState.SENDING,
        dead.pk: MessageState.QUEUED,
        leaseless.pk: MessageState.SENDING,
    }
    dead.refresh_from_db()
    # No longer the dead worker's: handed to the broker again (until it has it, it says so).
    assert dead.possibly_duplicated and dead.worker == UNDISPATCHED
    assert Event.objects.filter(message=dead, kind=EventKind.SEND_DUPLICATE_RISK).count() == 1

    _claim(leaseless, "", age=601)
    assert outbox_sweep()["returned"] == 1  # past SEND_CLAIM_TIMEOUT
    assert OutgoingMessage.objects.get(pk=live.pk).state == MessageState.SENDING
    # Held by a live worker for longer than any send takes (3 × SEND_CLAIM_TIMEOUT): a task
    # that failed without letting go, or a hung process. Taken back, flagged.
    _claim(live, "live", age=1801)
    assert outbox_sweep()["returned"] == 1
    assert OutgoingMessage.objects.get(pk=live.pk).possibly_duplicated


@pytest.mark.django_db
def test_a_name_without_a_lease_row_counts_as_dead_only_after_a_leases_time(smtp_servers, settings):
    """A flushed table (a test database) must not make a live worker's fresh claim dead."""
    settings.WORKER_LEASE_SECONDS = 45
    [message] = _messages(smtp_servers.plain, 1)
    _claim(message, "gone", age=10)
    assert outbox_sweep()["returned"] == 0
    _claim(message, "gone", age=50)
    assert outbox_sweep()["returned"] == 1


@pytest.mark.django_db
def test_the_queued_messages_a_dead_worker_had_taken_are_dispatched_again_at_once(
    smtp_servers, settings
):
    settings.WORKER_LEASE_SECONDS = 45
    taken_by_dead, taken_by_live, _waiting = _messages(smtp_servers.plain, 3)
    _lease("live", age=1)
    _lease("dead", age=100)
    OutgoingMessage.objects.filter(pk=taken_by_dead.pk).update(worker="dead")
    OutgoingMessage.objects.filter(pk=taken_by_live.pk).update(worker="live")

    sweep = outbox_sweep()
    assert sweep["redispatched"] == 1  # only the dead worker's; the rest wait their turn
    assert OutgoingMessage.objects.get(pk=taken_by_dead.pk).worker == UNDISPATCHED
    assert OutgoingMessage.objects.get(pk=taken_by_live.pk).worker == "live"
    assert outbox_sweep()["redispatched"] == 0  # once


@pytest.mark.django_db(transaction=True)
def test_a_bulk_wait_for_the_senders_turn_holds_no_claim_and_the_mail_goes_once(
    smtp_servers, settings, monkeypatch
):
    """A "slow down" pause longer than a lease: while a bulk worker waits, the message is not
    claimed, so no sweep can take it for a dead claim and a second task cannot send it too."""
    # This test is the worker: no task for the session's worker (committed rows here).
    monkeypatch.setattr("outbox.services._enqueue_on_commit", lambda pk: None)
    monkeypatch.setattr("outbox.services.batches_dispatch", lambda **kwargs: 0)
    settings.WORKER_LEASE_SECONDS = 0.5
    settings.SEND_CLAIM_TIMEOUT = 0
    server = smtp_servers.plain
    [message] = _messages(server, 1)
    sender = SenderConfig.from_snapshot(message.sender)
    ratelimit.pause(sender, 2.0)

    results: list[dict] = []
    task = threading.Thread(
        target=lambda: results.append(outbox_send_batch(message_ids=[message.pk]))
    )
    task.start()
    try:
        time.sleep(1.0)  # it waits for the pause, past the lease and the claim timeout
        message.refresh_from_db()
        assert (message.state, message.claimed_at) == (MessageState.QUEUED, None)
        assert outbox_sweep()["returned"] == 0
    finally:
        task.join(10)
    assert results == [{MessageState.SENT: 1}]
    # The sweep's task for it (or any duplicate) finds it sent: nothing goes twice.
    assert outbox_send(message_id=message.pk) == "skipped"
    assert len(server.messages) == 1
    assert not OutgoingMessage.objects.get(pk=message.pk).possibly_duplicated


@pytest.mark.django_db(transaction=True)
def test_a_single_mail_whose_sender_must_wait_goes_back_to_the_broker_not_to_sleep(
    smtp_servers, celery_worker, monkeypatch
):
    """The interactive lane never sleeps for a sender's turn: a single mail whose sender is
    paused (or at its limit) is published again with a countdown, unclaimed, and the worker is
    free at once for everybody else's mail; the session's worker then sends it once, after
    the pause."""
    monkeypatch.setattr("outbox.services._enqueue_on_commit", lambda pk: None)
    server = smtp_servers.plain
    [message] = _messages(server, 1)
    pause = 3.0
    ratelimit.pause(SenderConfig.from_snapshot(message.sender), pause)
    paused_until = time.monotonic() + pause

    started = time.monotonic()
    assert outbox_send(message_id=message.pk) == "waiting"
    assert time.monotonic() - started < 1.0  # no sleeping worker
    message.refresh_from_db()
    assert (message.state, message.claimed_at, message.attempts) == (MessageState.QUEUED, None, 0)
    assert server.messages == []

    [mail] = server.wait_for(1, timeout=20)  # the republished task, through the real broker
    assert time.monotonic() >= paused_until - 0.5  # not before the sender's turn
    assert mail.message_id == message.message_id.strip("<>")
    deadline = time.monotonic() + 10
    while OutgoingMessage.objects.get(pk=message.pk).state != MessageState.SENT:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    assert len(server.messages) == 1


@pytest.mark.django_db
def test_a_restarted_worker_expires_its_hosts_dead_leases_only(settings):
    settings.WORKER_LEASE_SECONDS = 45
    host = leases._host()  # host name, boot id, pid namespace
    assert host.startswith(socket.gethostname()[:60])
    gone = _lease("gone", age=1, host=host, pid=2**22 + 12345)  # no such process
    alive_here = _lease("here", age=1, host=host, pid=os.getppid())
    # The same host name in another container (its own pid namespace): its pids mean nothing
    # here, so it is left to its lease.
    other_host = _lease(
        "there", age=1, host=f"{socket.gethostname()[:60]}/other-container", pid=2**22 + 12345
    )

    assert leases.leases_forget_dead_here() == 1
    beats = dict(WorkerLease.objects.values_list("name", "beat_at"))
    expired = timezone.now() - timedelta(seconds=45)
    assert beats["gone"] < expired
    assert beats["here"] == alive_here.beat_at and beats["there"] == other_host.beat_at
    assert beats["gone"] < gone.beat_at


@pytest.mark.django_db(transaction=True)
def test_a_lease_is_renewed_by_its_thread_and_given_back(settings, monkeypatch):
    settings.WORKER_BEAT_SECONDS = 0.05
    monkeypatch.setattr(leases, "_lease", {"name": "", "pid": 0})
    name = leases.lease_start()
    try:
        assert leases.lease_start() == name == leases.lease_current()
        first = WorkerLease.objects.get(name=name).beat_at
        deadline = time.monotonic() + 5
        while WorkerLease.objects.get(name=name).beat_at == first:
            assert time.monotonic() < deadline, "the lease was not renewed"
            time.sleep(0.05)
        WorkerLease.objects.filter(name=name).delete()  # declared dead (or a flush)
        deadline = time.monotonic() + 5
        while not WorkerLease.objects.filter(name=name).exists():
            assert time.monotonic() < deadline, "the lease was not taken again"
            time.sleep(0.05)
    finally:
        leases.lease_end()
    assert leases.lease_current() == ""
    time.sleep(0.2)  # the thread has stopped: it takes nothing again
    assert not WorkerLease.objects.filter(name=name).exists()


@pytest.mark.django_db
def test_a_task_failing_on_an_error_of_its_own_lets_go_of_what_it_held(smtp_servers, monkeypatch):
    """An error that is not the server's (the database away, a bug) ends the task: what this
    worker held of its batch is released, so the sweep's rules take it back instead of the
    rows waiting for a live worker that will never come back to them."""
    monkeypatch.setattr(leases, "_lease", {"name": "me", "pid": os.getpid()})
    _lease("me", age=0)
    server = smtp_servers.plain
    messages = _messages(server, 3)

    def broken(sender, **kwargs):
        raise RuntimeError("the invoice's row cannot be written")

    message_state_changed.connect(broken, sender=OutgoingMessage, dispatch_uid="broken")
    try:
        with pytest.raises(RuntimeError):
            outbox_send_batch(message_ids=[m.pk for m in messages])
    finally:
        message_state_changed.disconnect(sender=OutgoingMessage, dispatch_uid="broken")
    rows = dict(OutgoingMessage.objects.values_list("pk", "worker"))
    assert set(rows.values()) == {""}  # the claim and the rest of the batch: nobody's
    states = sorted(OutgoingMessage.objects.values_list("state", flat=True))
    assert states == [MessageState.QUEUED, MessageState.QUEUED, MessageState.SENDING]


def test_the_broker_warning_never_logs_a_password(caplog):
    def refuse():
        raise ConnectionError(
            "Error connecting to redis://:p@ss w0rd@redis.internal:6379/0 "
            "(amqp://user:secret@rabbit/?password=hunter2&x=1)"
        )

    assert to_broker(refuse, "job 1") is False
    assert "the broker did not take the task" in caplog.text
    for secret in ("p@ss", "w0rd", "secret", "hunter2"):
        assert secret not in caplog.text, caplog.text
    assert "redis.internal:6379" in caplog.text  # what the operator needs stays


@pytest.mark.django_db
def test_a_task_that_loses_the_claim_after_its_turn_gives_its_place_back(
    smtp_servers, settings, monkeypatch
):
    """Two tasks for one message (a sweep's and the original): the one that took a place in a
    limited sender's window and then found the message claimed by the other frees the place,
    so duplicate tasks do not eat the sender's limit."""
    settings.SEND_RATE_LIMITS = {"smtp": 5}
    [message] = _messages(smtp_servers.plain, 1)
    real_wait = ratelimit.wait_for_turn

    def wait_then_lose(sender, **kwargs):
        delay = real_wait(sender, **kwargs)  # takes a place in the window
        OutgoingMessage.objects.filter(pk=message.pk).update(state=MessageState.SENDING)
        return delay  # ... while the other task claimed the message

    monkeypatch.setattr(ratelimit, "wait_for_turn", wait_then_lose)
    assert outbox_send(message_id=message.pk) == "skipped"
    [window] = SendingWindow.objects.all()
    assert window.count == 0


# -- a task a worker took, and a task lost on its way ------------------------------------------
@pytest.mark.django_db
def test_what_a_task_is_for_becomes_the_receiving_workers_at_once(smtp_servers, monkeypatch):
    """Celery's task_received (directo_mail/celery.py), before the task runs: its rows say
    which live process has them, so a worker killed with a task it had taken but not started
    is known by its lease, not after the claim timeout."""
    monkeypatch.setattr(leases, "_lease", {"name": "me", "pid": os.getpid()})
    _lease("me", age=0)
    _lease("other", age=0)
    free, undispatched, others, sent = _messages(smtp_servers.plain, 4)
    OutgoingMessage.objects.filter(pk=undispatched.pk).update(worker=UNDISPATCHED)
    OutgoingMessage.objects.filter(pk=others.pk).update(worker="other")
    OutgoingMessage.objects.filter(pk=sent.pk).update(state=MessageState.SENT, worker="")
    ids = [free.pk, undispatched.pk, others.pk, sent.pk]

    assert outbox_received(task=SEND_BATCH, args=[ids]) == 2
    workers = dict(OutgoingMessage.objects.values_list("pk", "worker"))
    # Another live worker's row stays its; a sent one is nobody's business any more.
    assert workers == {free.pk: "me", undispatched.pk: "me", others.pk: "other", sent.pk: ""}

    OutgoingMessage.objects.filter(pk=free.pk).update(worker="")
    assert outbox_received(task=SEND_MESSAGE, args=(free.pk,)) == 1
    assert OutgoingMessage.objects.get(pk=free.pk).worker == "me"

    job = BulkJob.objects.create(
        user=free.user, kind="invoices", sender={}, prepared=False, prepare_task=PREPARE_TASK
    )
    assert outbox_received(task="outbox.tasks.sweep", args=[job.pk]) == 0  # not its task
    assert outbox_received(task=PREPARE_TASK, args=[job.pk]) == 1
    assert BulkJob.objects.get(pk=job.pk).worker == "me"

    # Whatever a message on the broker carries, the worker goes on: nothing marked, no error.
    for args in ([], None, "x", [[None, "1", True, 1.5]], [{"pk": 1}], [ids, ids], [[2**70]]):
        assert outbox_received(task=SEND_BATCH, args=args) == 0
    monkeypatch.setattr(leases, "_lease", {"name": "", "pid": 0})  # the web, a command
    OutgoingMessage.objects.filter(pk=free.pk).update(worker="")
    assert outbox_received(task=SEND_BATCH, args=[ids]) == 0


@pytest.mark.django_db
def test_a_failing_database_never_stops_the_worker_taking_tasks(smtp_servers, monkeypatch, caplog):
    monkeypatch.setattr(leases, "_lease", {"name": "me", "pid": os.getpid()})
    [message] = _messages(smtp_servers.plain, 1)

    def broken(*args, **kwargs):
        raise OperationalError("the database is away")

    monkeypatch.setattr("django.db.models.query.QuerySet.update", broken)
    assert outbox_received(task=SEND_BATCH, args=[[message.pk]]) == 0
    assert "could not mark what it holds" in caplog.text


def _lane_empty(lane: str) -> None:
    queued_payloads(lane)  # whatever earlier tests left on the session's broker


@pytest.mark.django_db
def test_a_task_lost_on_its_way_is_dispatched_again_once_its_lane_is_empty(
    smtp_servers, settings, monkeypatch
):
    """A task a worker popped and died with before it could mark anything (Redis gives it
    back only after its visibility timeout, 1 h), or that the broker lost: its rows say
    "handed to the broker" (worker "") while the broker's queue for their lane is empty. Once
    that has lasted a lease, the sweep hands them over again, long before the claim timeout."""
    settings.WORKER_LEASE_SECONDS = 45
    settings.SEND_CLAIM_TIMEOUT = 600
    _lease("live", age=1)
    lost, fresh, held_live = _messages(smtp_servers.plain, 3)
    a_minute_ago = timezone.now() - timedelta(seconds=60)
    OutgoingMessage.objects.filter(pk=lost.pk).update(worker="", updated_at=a_minute_ago)
    OutgoingMessage.objects.filter(pk=fresh.pk).update(worker="")  # just handed over
    OutgoingMessage.objects.filter(pk=held_live.pk).update(worker="live", updated_at=a_minute_ago)
    _lane_empty("interactive")
    send_message.apply_async((0,))  # another task waits in the lane: ours may be behind it
    try:
        assert outbox_sweep()["redispatched"] == 0
    finally:
        _lane_empty("interactive")

    assert outbox_sweep()["redispatched"] == 1  # the lane is empty: ours is nowhere
    workers = dict(OutgoingMessage.objects.values_list("pk", "worker"))
    assert workers == {lost.pk: UNDISPATCHED, fresh.pk: "", held_live.pk: "live"}
    # A job's messages and a job still being built: the bulk lane's queue decides for them.
    job = BulkJob.objects.create(
        user=lost.user,
        kind="invoices",
        sender={},
        prepared=False,
        prepare_task=PREPARE_TASK,
        worker="",
    )
    BulkJob.objects.filter(pk=job.pk).update(updated_at=a_minute_ago)
    OutgoingMessage.objects.filter(pk=fresh.pk).update(job=job, updated_at=a_minute_ago)
    _lane_empty("bulk")
    send_batch.apply_async(([0],))
    try:
        sweep = outbox_sweep()
        assert (sweep["redispatched"], sweep["restarted_jobs"]) == (0, 0)
    finally:
        _lane_empty("bulk")
    sweep = outbox_sweep()
    assert (sweep["redispatched"], sweep["restarted_jobs"]) == (1, 1)


@pytest.mark.django_db
def test_a_broker_that_does_not_answer_loses_nothing_more(
    smtp_servers, settings, monkeypatch, caplog
):
    """The queue cannot be counted: nothing counts as lost on its way; the claim timeout rules."""
    settings.WORKER_LEASE_SECONDS = 45
    [message] = _messages(smtp_servers.plain, 1)
    OutgoingMessage.objects.filter(pk=message.pk).update(
        worker="", updated_at=timezone.now() - timedelta(seconds=60)
    )
    _lane_empty("interactive")

    def away(*args, **kwargs):
        raise ConnectionError("redis://:secret@redis:6379/0 refused")

    monkeypatch.setattr("directo_mail.celery.app.connection_for_read", away)
    assert outbox_sweep()["redispatched"] == 0
    assert "could not count the broker's queues" in caplog.text
    assert "secret" not in caplog.text and "redis:6379" in caplog.text  # its password scrubbed


def _received_in(pool_class, name: str, message_id: int) -> None:
    """Celery's task_received for send_message(message_id), in a worker with that pool."""
    from types import SimpleNamespace

    from directo_mail.celery import _received

    consumer = SimpleNamespace(pool=object.__new__(pool_class))
    _received(sender=consumer, request=SimpleNamespace(name=name, args=[message_id]))


@pytest.mark.django_db
def test_a_prefork_parent_marks_nothing_its_children_do(smtp_servers, settings, monkeypatch):
    """A prefork parent takes tasks for its children: were its lease on the rows, a child that
    fails (or is killed) before its claim would leave them held by a live process for half an
    hour. The parent marks nothing; the child's batch and claim mark what it holds, and a row
    its task let go of is lost on its way once a lease has passed with the lane empty."""
    from celery.concurrency.prefork import TaskPool as Prefork
    from celery.concurrency.solo import TaskPool as Solo

    settings.WORKER_LEASE_SECONDS = 45
    settings.SEND_CLAIM_TIMEOUT = 600
    [message] = _messages(smtp_servers.plain, 1)
    OutgoingMessage.objects.filter(pk=message.pk).update(worker="")  # the broker has it
    _lease("main", age=0)
    monkeypatch.setattr(leases, "_lease", {"name": "main", "pid": os.getpid()})

    _received_in(Prefork, SEND_MESSAGE, message.pk)
    assert OutgoingMessage.objects.get(pk=message.pk).worker == ""
    _received_in(Solo, SEND_MESSAGE, message.pk)  # a solo worker runs what it takes
    assert OutgoingMessage.objects.get(pk=message.pk).worker == "main"

    # The prefork case: the child fails before its claim; its task is gone (acknowledged).
    OutgoingMessage.objects.filter(pk=message.pk).update(worker="")
    monkeypatch.setattr(leases, "_lease", {"name": "child", "pid": os.getpid()})

    def away(*args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(ratelimit, "wait_for_turn", away)
    with pytest.raises(OperationalError):
        outbox_send(message_id=message.pk)
    OutgoingMessage.objects.filter(pk=message.pk).update(
        updated_at=timezone.now() - timedelta(seconds=50)
    )
    _lane_empty("interactive")
    assert outbox_sweep()["redispatched"] == 1  # a lease later, not half an hour


@pytest.mark.django_db
def test_an_early_task_for_a_held_message_does_not_hide_it_from_the_sweep(
    smtp_servers, settings, monkeypatch
):
    """A long hold has no task: the sweep dispatches it when due. A task received earlier (a
    duplicate, a stray) sends nothing and marks nothing, so the message goes at its time."""
    [message] = _messages(smtp_servers.plain, 1)
    now = timezone.now()
    OutgoingMessage.objects.filter(pk=message.pk).update(
        worker="", send_after=now + timedelta(minutes=20), updated_at=now
    )
    _lease("me", age=0)
    monkeypatch.setattr(leases, "_lease", {"name": "me", "pid": os.getpid()})
    assert outbox_received(task=SEND_MESSAGE, args=[message.pk]) == 0
    assert outbox_send(message_id=message.pk) == "skipped"  # early: nothing sent

    OutgoingMessage.objects.filter(pk=message.pk).update(  # 20 minutes later
        send_after=timezone.now() - timedelta(seconds=1),
        updated_at=timezone.now() - timedelta(minutes=20),
    )
    assert outbox_sweep()["came_due"] == 1


@pytest.mark.django_db
def test_a_retry_waiting_for_its_countdown_is_not_taken_for_a_lost_task(smtp_servers, settings):
    """A deferred message's retry waits in a worker's memory (a countdown task, not in the
    queue), unmarked when the mark failed or a prefork parent holds it: it counts as lost
    only once its countdown has passed too, so no sweep skips the retry's backoff."""
    settings.WORKER_LEASE_SECONDS = 45
    settings.SEND_RETRY_BASE_SECONDS = 30
    [message] = _messages(smtp_servers.plain, 1)
    _lane_empty("interactive")
    # Deferred after its 4th try: its retry's countdown is 30 × 2³ = 240 s.
    for seconds_ago, lost in ((60, 0), (240 + 30, 0), (240 + 50, 1)):
        OutgoingMessage.objects.filter(pk=message.pk).update(
            worker="", attempts=4, updated_at=timezone.now() - timedelta(seconds=seconds_ago)
        )
        assert outbox_sweep()["redispatched"] == lost, seconds_ago
