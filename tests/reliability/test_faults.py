"""The reliability suite (issue 7), faults: bulk jobs through the real worker while things break.

Every scenario sends a job of invoices through the session's Celery worker (or its own, for
Redis) to an aiosmtpd test server, breaks something mid-job, lets the app recover as it would
in production (the worker restarted, beat's `outbox_sweep`, the send retries with backoff),
then counts per invoice, at the server and in the database:

- delivered: the invoice's message arrived (by Message-ID, counted at the server);
- failed with an Event: not delivered, its message is failed and has its "Sending failed"
  Event, so the user knows;
- duplicates: invoices that arrived more than once; "unrecorded duplicates" are those whose
  message is not flagged "possibly sent twice" with its Event;
- lost: neither delivered nor failed with an Event (a message stuck queued, marked sent but
  never received, or never built).

The scenarios:

1. SIGKILL ×3 during a 2,000-invoice job: once while `invoices.tasks.prepare_job` is still
   building the messages, twice while sending. The two sending kills land while the server
   holds its "250" for a message it has already accepted (a scripted stall after DATA): the
   worst moment, where the message did go but the worker never learns it. After each kill the
   sweep runs (`outbox_sweep(stuck_after=0)`, what beat does once SEND_CLAIM_TIMEOUT has
   passed; run while the worker is down, so no live claim is taken for a dead one) and the
   worker is restarted.
2. Redis restarted mid-job (only when CELERY_BROKER_URL is redis://): the test starts its own
   redis-server on a free port and its own worker on it, starts the job with
   `manage.py bulk_send` in that environment, restarts Redis (no persistence: the queued tasks
   are gone), and runs the sweep in that environment too. The shared Redis is left alone.
3. SMTP faults, each on part of a job, the server then recovering: the connection dropped
   mid-DATA; 421 at MAIL; 451 after the body; 452 at RCPT; a stall past SMTP_TIMEOUT (3 s in
   the worker) before MAIL and after the body (the server took the mail, the client timed out
   waiting for its "250"); an expired and a wrong-host certificate (permanent: every mail of
   the job fails with an Event). Transient faults must end delivered after retries.

The last test adds the totals: lost across all scenarios = 0; duplicates at kills ≤ kills;
duplicates at a late "250" ≤ such stalls (SMTP cannot avoid those: RFC 1047); unrecorded
duplicates = 0. The late "250" first went unrecorded: a timeout after the whole body was sent
now flags the message "possibly sent twice" (smtp_settings.transports, outbox.services).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from invoices.demo import seed_invoices
from invoices.models import Invoice
from invoices.services import invoices_send
from outbox.models import BulkJob, Event, EventKind, MessageState, OutgoingMessage
from outbox.services import bulk_job_progress, outbox_sweep
from tests import factories
from tests.invoices.factories import smtp_sender
from tests.smtp_fixtures import HOST, CeleryWorker, SMTPTestServer, free_port

AREA = "faults"
KILLS = 3
KILL_JOB = 2000

# Totals over the module's scenarios, filled as each one ends (before it asserts).
_TOTALS: dict[str, int] = defaultdict(int)


# ------------------------------------------------------------------------------
# Counting
# ------------------------------------------------------------------------------
@dataclass
class Outcome:
    invoices: int
    delivered: int
    failed: int  # failed with their Event, not delivered
    duplicates: int  # invoices received more than once
    unrecorded: int  # of those, not flagged "possibly sent twice" with an Event
    lost: int
    retries: int  # attempts beyond each message's first
    flagged: int  # invoices whose message is flagged "possibly sent twice"
    examples: list[str]


def count(server: SMTPTestServer) -> Outcome:
    """What became of every invoice in the database (each scenario has only its own)."""
    received = Counter(m.message_id for m in list(server.messages))
    messages = defaultdict(list)
    for message in OutgoingMessage.objects.filter(related_id__gt=""):
        messages[message.related_id].append(message)
    failed_event = set(
        Event.objects.filter(kind=EventKind.SEND_FAILED).values_list("message_id", flat=True)
    )
    duplicate_event = set(
        Event.objects.filter(kind=EventKind.SEND_DUPLICATE_RISK).values_list(
            "message_id", flat=True
        )
    )
    outcome = Outcome(0, 0, 0, 0, 0, 0, 0, 0, [])
    for invoice_id, number in Invoice.objects.values_list("pk", "number"):
        outcome.invoices += 1
        own = messages.get(str(invoice_id), [])
        outcome.retries += sum(max(m.attempts - 1, 0) for m in own)
        outcome.flagged += any(m.possibly_duplicated for m in own)
        times = sum(received[m.message_id.strip("<>")] for m in own)
        if times:
            outcome.delivered += 1
            if times > 1:
                outcome.duplicates += 1
                # Two messages for one invoice would be a duplicate nobody flagged.
                recorded = len(own) == 1 and own[0].possibly_duplicated
                if not (recorded and own[0].pk in duplicate_event):
                    outcome.unrecorded += 1
                    outcome.examples.append(f"{number}: received {times}× unrecorded")
        elif any(m.state == MessageState.FAILED and m.pk in failed_event for m in own):
            outcome.failed += 1
        else:
            outcome.lost += 1
            states = [f"{m.state} ({m.attempts} attempts)" for m in own] or ["no message"]
            outcome.examples.append(f"{number}: lost, {', '.join(states)}")
    return outcome


def record(
    figures, name: str, outcome: Outcome, *, expect: dict[str, str], kills: int = 0, late: int = 0
) -> None:
    """One figures row per figure, into the totals too. `expect`: targets by figure; `kills`
    and `late` (replies to a taken message lost to a timeout): the duplicates allowed."""
    rows = {
        "delivered": outcome.delivered,
        "failed with an Event": outcome.failed,
        "duplicates (recorded)": outcome.duplicates,
        "unrecorded duplicates": outcome.unrecorded,
        "lost": outcome.lost,
    }
    targets = {"unrecorded duplicates": "= 0", "lost": "= 0", **expect}
    for figure, value in rows.items():
        figures.add(AREA, f"{name}: {figure}", value, targets.get(figure, ""))
    figures.add(AREA, f"{name}: retries (attempts beyond the first)", outcome.retries)
    figures.add(AREA, f"{name}: flagged possibly sent twice", outcome.flagged)
    _TOTALS["scenarios"] += 1
    _TOTALS["invoices"] += outcome.invoices
    _TOTALS["lost"] += outcome.lost
    _TOTALS["kills"] += kills
    _TOTALS["late"] += late
    _TOTALS["kill duplicates" if kills else "other duplicates"] += outcome.duplicates
    _TOTALS["unrecorded"] += outcome.unrecorded


def check(outcome: Outcome, **wanted: int) -> None:
    """Assert the figures (every scenario: nothing lost, every duplicate recorded)."""
    got = {name: getattr(outcome, name) for name in wanted}
    assert outcome.lost == 0, f"{outcome.lost} lost: {outcome.examples[:10]}"
    assert outcome.unrecorded == 0, f"unrecorded duplicates: {outcome.examples[:10]}"
    assert got == wanted, f"{got} != {wanted}; {outcome.examples[:10]}"


# ------------------------------------------------------------------------------
# Waiting
# ------------------------------------------------------------------------------
def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def settle(job: BulkJob, *, quiet: float = 20.0, timeout: float = 240.0) -> dict:
    """Wait until nothing of the job is left to send; give up when it makes no progress for
    `quiet` seconds (a lost message never ends) or after `timeout`. The last progress."""
    deadline = time.monotonic() + timeout
    last, changed = None, time.monotonic()
    while True:
        job.refresh_from_db()
        progress = bulk_job_progress(job=job)
        if progress["remaining"] == 0 and job.prepared:
            return progress
        now = (progress["sent"], progress["failed"], progress["remaining"])
        if now != last:
            last, changed = now, time.monotonic()
        if time.monotonic() - changed > quiet or time.monotonic() > deadline:
            return progress
        time.sleep(0.25)


def received(server: SMTPTestServer, n: int, job: BulkJob, *, quiet: float = 30.0) -> bool:
    """Wait until the server has `n` messages: False once the job stopped moving (nothing
    arrived and no message was built for `quiet` seconds)."""
    last, changed = None, time.monotonic()
    while len(server.messages) < n:
        now = (len(server.messages), job.messages.count())
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed > quiet:
            return False
        time.sleep(0.2)
    return True


def start_job(server: SMTPTestServer, invoices: int, *, code: str = "FAULT") -> BulkJob:
    user = smtp_sender(code, server)
    assert seed_invoices(customers=20, invoices=invoices) == invoices
    return invoices_send(user=user, unsent=True)


# ------------------------------------------------------------------------------
# 1. SIGKILL ×3 during a 2,000-invoice job
# ------------------------------------------------------------------------------
@pytest.mark.usefixtures("english")
def test_worker_sigkilled_three_times_during_a_2000_invoice_job(
    transactional_db, smtp_servers, celery_worker, figures
):
    server = smtp_servers.plain
    started = time.monotonic()
    job = start_job(server, KILL_JOB)
    sweeps = []

    def kill_sweep_restart() -> None:
        celery_worker.kill()
        # What beat does once SEND_CLAIM_TIMEOUT has passed, while the worker is down.
        sweeps.append(outbox_sweep(stuck_after=timedelta(0)))
        celery_worker.restart()

    # Kill 1: while prepare_job is still building the messages (chunks of BULK_BATCH_SIZE).
    wait_until(lambda: job.messages.count() >= 150, 120, "150 messages built")
    kill_sweep_restart()
    job.refresh_from_db()
    built_at_kill = job.messages.count()
    assert not job.prepared and built_at_kill < KILL_JOB, "the job was built before kill 1"
    assert sweeps[0]["restarted_jobs"] == 1  # the building task died with the worker

    # Kills 2 and 3: while sending, each while the server holds the "250" of a message it has
    # just accepted: the message went, and the worker dies before it can know.
    kills = 1
    for at in (KILL_JOB * 2 // 5, KILL_JOB * 3 // 4):
        if not received(server, at, job):
            break  # the job stopped: count what became of it
        accepted = len(server.messages)
        server.stall_at("AFTER_DATA", 2.0)
        server.wait_for(accepted + 1, timeout=60)
        kill_sweep_restart()
        kills += 1
        assert len(server.messages) < KILL_JOB, "the job ended before the kill"

    progress = settle(job)
    outcome = count(server)
    name = f"SIGKILL ×{KILLS}, {KILL_JOB:,} invoices"
    record(
        figures,
        name,
        outcome,
        expect={
            "delivered": f"= {KILL_JOB}",
            "failed with an Event": "= 0",
            "duplicates (recorded)": f"≤ {KILLS}",
        },
        kills=KILLS,
    )
    returned = sum(sweep["returned"] for sweep in sweeps)
    figures.add(AREA, f"{name}: claims the sweeps returned (in flight at a kill)", returned)
    figures.add(AREA, f"{name}: seconds", round(time.monotonic() - started, 1))
    check(outcome, delivered=KILL_JOB, failed=0, invoices=KILL_JOB)
    assert kills == KILLS
    assert outcome.duplicates <= KILLS
    assert progress["remaining"] == 0, progress
    assert (progress["sent"], progress["failed"]) == (KILL_JOB, 0)


# ------------------------------------------------------------------------------
# 2. Redis restarted mid-job
# ------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server on a free port, without persistence: a restart empties it."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_until(self.ready, 20, f"redis-server on port {self.port}")

    def ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path)
    redis.start()
    yield redis
    redis.stop()


REDIS_JOB = 300


@pytest.mark.usefixtures("english")
def test_redis_restarted_mid_job(
    transactional_db, smtp_servers, celery_worker, celery_broker, figures, request, tmp_path
):
    name = f"Redis restarted, {REDIS_JOB} invoices"
    if not celery_broker.url.startswith("redis://"):
        figures.add(AREA, name, f"skipped: broker is {celery_broker.url.partition(':')[0]}")
        pytest.skip("the broker is not Redis (CELERY_BROKER_URL)")
    redis = request.getfixturevalue("private_redis")
    server = smtp_servers.plain
    smtp_sender("REDIS", server)
    assert seed_invoices(customers=20, invoices=REDIS_JOB) == REDIS_JOB
    env = {**celery_worker.env, "CELERY_BROKER_URL": redis.url}
    env.pop("CELERY_BROKER_DIR", None)
    worker = CeleryWorker(env, tmp_path / "worker.log", f"faults-redis-{uuid.uuid4().hex[:8]}@x")
    started_at = time.monotonic()
    worker.start()
    try:
        # The job is started and swept in the worker's environment: its tasks go to this Redis.
        started = worker.manage("bulk_send", "--user", "REDIS", "--unsent", "--json")
        assert started.returncode == 0, started.stderr
        job = BulkJob.objects.get(pk=json.loads(started.stdout)["job"])
        server.wait_for(REDIS_JOB // 3, timeout=120)
        mark = worker.log_position()
        redis.restart()
        restarted = time.time()
        worker.wait_for_log(r"Connected to redis://", timeout=60, since=mark)
        assert len(server.messages) < REDIS_JOB, "the job ended before Redis restarted"
        # Beat's sweep, for what was queued before the restart (not the worker's live claims).
        sweep = worker.manage(
            "shell",
            "-c",
            "import json, time; from datetime import timedelta; "
            "from outbox.services import outbox_sweep; "
            f"age = timedelta(seconds=time.time() - {restarted!r}); "
            "print(json.dumps(outbox_sweep(stuck_after=age)))",
        )
        assert sweep.returncode == 0, sweep.stderr
        swept = json.loads(sweep.stdout.strip().splitlines()[-1])
        progress = settle(job)
    finally:
        worker.stop()
    outcome = count(server)
    record(
        figures,
        name,
        outcome,
        expect={
            "delivered": f"= {REDIS_JOB}",
            "failed with an Event": "= 0",
            "duplicates (recorded)": "= 0",
        },
    )
    figures.add(AREA, f"{name}: messages the sweep re-dispatched", swept["redispatched"])
    figures.add(AREA, f"{name}: seconds", round(time.monotonic() - started_at, 1))
    check(outcome, delivered=REDIS_JOB, failed=0, duplicates=0, invoices=REDIS_JOB)
    assert swept["redispatched"] > 0, swept  # tasks were lost with Redis: the sweep found them
    assert progress["remaining"] == 0, progress


# ------------------------------------------------------------------------------
# 3. SMTP faults on part of a job
# ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    name: str
    invoices: int
    arrange: Callable[[SMTPTestServer], None]
    server: str = "plain"  # which of smtp_servers
    permanent: bool = False
    possible_duplicates: int = 0  # the server took the mail, the client never heard "250"


FAULTS = [
    Fault("connection dropped mid-DATA", 100, lambda s: s.drop_connection_at("DATA", times=10)),
    Fault(
        "421 at MAIL",
        100,
        lambda s: s.script("MAIL", "421 4.7.0 Try again later, closing connection.", times=10),
    ),
    Fault(
        "451 after the body",
        100,
        lambda s: s.script("DATA", "451 4.3.0 Error: queue file write error", times=10),
    ),
    Fault(
        "452 at RCPT",
        100,
        lambda s: s.script("RCPT", "452 4.3.1 Insufficient system storage", times=10),
    ),
    Fault("stall past SMTP_TIMEOUT at MAIL", 50, lambda s: s.stall_at("MAIL", 5.0, times=2)),
    Fault(
        "stall past SMTP_TIMEOUT after the body",
        50,
        # The server has taken the mail (counted) and stalls before its "250".
        lambda s: s.stall_at("AFTER_DATA", 5.0, times=2),
        possible_duplicates=2,
    ),
    Fault("expired certificate", 50, lambda s: None, server="expired_cert", permanent=True),
    Fault("wrong-host certificate", 50, lambda s: None, server="wrong_host_cert", permanent=True),
]


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_smtp_fault_during_a_job(transactional_db, smtp_servers, celery_worker, figures, fault):
    server = getattr(smtp_servers, fault.server)
    fault.arrange(server)
    user = factories.user("FAULT", email="fault@acme.example")
    security = "ssl" if server.implicit_tls else "none"
    factories.profile(user, host=server.host, port=server.port, security=security)
    assert seed_invoices(customers=20, invoices=fault.invoices) == fault.invoices
    started = time.monotonic()
    job = invoices_send(user=user, unsent=True)
    progress = settle(job)
    outcome = count(server)
    n = fault.invoices
    delivered, failed = (0, n) if fault.permanent else (n, 0)
    record(
        figures,
        f"{fault.name}, {n} invoices",
        outcome,
        expect={
            "delivered": f"= {delivered}",
            "failed with an Event": f"= {failed}",
            "duplicates (recorded)": f"≤ {fault.possible_duplicates}",
        },
        late=fault.possible_duplicates,
    )
    figures.add(AREA, f"{fault.name}: seconds", round(time.monotonic() - started, 1))
    check(outcome, delivered=delivered, failed=failed, invoices=n)
    assert outcome.duplicates <= fault.possible_duplicates
    assert progress["remaining"] == 0, progress
    if fault.permanent:
        explanations = set(OutgoingMessage.objects.values_list("explanation", flat=True))
        assert (
            explanations
            == {
                "expired_cert": {"cert_expired"},
                "wrong_host_cert": {"cert_hostname"},
            }[fault.server]
        )
    else:
        assert outcome.retries > 0, "the fault never happened"
        assert Event.objects.filter(kind=EventKind.SEND_RETRYING).exists()


# ------------------------------------------------------------------------------
# Totals
# ------------------------------------------------------------------------------
def test_totals(figures):
    if not _TOTALS["scenarios"]:
        pytest.skip("no fault scenario ran in this session")
    figures.add(AREA, "all scenarios: invoices", _TOTALS["invoices"])
    figures.add(AREA, "all scenarios: lost", _TOTALS["lost"], "= 0")
    kills, late = _TOTALS["kills"], _TOTALS["late"]
    at_kills, other = _TOTALS["kill duplicates"], _TOTALS["other duplicates"]
    figures.add(AREA, "all scenarios: duplicates at kills (recorded)", at_kills, f"≤ {kills}")
    figures.add(AREA, "all scenarios: duplicates at a late “250” (recorded)", other, f"≤ {late}")
    figures.add(AREA, "all scenarios: unrecorded duplicates", _TOTALS["unrecorded"], "= 0")
    assert _TOTALS["lost"] == 0
    assert at_kills <= kills
    assert other <= late
    assert _TOTALS["unrecorded"] == 0
