"""Issue 13, item 3: a click is durable once it answers. The job (and a single mail) is
recorded with its dispatch in one transaction (worker=UNDISPATCHED until the broker has the
task); with the broker away the click still answers, and once the broker is back the sweep
hands the work over and every invoice goes out once.

"Away" is a real refusal: the in-process Celery app is pointed at a Redis URL on a port where
nothing listens (connection refused), then back at the session's broker."""

from __future__ import annotations

import contextlib
import os
import socket
import time

import pytest

from directo_mail.celery import app
from invoices.models import Invoice, SendState
from outbox.leases import UNDISPATCHED
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from outbox.services import outbox_sweep
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.reliability.test_faults import wait_until

pytestmark = [pytest.mark.usefixtures("english")]


@contextlib.contextmanager
def broker_away():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens there once the probe is closed
    conf = app.conf
    dead = f"redis://127.0.0.1:{port}/0"
    saved = (conf.broker_url, conf.broker_transport, conf.broker_transport_options)
    # Celery reads CELERY_BROKER_URL from the environment before its own setting (CI's Redis).
    environ = os.environ.get("CELERY_BROKER_URL")
    pools = (app._pool, app.amqp._producer_pool)
    app._pool = app.amqp._producer_pool = None
    os.environ["CELERY_BROKER_URL"] = dead
    conf.broker_url, conf.broker_transport = dead, None
    conf.broker_transport_options = {}
    try:
        assert app.connection_for_write().as_uri().endswith(f":{port}/0")
        yield
    finally:
        if app._pool is not None:
            app._pool.force_close_all()
        if environ is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = environ
        conf.broker_url, conf.broker_transport, conf.broker_transport_options = saved
        app._pool, app.amqp._producer_pool = pools


def test_the_bulk_click_answers_with_the_broker_away_and_the_job_goes_once_it_is_back(
    transactional_db, smtp_servers, celery_worker, client, settings, caplog
):
    server = smtp_servers.plain
    factories.company()
    user = invoice_factories.smtp_sender("CLICK", server)
    invoice_factories.invoices(3)
    client.force_login(user)

    with broker_away():
        response = client.post("/invoices/send/", {"action": "unsent"})
    assert response.status_code == 302  # the job's page, not a server error
    job = BulkJob.objects.get()
    assert (job.state, job.prepared, job.worker) == (JobState.RUNNING, False, UNDISPATCHED)
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.QUEUED}
    assert "the broker did not take the task" in caplog.text
    page = client.get(response["Location"])
    assert page.status_code == 200
    time.sleep(1)
    assert len(server.messages) == 0  # nothing reached a worker

    settings.WORKER_LEASE_SECONDS = 0  # beat's next sweep, a lease's time later
    assert outbox_sweep()["restarted_jobs"] == 1
    wait_until(lambda: len(server.messages) >= 3, 30, "the job did not go out after the broker")
    wait_until(
        lambda: BulkJob.objects.get().state == JobState.FINISHED, 30, "the job did not finish"
    )
    time.sleep(0.5)
    assert sorted(m.message_id for m in server.messages) == sorted(
        m.strip("<>") for m in OutgoingMessage.objects.values_list("message_id", flat=True)
    )  # each once
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.SENT}


def test_a_test_email_clicked_with_the_broker_away_is_sent_once_it_is_back(
    transactional_db, smtp_servers, celery_worker, client, settings
):
    server = smtp_servers.plain
    factories.company()
    user = invoice_factories.smtp_sender("TESTER", server)
    client.force_login(user)

    with broker_away():
        response = client.post("/outbox/test-email/")
    assert response.status_code == 302
    message = OutgoingMessage.objects.get()
    assert (message.state, message.worker) == (MessageState.QUEUED, UNDISPATCHED)

    settings.WORKER_LEASE_SECONDS = 0
    assert outbox_sweep()["redispatched"] == 1
    [mail] = server.wait_for(1, timeout=20)
    assert mail.message_id == message.message_id.strip("<>")
    wait_until(
        lambda: OutgoingMessage.objects.get().state == MessageState.SENT, 10, "not marked sent"
    )
    time.sleep(0.5)
    assert len(server.messages) == 1
