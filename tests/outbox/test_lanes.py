"""Two lanes (issue 13, item 4): a test e-mail does not queue behind a bulk job.

Real workers and real SMTP servers. The job's server stalls every DATA, so its batch keeps a
worker busy for seconds. The session's worker (one process consuming both lanes) is the control:
the test e-mail waits until the whole job is through. With a worker per lane, as `make run` and
docker-compose start them, it arrives while most of the job is still to go. The last test stops
every worker and reads the broker: each door publishes into its lane.
"""

from __future__ import annotations

import atexit
import base64
import json
import re
import uuid
from collections import Counter
from datetime import timedelta

import pytest

from invoices.demo import seed_invoices
from invoices.models import Invoice, SendState
from invoices.services import invoices_job_prepare, invoices_send
from outbox.models import BulkJob, MessageState, OutgoingMessage
from outbox.services import bulk_job_cancel, outbox_send_batch, outbox_sweep
from outbox.staff import outbox_message_retry
from smtp_settings.models import Security
from tests import factories
from tests.outbox.waiting import settled
from tests.smtp_fixtures import CeleryWorker, SMTPTestServer, queued_payloads

INVOICES = 6
STALL = 1.0  # seconds at each DATA of the job's server (below the workers' SMTP_TIMEOUT, 3 s)
RECEIVED = re.compile(r"Task (\S+)\[[0-9a-f-]+\] received")


@pytest.fixture
def lane_workers(celery_worker: CeleryWorker, tmp_path):
    """Stops the session's worker (and empties the lanes); yields `start(*queues)`, which starts
    a worker consuming only those lanes, with the session worker's environment. Afterwards the
    workers stop, what they left in the broker is purged and the session's worker starts again."""
    from directo_mail.celery import app

    celery_worker.stop()
    app.control.purge()
    started: list[CeleryWorker] = []

    def start(*queues: str) -> CeleryWorker:
        name = "-".join(queues)
        worker = CeleryWorker(
            celery_worker.env,
            tmp_path / f"worker-{name}.log",
            nodename=f"{name}-{uuid.uuid4().hex[:6]}@localhost",
            queues=queues,
        )
        atexit.register(worker.kill)  # should teardown never run
        worker.start()
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
            atexit.unregister(worker.kill)
        app.control.purge()
        celery_worker.start()


def _busy_bulk_lane(server: SMTPTestServer) -> BulkJob:
    """A job of INVOICES invoices to a server that stalls each DATA; returns once its first
    mail arrived, so the job's batch is being sent."""
    server.stall_at("DATA", STALL, times=None)
    piotr = factories.user("PIOTR")
    factories.profile(piotr, host=server.host, port=server.port, security=Security.SSL)
    seed_invoices(customers=2, invoices=INVOICES)
    job = invoices_send(user=piotr, unsent=True)
    server.wait_for(1, timeout=30)
    return job


def _test_email(client) -> OutgoingMessage:
    """Anna presses "Send test e-mail" on her card (Default mode: the platform relay)."""
    anna = factories.user("ANNA")
    client.force_login(anna)
    response = client.post("/outbox/test-email/")
    assert response.status_code == 302
    return OutgoingMessage.objects.get(user=anna)


def _tasks_received(worker: CeleryWorker) -> set[str]:
    return set(RECEIVED.findall(worker.log_text()))


@pytest.mark.usefixtures("english")
def test_one_worker_for_both_lanes_makes_a_test_email_wait_for_the_job(
    transactional_db, smtp_servers, celery_worker, client
):
    """The control: one worker process takes both lanes, so the test e-mail waits behind the
    job's batch; it arrives only once every invoice has."""
    job_server, relay = smtp_servers.implicit_tls, smtp_servers.plain
    job = _busy_bulk_lane(job_server)

    test_email = _test_email(client)
    relay.wait_for(1, timeout=INVOICES * STALL + 20)
    job_mails_before_it = len(job_server.messages)

    assert settled(test_email).state == MessageState.SENT
    assert job_mails_before_it == INVOICES
    assert job.messages.filter(state=MessageState.SENT).count() == INVOICES


@pytest.mark.usefixtures("english")
def test_a_test_email_is_not_queued_behind_a_bulk_job(
    transactional_db, smtp_servers, lane_workers, client
):
    """A worker per lane: the test e-mail goes while the bulk worker is still in the job's
    batch, most of the job still to go. Each worker received only its lane's tasks."""
    bulk_worker, interactive_worker = lane_workers("bulk"), lane_workers("interactive")
    job_server, relay = smtp_servers.implicit_tls, smtp_servers.plain
    job = _busy_bulk_lane(job_server)

    test_email = _test_email(client)
    relay.wait_for(1, timeout=20)
    job_mails_before_it = len(job_server.messages)
    bulk_job_cancel(job=job)  # the rest of the job is not needed: end its batch soon

    assert settled(test_email).state == MessageState.SENT
    assert job_mails_before_it <= INVOICES // 2, "the test e-mail waited for the job"
    assert _tasks_received(interactive_worker) == {"outbox.tasks.send_message"}
    assert _tasks_received(bulk_worker) == {"invoices.tasks.prepare_job", "outbox.tasks.send_batch"}


def _queued(queue: str) -> Counter:
    """(task, its arguments) of every task waiting in the lane `queue`; takes them out."""
    found = Counter()
    for raw in queued_payloads(queue):
        envelope = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert kwargs == {}
        found[envelope["headers"]["task"], json.dumps(args)] += 1
    return found


@pytest.mark.usefixtures("english")
def test_every_door_publishes_into_its_lane(transactional_db, smtp_servers, lane_workers, client):
    """No worker runs: each task waits in the broker, in the lane it was published to. A single
    mail goes on "interactive", whatever sends it again (staff's retry, the sweeper); a job's
    work and every later send of a job's message (its server's 451, staff's retry, the
    sweeper) on "bulk". The payloads are ids only."""
    server = smtp_servers.plain
    piotr = factories.user("PIOTR")
    factories.profile(piotr, host=server.host, port=server.port, security=Security.NONE)
    seed_invoices(customers=2, invoices=3)

    test_email = _test_email(client)  # the card's button
    job = invoices_send(user=piotr, unsent=True)  # the invoice list's button
    invoices_job_prepare(job_id=job.pk)  # what the bulk worker does with it
    first, second, third = job.messages.order_by("pk")

    server.script("MAIL", "451 4.3.0 Try again later")
    assert outbox_send_batch(message_ids=[first.pk]) == {"deferred": 1}  # comes back later
    Invoice.objects.filter(pk=second.related_id).update(send_state=SendState.FAILED)
    for message in (second, test_email):  # staff retry a failed message
        OutgoingMessage.objects.filter(pk=message.pk).update(state=MessageState.FAILED)
        outbox_message_retry(message=message)
    outbox_sweep(stuck_after=timedelta(0))  # every queued message looks lost

    job_ids = [first.pk, second.pk, third.pk]
    assert _queued("interactive") == Counter(
        {("outbox.tasks.send_message", json.dumps([test_email.pk])): 3}  # click, retry, sweep
    )
    assert _queued("bulk") == Counter(
        {
            ("invoices.tasks.prepare_job", json.dumps([job.pk])): 1,
            ("outbox.tasks.send_batch", json.dumps([job_ids])): 2,  # prepared, and the sweep
            ("outbox.tasks.send_batch", json.dumps([[first.pk]])): 1,  # after the 451
            ("outbox.tasks.send_batch", json.dumps([[second.pk]])): 1,  # staff's retry
        }
    )
