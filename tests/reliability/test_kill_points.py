"""Issue 13, done when (first part): a SIGKILL at every named step of sending a mail and of
building a job (directo_mail/faults.py, by fault injection, not by luck) leaves nothing stuck,
nothing lost and no duplicate unrecorded.

Each case stops the session's worker, starts a job of invoices, and hands it to a worker of its
own whose environment names one point (DIRECTO_FAULT, with DIRECTO_FAULT_AT: its Nth pass):
that worker kills itself there with SIGKILL, mid-job. Then, as production would: beat's sweep
(`outbox_sweep(stuck_after=0)`, what it does once the claim timeout has passed, run while no
worker is up), the worker up again, and later sweeps. Counted per invoice as in test_faults.py,
and also "stuck": an invoice still "sending", a message queued or sending, a job still running.

Before the message's final state and the invoice's were one transaction, "deliver.recorded"
sat between them: the invoice stayed "sending" for ever although its mail was delivered.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from datetime import timedelta

import pytest

from directo_mail.faults import POINTS
from invoices.models import Invoice, SendState
from outbox.models import JobState, MessageState, OutgoingMessage
from outbox.services import outbox_sweep
from tests.reliability.test_faults import count, received, record, settle, start_job
from tests.smtp_fixtures import CeleryWorker

AREA = "faults"
INVOICES = 60
BATCH = 10  # the faulty worker builds and sends in batches of 10: several chunks and batches

# (point, pass at which the worker dies, invoices its server refuses so that some fail)
CASES = [
    ("prepare.chunk_rendered", 2, 0),
    ("prepare.chunk_written", 2, 0),
    ("dispatch.committed", 3, 0),
    ("receive.taken", 2, 0),  # a batch sent, the next one popped and lost
    ("prepare.before_prepared", 1, 0),
    ("deliver.claimed", 5, 0),
    ("deliver.accepted", 5, 0),
    ("deliver.recorded", 5, 0),
    ("deliver.recorded", INVOICES, 0),  # right after the job's last message: nobody finishes it
    ("deliver.failed_recorded", 2, 4),
]


def test_every_point_has_a_case():
    assert {point for point, _at, _refused in CASES} == set(POINTS)


def _stuck(job) -> dict[str, int]:
    job.refresh_from_db()
    return {
        "invoices sending": Invoice.objects.filter(send_state=SendState.QUEUED).count(),
        "messages open": OutgoingMessage.objects.filter(
            state__in=(MessageState.QUEUED, MessageState.SENDING)
        ).count(),
        "job not finished": int(job.state != JobState.FINISHED or job.finished_at is None),
    }


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize(("point", "at", "refused"), CASES, ids=lambda v: str(v))
def test_a_sigkill_at_a_named_point_leaves_nothing_stuck(
    transactional_db, smtp_servers, celery_worker, figures, tmp_path, point, at, refused
):
    server = smtp_servers.plain
    if refused:
        server.script("RCPT", "550 5.1.1 No such user here", times=refused)
    celery_worker.kill()  # the faulty worker alone takes the job's tasks
    faulty = CeleryWorker(
        {
            **celery_worker.env,
            "DIRECTO_FAULT": point,
            "DIRECTO_FAULT_AT": str(at),
            "BULK_BATCH_SIZE": str(BATCH),
        },
        tmp_path / "faulty-worker.log",
        f"faulty-{point}@%h",
    )
    started = time.monotonic()
    try:
        job = start_job(server, INVOICES, code="KILLED")
        faulty.start()
        deadline = time.monotonic() + 60
        while faulty.process.poll() is None:
            assert time.monotonic() < deadline, f"never reached {point}:\n{faulty.log_tail()}"
            time.sleep(0.05)
        # It died at the point, by SIGKILL (not an error): the case really ran.
        assert faulty.process.returncode == -signal.SIGKILL, faulty.log_tail()
        faulty.process = None
        sweep = outbox_sweep(stuck_after=timedelta(0))  # beat, after the claim timeout
    finally:
        faulty.kill()
        celery_worker.start()
    received(server, INVOICES - refused, job, quiet=15)
    settle(job, quiet=10, timeout=120)
    later = outbox_sweep()  # beat's next round, with the default timeout: live claims kept
    stuck = _stuck(job)
    outcome = count(server)
    name = f"SIGKILL at {point} (pass {at})"
    record(
        figures,
        name,
        outcome,
        expect={"delivered": f"= {INVOICES - refused}", "failed with an Event": f"= {refused}"},
        kills=1,
    )
    figures.add(AREA, f"{name}: stuck", sum(stuck.values()), "= 0")
    figures.add(AREA, f"{name}: seconds", round(time.monotonic() - started, 1))
    assert stuck == {"invoices sending": 0, "messages open": 0, "job not finished": 0}, (
        stuck,
        sweep,
        later,
    )
    assert outcome.lost == 0 and outcome.unrecorded == 0, outcome.examples[:10]
    assert (outcome.delivered, outcome.failed) == (INVOICES - refused, refused), outcome
    assert outcome.duplicates <= 1  # only a kill after the server's 250 can cause one
    assert Invoice.objects.filter(send_state=SendState.SENT).count() == INVOICES - refused
    assert Invoice.objects.filter(send_state=SendState.FAILED).count() == refused


def _until_killed(faulty: CeleryWorker) -> None:
    """Start the faulty worker and wait until it has killed itself at its point (SIGKILL)."""
    faulty.start()
    deadline = time.monotonic() + 60
    while faulty.process.poll() is None:
        assert time.monotonic() < deadline, faulty.log_tail()
        time.sleep(0.05)
    assert faulty.process.returncode == -signal.SIGKILL, faulty.log_tail()
    faulty.process = None


@pytest.mark.usefixtures("english")
def test_a_worker_restarted_after_a_sigkill_takes_the_work_back_by_itself(
    transactional_db, smtp_servers, celery_worker, figures, tmp_path
):
    """No sweep by hand and default settings: the worker dies holding a claim and a batch; the
    restarted worker expires the dead process's lease at its start and sweeps, so sending
    resumes at once (issue 13: within 120 s of a worker being up again), not after the claim
    timeout (600 s)."""
    server = smtp_servers.plain
    celery_worker.kill()
    faulty = CeleryWorker(
        {**celery_worker.env, "DIRECTO_FAULT": "deliver.claimed", "DIRECTO_FAULT_AT": "5"},
        tmp_path / "faulty-worker.log",
        "faulty-lease@%h",
    )
    try:
        job = start_job(server, INVOICES, code="LEASED")
        _until_killed(faulty)
        held = OutgoingMessage.objects.filter(state=MessageState.SENDING).count()
        taken = OutgoingMessage.objects.filter(state=MessageState.QUEUED, worker__gt="").count()
    finally:
        faulty.kill()
        up = time.monotonic()
        celery_worker.start()
    assert held == 1 and taken > 0  # a claim and the rest of its batch, held by the dead
    deadline = up + 120
    while (
        OutgoingMessage.objects.filter(
            state__in=(MessageState.QUEUED, MessageState.SENDING)
        ).exists()
        or job.messages.count() < INVOICES
    ):
        assert time.monotonic() < deadline, celery_worker.log_tail()
        time.sleep(0.1)
    seconds = round(time.monotonic() - up, 1)
    figures.add(
        AREA,
        "SIGKILL mid-send, default settings: seconds until all final after the restart",
        seconds,
        "≤ 120",
    )
    outcome = count(server)
    assert outcome.lost == 0 and outcome.unrecorded == 0, outcome.examples[:10]
    assert outcome.delivered == INVOICES and outcome.duplicates <= 1
    assert _stuck(job) == {"invoices sending": 0, "messages open": 0, "job not finished": 0}


@pytest.mark.usefixtures("english")
def test_a_batch_a_killed_worker_had_popped_goes_once_its_lane_is_empty(
    transactional_db, smtp_servers, celery_worker, figures, tmp_path, settings
):
    """The worker dies having taken a batch from the broker, before it could mark it as its own
    (receive.taken): on Redis the task comes back only after the visibility timeout (1 h), on
    the filesystem broker never, and its rows name no worker. The sweep, as beat runs it (no
    forced timeout), sends them again once the bulk queue is empty and a lease has passed:
    seconds after the rest of the job, not after the claim timeout (600 s)."""
    settings.WORKER_LEASE_SECONDS = 10  # this process sweeps: a shorter lease, a shorter test
    server = smtp_servers.plain
    celery_worker.kill()
    faulty = CeleryWorker(
        {
            **celery_worker.env,
            "DIRECTO_FAULT": "receive.taken",
            "DIRECTO_FAULT_AT": "2",  # its first batch is sent, the second one is lost
            "BULK_BATCH_SIZE": str(BATCH),
        },
        tmp_path / "faulty-worker.log",
        "faulty-receive@%h",
    )
    try:
        job = start_job(server, INVOICES, code="POPPED")
        _until_killed(faulty)
        nobodys = OutgoingMessage.objects.filter(state=MessageState.QUEUED, worker="").count()
    finally:
        faulty.kill()
        up = time.monotonic()
        celery_worker.start()
    assert len(server.messages) == BATCH and nobodys == INVOICES - BATCH  # one batch sent
    deadline = up + 120
    while OutgoingMessage.objects.filter(
        state__in=(MessageState.QUEUED, MessageState.SENDING)
    ).exists():
        assert time.monotonic() < deadline, celery_worker.log_tail()
        outbox_sweep()  # beat's round (every OUTBOX_SWEEP_SECONDS), here every second
        time.sleep(1)
    seconds = round(time.monotonic() - up, 1)
    settle(job, quiet=10, timeout=60)
    figures.add(
        AREA,
        "a batch popped by a worker killed before it marked it: seconds until all final",
        seconds,
        "≤ 120",
    )
    outcome = count(server)
    assert outcome.lost == 0 and outcome.unrecorded == 0, outcome.examples[:10]
    assert outcome.delivered == INVOICES and outcome.duplicates == 0, outcome
    assert _stuck(job) == {"invoices sending": 0, "messages open": 0, "job not finished": 0}


RANDOM_JOB = 2000


class Beat:
    """`celery beat` with the default schedule (the sweep every OUTBOX_SWEEP_SECONDS, 60 s)."""

    def __init__(self, env: dict[str, str], directory) -> None:
        from tests.smtp_fixtures import spawn_logged, stop_group

        self._stop_group = stop_group
        self.process = spawn_logged(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "directo_mail",
                "beat",
                "--loglevel=INFO",
                f"--schedule={directory / 'celerybeat-schedule'}",
            ],
            env,
            directory / "beat.log",
        )

    def stop(self) -> None:
        self._stop_group(self.process, 5)


@pytest.mark.usefixtures("english")
def test_three_random_sigkills_with_default_settings_everything_final_within_300_s(
    transactional_db, smtp_servers, celery_worker, figures, tmp_path
):
    """Issue 13, done when: 3 SIGKILLs of every worker process at random moments of a
    2,000-invoice job, the worker restarted each time as a supervisor would, beat running, no
    sweep by hand and the recovery settings at their defaults (SEND_CLAIM_TIMEOUT 600 s,
    WORKER_LEASE_SECONDS 45, OUTBOX_SWEEP_SECONDS 60): every invoice final within 300 s of the
    job's start, none lost, every duplicate recorded."""
    seed = random.randrange(10**6)
    chance = random.Random(seed)
    server = smtp_servers.plain
    defaults = {
        name: value
        for name, value in celery_worker.env.items()
        if name
        not in {"SEND_CLAIM_TIMEOUT", "WORKER_LEASE_SECONDS", "WORKER_BEAT_SECONDS"}
        | {"OUTBOX_SWEEP_SECONDS"}
    }
    celery_worker.kill()
    worker = CeleryWorker(defaults, tmp_path / "worker.log", "random-kills@%h")
    beat = Beat(defaults, tmp_path)
    kills_at = sorted(chance.sample(range(100, RANDOM_JOB - 100), 3))
    kills = 0
    try:
        worker.start()
        started = time.monotonic()
        job = start_job(server, RANDOM_JOB, code="RANDOM")
        for at in kills_at:
            if not received(server, at, job, quiet=60):
                break
            worker.kill()  # every process of the worker, mid-whatever it was doing
            kills += 1
            time.sleep(chance.uniform(0, 3))  # a supervisor's restart delay
            worker.start()
        deadline = started + 300
        while True:
            job.refresh_from_db()
            done = (
                job.state == JobState.FINISHED
                and not Invoice.objects.filter(send_state=SendState.QUEUED).exists()
            )
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        seconds = round(time.monotonic() - started, 1)
    finally:
        beat.stop()
        worker.kill()
        celery_worker.start()
    outcome = count(server)
    name = f"3 random SIGKILLs (seed {seed}), {RANDOM_JOB:,} invoices, default settings"
    record(figures, name, outcome, expect={"delivered": f"= {RANDOM_JOB}"}, kills=kills)
    figures.add(AREA, f"{name}: seconds from the job's start until all final", seconds, "≤ 300")
    assert kills == 3, f"the job ended before kill {kills + 1} (seed {seed})"
    assert _stuck(job) == {"invoices sending": 0, "messages open": 0, "job not finished": 0}, (
        f"not final within 300 s (seed {seed})"
    )
    assert seconds <= 300
    assert outcome.lost == 0 and outcome.unrecorded == 0, outcome.examples[:10]
    assert outcome.delivered == RANDOM_JOB and outcome.duplicates <= kills
