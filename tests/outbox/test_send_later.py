""" "Send at" holds a message until its time (issue 12, item 6; done when: "tested with a short
delay"), with the real worker and the plain test server: nothing reaches the server before the
time, whatever tries (a duplicate task, the sweeper run over and over, a second worker); it
arrives once after it, also when its eta task was lost; cancelled meanwhile it never goes, and
another user cannot cancel it. Holds of 2-4 s keep the module fast.
"""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from invoices.models import SendState
from invoices.services import invoice_send_one, invoices_send
from outbox.models import MessageState, OutgoingMessage
from outbox.services import bulk_job_progress, outbox_send, outbox_sweep
from outbox.tasks import send_message
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.outbox.waiting import settled

pytestmark = [
    pytest.mark.usefixtures("english", "celery_worker"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def _default_user(code: str = "DORA"):
    factories.company()
    user = factories.user(code, email=f"{code.lower()}@acme.example")
    factories.profile(user, mode=SenderMode.DEFAULT)
    return user


def _held_invoice(user, seconds: float):
    invoice = invoice_factories.invoice("FV/40/2026")
    message = invoice_send_one(
        user=user,
        invoice=invoice,
        to=["ap@smith.example"],
        subject="Invoice FV/40/2026",
        body="Attached.",
        send_after=timezone.now() + timedelta(seconds=seconds),
    )
    return invoice, message


def _until(moment, *, every: float, action) -> int:
    """Run `action` every `every` seconds until shortly before `moment`; how many times."""
    runs = 0
    while (moment - timezone.now()).total_seconds() > every + 0.3:
        action()
        runs += 1
        time.sleep(every)
    return runs


def test_a_held_message_waits_for_its_time_whatever_tries_and_goes_once(
    transactional_db, smtp_servers
):
    server = smtp_servers.plain  # the platform relay of the Default mode
    invoice, message = _held_invoice(_default_user(), seconds=3)

    def everything_that_might_send_early() -> None:
        send_message.delay(message.pk)  # a duplicate task, as a redelivery would be
        outbox_sweep(stuck_after=timedelta(0))  # the sweeper, as impatient as it can be
        assert outbox_send(message_id=message.pk) == "skipped"  # a second worker
        assert not server.messages, "sent before its time"

    assert _until(message.send_after, every=0.4, action=everything_that_might_send_early) >= 3
    assert not server.messages

    [mail] = server.wait_for(1, timeout=15)
    message = settled(message)
    assert message.state == MessageState.SENT
    assert message.sent_at >= message.send_after
    assert mail.message["Subject"] == "Invoice FV/40/2026"
    outbox_sweep(stuck_after=timedelta(0))
    time.sleep(1.0)
    assert len(server.messages) == 1  # once
    assert message.attempts == 1
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.SENT


def test_a_held_message_whose_task_was_lost_goes_with_the_next_sweep(
    transactional_db, smtp_servers, settings
):
    """No eta task at all (as after a worker killed, a broker emptied, or a hold too long for
    an eta): the sweeper, run as beat would with a short interval, dispatches it when due."""
    settings.SEND_LATER_ETA_MAX_SECONDS = 0  # in this process: the enqueue publishes no task
    server = smtp_servers.plain
    _invoice, message = _held_invoice(_default_user(), seconds=2)
    sweeps = []

    def sweep() -> None:
        sweeps.append(outbox_sweep())
        assert not server.messages, "sent before its time"

    _until(message.send_after, every=0.5, action=sweep)
    assert not any(s["redispatched"] for s in sweeps)
    time.sleep(max((message.send_after - timezone.now()).total_seconds(), 0) + 0.1)
    assert not server.messages  # its time came, but no task exists for it

    due = outbox_sweep()
    assert (due["came_due"], due["redispatched"]) == (1, 1)
    server.wait_for(1, timeout=15)
    assert settled(message).state == MessageState.SENT
    later = outbox_sweep()
    assert (later["came_due"], later["redispatched"]) == (0, 0)
    time.sleep(0.5)
    assert len(server.messages) == 1


def test_cancelled_meanwhile_it_never_goes_and_the_invoice_is_unsent_again(
    transactional_db, smtp_servers
):
    user = _default_user()
    invoice, message = _held_invoice(user, seconds=2)
    owner = Client()
    owner.force_login(user)

    assert owner.post(f"/outbox/{message.pk}/cancel/").status_code == 302

    time.sleep(max((message.send_after - timezone.now()).total_seconds(), 0) + 1.5)
    outbox_sweep(stuck_after=timedelta(0))
    time.sleep(0.5)
    assert not smtp_servers.plain.messages
    message.refresh_from_db()
    assert (message.state, message.attempts) == (MessageState.CANCELLED, 0)
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.UNSENT


def test_another_user_cannot_cancel_it_and_it_goes_at_its_time(transactional_db, smtp_servers):
    _invoice, message = _held_invoice(_default_user(), seconds=2)
    intruder = Client()
    intruder.force_login(factories.user("MALLORY"))

    assert intruder.post(f"/outbox/{message.pk}/cancel/").status_code == 404

    smtp_servers.plain.wait_for(1, timeout=15)
    message = settled(message)
    assert message.state == MessageState.SENT and message.sent_at >= message.send_after


def test_send_document_send_at_wait_json_prints_sent_after_the_time(transactional_db, smtp_servers):
    _default_user()
    customer = invoice_factories.customer("Smith", emails=["ap@smith.example"], language="en")
    invoice_factories.invoice("FV/41/2026", customer=customer)
    send_at = timezone.now() + timedelta(seconds=3)
    out = io.StringIO()

    started = time.monotonic()
    call_command(
        "send_document",
        "--user=DORA",
        "--invoice=FV/41/2026",
        f"--send-at={send_at.isoformat()}",
        "--wait",
        "--json",
        stdout=out,
    )

    result = json.loads(out.getvalue())
    assert (result["state"], result["invoice_state"]) == ("sent", SendState.SENT)
    assert time.monotonic() - started >= 2.5
    message = OutgoingMessage.objects.get()
    assert message.sent_at >= message.send_after
    assert len(smtp_servers.plain.messages) == 1


def test_a_held_bulk_job_goes_at_its_time(transactional_db, smtp_servers):
    server = smtp_servers.plain
    factories.company()
    user = invoice_factories.smtp_sender("PIOTR", server)
    invoice_factories.invoices(3)

    job = invoices_send(user=user, unsent=True, send_after=timezone.now() + timedelta(seconds=3))

    deadline = time.monotonic() + 15
    while job.messages.count() < 3:  # the worker builds the messages meanwhile
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert {m.send_after for m in job.messages.all()} == {job.send_after}
    _until(job.send_after, every=0.4, action=lambda: outbox_sweep(stuck_after=timedelta(0)))
    assert not server.messages
    assert bulk_job_progress(job=job)["remaining"] == 3

    server.wait_for(3, timeout=15)
    deadline = time.monotonic() + 15
    while bulk_job_progress(job=job)["remaining"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert bulk_job_progress(job=job)["sent"] == 3
    assert min(m.sent_at for m in job.messages.all()) >= job.send_after
    time.sleep(0.5)
    assert len(server.messages) == 3
