"""Mass-mailing benchmark (issue 5, item 8): `python bench/bulk_send.py --n 2000 [--tls]`.

One run measures, against the same local sink on 127.0.0.1:
  (a) the ceiling: smtplib (TCP_NODELAY) over one reused connection sending N copies of the
      very mail the project sends (bytes of a sent invoice mail, PDF included);
  (b) the project end to end, from the click: the SMTP user's "Send all unsent" through the
      web view in a warm process (bench/probe.py click) for N fresh invoices, through the bulk
      lane's Celery worker (--concurrency=2) to the sink;
  (c) a peer on the same work: django-post-office queues N mails of the same content and PDF,
      `send_queued_mail --processes 2` sends them.
It prints mails/s of each, b/a, b/c, the worker's CPU per mail, the PDF cost per invoice and
peak RSS as a markdown table (and --json). bench/README.md explains each column.

Defaults are the embedded ones: a fresh SQLite file and the filesystem broker in a temp dir.
--database-url postgres://… creates (and drops) a fresh database on that server for each of
(b) and (c); --broker-url redis://… is purged first, so give it a database number nobody else
uses (e.g. redis://127.0.0.1:6379/15). Every process started here (sink, Postfix, worker) is
stopped at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import secrets
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from email import message_from_bytes
from pathlib import Path
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sinks import HOST, PostfixTlsSink, SmtpSink, TestCA, throwaway_ca

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = BASE_DIR / "bench"
PYTHON = sys.executable
CELERY = str(Path(sys.executable).with_name("celery"))
CUSTOMERS = 100

# Issue 13, item 6. "b/a in job": the second row, PDFs rendered inside the job's window.
TARGETS = {"b/a": 0.6, "b/c": 2.0, "worker_cpu_ms": 1.5, "pdf_ms": 2.5, "b/a in job": 0.25}

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when the bench dies, even by SIGKILL."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------
class Stalled(Exception):
    """The watched command made no progress for too long; it was killed."""


def run_waited(
    command: list[str], env: dict[str, str], watch=None, every: float = 2.0
) -> tuple[str, float, int, float]:
    """Run `command`; its stdout, wall seconds, peak RSS (kB) and CPU seconds (user+sys) from
    wait4, so the numbers are the child's own. Raises on a non-zero exit. `watch()`, called
    every `every` seconds while it runs, may return False: the command is killed (Stalled)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(  # noqa: S603 (our interpreter, our arguments)
            command, cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        next_check = time.monotonic() + every
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if watch is not None and time.monotonic() >= next_check:
                    next_check += every
                    if not watch():
                        raise Stalled(" ".join(command[1:4]))
                time.sleep(0.05)
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}… exited {process.returncode}:\n{stderr}")
    return stdout, wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(  # noqa: S603
        [PYTHON, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def probe(env: dict[str, str], *args: str) -> dict:
    stdout, *_ = run_waited([PYTHON, str(BENCH_DIR / "probe.py"), *args], env)
    return json.loads(stdout.strip().splitlines()[-1])


class Worker:
    """`celery -A directo_mail worker --concurrency=N` (prefork, as scripts/run.sh starts it)."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        concurrency: int,
        queues: str = "bulk",
        cwd: Path = BASE_DIR,
    ) -> None:
        self.env, self.log_path, self.concurrency, self.cwd = env, log_path, concurrency, cwd
        self.queues = queues  # the lane(s), as scripts/run.sh starts one worker per lane
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        command = [
            CELERY,
            "-A",
            "directo_mail",
            "worker",
            f"--concurrency={self.concurrency}",
            f"--queues={self.queues}",
            "--loglevel=INFO",
            f"--hostname=bench-{uuid.uuid4().hex[:8]}@localhost",
            # No talk with other workers that may share a Redis broker.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # only prctl
            )
        deadline = time.monotonic() + timeout
        while b" ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker was not ready in {timeout} s:\n{self.tail()}")
            time.sleep(0.05)
        # The prefork children start with the pool; wait until all are there.
        while len(self.processes()) < self.concurrency + 1 and time.monotonic() < deadline:
            time.sleep(0.05)

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def processes(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            main = psutil.Process(self.process.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> dict[int, float]:
        """User+system CPU of the main process and each prefork child, by pid."""
        seconds = {}
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
        return seconds

    def peak_rss_kb(self) -> dict[int, int]:
        return {p.pid: vm_hwm_kb(p.pid) for p in self.processes()}

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as stream:
            stream.seek(offset)
            return stream.read().decode(errors="replace")

    def stop(self, grace: float = 10.0) -> None:
        """Cold shutdown (SIGQUIT to the main process: it stops its pool), SIGKILL to the
        whole group after `grace` seconds. Only called when the job is over (or on Ctrl-C)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGQUIT)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


class Machines:
    """The bulk lane's workers: one group, or with --machines K (scale-out), K groups, each
    as another machine would run it: its own working directory and local disk (MEDIA_ROOT),
    FILE_STORAGE=database, the one PostgreSQL and Redis. Same interface as one Worker."""

    def __init__(self, env: dict[str, str], tmp: Path, concurrency: int, machines: int) -> None:
        if machines == 1:
            self.workers = [Worker(env, tmp / "worker.log", concurrency)]
            return
        self.workers = []
        for k in range(1, machines + 1):
            home = tmp / f"machine{k}"
            (home / "media").mkdir(parents=True)
            machine_env = {
                **env,
                "MEDIA_ROOT": str(home / "media"),
                "FILE_STORAGE": "database",
                "PYTHONPATH": str(BASE_DIR),
            }
            self.workers.append(Worker(machine_env, tmp / f"worker{k}.log", concurrency, cwd=home))

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def processes(self) -> list[psutil.Process]:
        return [p for worker in self.workers for p in worker.processes()]

    def cpu_seconds(self) -> dict[int, float]:
        return {pid: s for worker in self.workers for pid, s in worker.cpu_seconds().items()}

    def peak_rss_kb(self) -> dict[int, int]:
        return {pid: kb for worker in self.workers for pid, kb in worker.peak_rss_kb().items()}

    def tail(self) -> str:
        return "\n".join(worker.tail() for worker in self.workers)

    def log_offsets(self) -> list[int]:
        return [worker.log_path.stat().st_size for worker in self.workers]

    def log_since(self, offsets: list[int]) -> str:
        return "".join(w.log_since(o) for w, o in zip(self.workers, offsets, strict=True))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def _task_names(worker_log: str) -> dict[str, int]:
    """How many of each task the worker received, from its log."""
    names: dict[str, int] = {}
    for line in worker_log.splitlines():
        if "] received" in line and "Task " in line:
            name = line.split("Task ", 1)[1].split("[", 1)[0]
            names[name] = names.get(name, 0) + 1
    return names


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process, in kB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class ProgressWatch:
    """Reads the job's message counts straight from the database (read-only); `__call__` is
    False once they have not changed for `timeout` seconds: a stalled job (see README)."""

    def __init__(self, database_url: str, timeout: float) -> None:
        self.url, self.timeout = database_url, timeout
        self.last: dict[str, int] | None = None
        self.since = time.monotonic()

    def counts(self) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM outbox_outgoingmessage GROUP BY state"
        try:
            if self.url.startswith("sqlite:///"):
                import sqlite3

                path = self.url.removeprefix("sqlite:///")
                with contextlib.closing(
                    sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
                ) as connection:
                    return dict(connection.execute(sql).fetchall())
            import psycopg

            with psycopg.connect(self.url) as connection:
                return dict(connection.execute(sql).fetchall())
        except Exception:  # a busy database: no news this time
            return self.last or {}

    def __call__(self) -> bool:
        counts = self.counts()
        if counts != self.last:
            self.last, self.since = counts, time.monotonic()
        return time.monotonic() - self.since < self.timeout


# ------------------------------------------------------------------------------
# Databases and brokers
# ------------------------------------------------------------------------------
class Databases:
    """Fresh databases: SQLite files in the temp dir, or new PostgreSQL databases (dropped)."""

    def __init__(self, url: str | None, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.created: list[str] = []

    def fresh(self, label: str) -> str:
        if not self.url:
            return f"sqlite:///{self.tmp / f'{label}.sqlite3'}"
        parts = urlsplit(self.url)
        if not parts.scheme.startswith("postgres"):
            raise SystemExit("--database-url: only postgres:// URLs (SQLite is the default)")
        name = f"directo_bench_{label}_{secrets.token_hex(4)}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return parts._replace(path=f"/{name}").geturl()

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(sql)

    def drop_all(self) -> None:
        for name in self.created:
            with contextlib.suppress(Exception):
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created = []


# ------------------------------------------------------------------------------
# (a) the ceiling
# ------------------------------------------------------------------------------
class _NoDelaySMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def ceiling(n: int, port: int, mail_dir: Path, ca: TestCA | None) -> dict:
    """N copies of the project's mail over one smtplib connection (StartTLS when `ca`)."""
    raw = (mail_dir / "message.eml").read_bytes()
    parts = json.loads((mail_dir / "parts.json").read_text())
    assert message_from_bytes(raw)["Message-ID"]  # noqa: S101 (a sanity check of the export)
    cpu, wall = time.process_time(), time.perf_counter()
    smtp = _NoDelaySMTP(HOST, port, timeout=30)
    try:
        smtp.ehlo()
        if ca is not None:
            smtp.starttls(context=ca.client_context())
            smtp.ehlo()
        for _ in range(n):
            refused = smtp.sendmail(parts["mail_from"], parts["recipients"], raw)
            if refused:
                raise RuntimeError(f"the sink refused {refused}")
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"seconds": wall, "rate": n / wall, "cpu_ms_per_mail": 1000 * cpu / n}


# ------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------
def cpu_ticks() -> tuple[int, int] | None:
    """(all, stolen) CPU ticks of the machine so far (/proc/stat): the time a VM's host gave
    to others while this one wanted to run. A shared host's steal moves every figure here."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields[:8]), fields[7]
    return None


def machine() -> dict:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "loadavg_at_start": os.getloadavg(),
    }


def sender_set_args(port: int, security: str) -> list[str]:
    """`manage.py sender set …` for the bench's SMTP user: its own server is the sink, no login
    (also used by bench/profile_send.py)."""
    options = ["--mode", "smtp", "--server", f"{HOST}:{port}", "--security", security]
    return ["sender", "set", "SMTP", *options, "--login", ""]


def project_env(options, tmp: Path, port: int, database_url: str, ca) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "directo_mail.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(tmp / "media"),
        "MAIL_CATCHER_DIR": str(tmp / "mail"),
        # The relay is not the sink: a user's own server that is the platform relay is refused
        # (relay_as_own_server, issue 11), and nothing here goes through the relay.
        "EMAIL_URL": f"smtp://{HOST}:2",
        "SMTP_ALLOW_PRIVATE_HOSTS": "true",
        "SMTP_ALLOWED_PORTS": f"25,465,587,{port}",
        # Only the providers' limits: no "smtp" key, so an own server is not paced at all.
        "SEND_RATE_LIMITS": "microsoft365=30,smtp.gmail.com=60",
        "PYTHONUNBUFFERED": "1",
    }
    if options.broker_url:
        env["CELERY_BROKER_URL"] = options.broker_url
    else:
        env["CELERY_BROKER_URL"] = "filesystem://"
        env["CELERY_BROKER_DIR"] = str(tmp / "broker")
    if options.batch_size:
        env["BULK_BATCH_SIZE"] = str(options.batch_size)
    if options.polling_interval is not None:
        env["CELERY_BROKER_POLLING_INTERVAL"] = str(options.polling_interval)
    if ca is not None:
        env["SSL_CERT_FILE"] = str(ca.bundle_file)
    return env


def project(
    options, tmp: Path, sink, ca, databases: Databases, result: dict, *, pdfs: str, latency: bool
) -> None:
    """(b) once, into result["b"] (`pdfs` "issue": the invoices' PDFs rendered by the worker
    when they were issued, before the job, as in production) or result["b_job"] ("job": the
    job renders them). The first run also exports the mail, times the PDFs alone and, with
    `latency`, measures the interactive lane during the job."""
    n = options.n
    key = "b" if pdfs == "issue" else "b_job"
    tmp = tmp / pdfs
    tmp.mkdir()
    mail_dir = tmp.parent / "mail-export"
    worker = interactive = None
    try:
        env = project_env(options, tmp, sink.port, databases.fresh(f"project_{pdfs}"), ca)
        manage(env, "migrate", "--noinput")
        if options.broker_url:  # before seeding: the seed queues the PDFs' rendering
            subprocess.run(  # noqa: S603
                [CELERY, "-A", "directo_mail", "purge", "-f"],
                cwd=BASE_DIR,
                env=env,
                capture_output=True,
                check=True,
            )
        started = time.perf_counter()
        seed = ["seed_demo", "--customers", str(min(CUSTOMERS, n)), "--invoices", str(n)]
        manage(env, *seed, *(["--pdfs-at-send"] if pdfs == "job" else []))
        log(f"seeded {n} invoices in {time.perf_counter() - started:.1f} s (PDFs: {pdfs})")
        manage(env, *sender_set_args(sink.port, "starttls" if options.tls else "none"))
        # Mass mailing through an own server unlocks after a passed connection test (issue 14).
        manage(env, "sender", "test", "SMTP")
        worker = Machines(env, tmp, options.concurrency, options.machines)
        worker.start()
        log(f"worker ready (pids {[p.pid for p in worker.processes()]})")
        render: dict = {}
        if pdfs == "issue":  # the invoices were issued: the worker renders their PDFs now
            cpu_start = worker.cpu_seconds()
            rendered_by = time.monotonic() + 30 + n * 0.05
            while (kept := probe(env, "pdfs-kept")["kept"]) < n:
                if time.monotonic() > rendered_by:
                    raise RuntimeError(f"only {kept} of {n} PDFs rendered\n{worker.tail()}")
                time.sleep(0.5)
            cpu_end = worker.cpu_seconds()
            render_cpu = sum(cpu_end.get(pid, 0) - cpu_start.get(pid, 0) for pid in cpu_end)
            render = {"worker_cpu_ms_per_invoice": 1000 * render_cpu / n}
            log(f"PDFs rendered at issue: {render['worker_cpu_ms_per_invoice']:.2f} ms CPU each")
        during: dict = {}
        if latency:
            # The interactive lane's own worker, as scripts/run.sh starts it: a test e-mail's
            # click-to-"250" idle, then while the job runs (≤ 300 ms p95, as when idle).
            interactive = Worker(env, tmp / "interactive.log", 1, queues="interactive")
            interactive.start()
            result["latency"] = {"idle": probe(env, "interactive-latency", "10")}
            latency_thread = threading.Thread(
                target=lambda: during.update(probe(env, "interactive-latency", "20", "during-job")),
                daemon=True,
            )
            latency_thread.start()
        cpu_before = worker.cpu_seconds()
        log_offset = worker.log_offsets()
        launched = time.time()
        watch = ProgressWatch(env["DATABASE_URL"], options.stall_timeout)
        try:
            stdout, wall, command_rss, command_cpu = run_waited(
                [PYTHON, str(BENCH_DIR / "probe.py"), "click"], env, watch=watch
            )
        except Stalled:
            errors = sorted(
                {
                    line.split("] ", 1)[-1][:200]
                    for line in worker.log_since(log_offset).splitlines()
                    if "ERROR/" in line
                }
            )
            rss = worker.peak_rss_kb()
            result[key] = {
                "stalled": True,
                "counts": watch.counts(),
                "worker_errors": errors,
                "worker_peak_rss_mb": max(rss.values(), default=0) / 1024,
            }
            log(
                f"(b) STALLED: no progress for {options.stall_timeout:.0f} s; messages by "
                f"state {watch.counts()}; worker errors: {errors}"
            )
            worker.stop()
            worker = None
        else:
            cpu_after = worker.cpu_seconds()
            if latency:
                latency_thread.join(60)
                result["latency"]["during"] = during
            worker_rss = worker.peak_rss_kb()
            progress = json.loads(stdout.strip().splitlines()[-1])
            # From the click: a web server that is up already (the process's own start and
            # Django's setup before it are not the user's wait).
            launched = progress["clicked"]
            stats = probe(env, "job-stats")
            if progress["sent"] != n or stats["states"].get("sent") != n:
                raise RuntimeError(f"not all mails were sent: {progress}\n{worker.tail()}")
            worker_cpu = sum(cpu_after.get(pid, 0) - cpu_before.get(pid, 0) for pid in cpu_after)
            tasks = _task_names(worker.log_since(log_offset))
            machines = None
            if options.machines > 1:
                by_pid = probe(env, "sent-by-pid")
                machines = [
                    {
                        "pids": [p.pid for p in machine.processes()],
                        "cpu_seconds": sum(
                            cpu_after.get(p.pid, 0) - cpu_before.get(p.pid, 0)
                            for p in machine.processes()
                        ),
                        "sent": sum(by_pid.get(str(p.pid), 0) for p in machine.processes()),
                    }
                    for machine in worker.workers
                ]
            end_to_end = stats["last_sent"] - launched
            send_phase = stats["last_sent"] - stats["first_claim"]
            result[key] = {
                "pdfs": pdfs,
                "render_at_issue": render,
                "rate": n / end_to_end,
                "seconds": end_to_end,
                "send_phase_rate": n / send_phase,
                "startup_seconds": stats["created"] - launched,
                "enqueue_seconds": stats["first_claim"] - stats["created"],
                "send_seconds": send_phase,
                "command_wall_seconds": wall,
                "worker_cpu_ms_per_mail": 1000 * worker_cpu / n,
                "worker_cpu_by_process_s": {
                    str(pid): round(cpu_after[pid] - cpu_before.get(pid, 0), 2) for pid in cpu_after
                },
                "command_cpu_ms_per_mail": 1000 * command_cpu / n,
                "click_answer_ms": 1000 * (progress["answered"] - progress["clicked"]),
                "click_cpu_ms": 1000 * progress["click_cpu_seconds"],
                "worker_peak_rss_mb": max(worker_rss.values()) / 1024,
                "worker_peak_rss_by_process_mb": {
                    str(pid): round(kb / 1024, 1) for pid, kb in worker_rss.items()
                },
                "command_peak_rss_mb": command_rss / 1024,
                "invoices_with_pdf": stats["invoices_with_pdf"],
                "job": stats,
            }
            if machines:
                result[key]["machines"] = machines
            log(
                f"(b, PDFs {pdfs}) project: {n} mails in {end_to_end:.2f} s end to end "
                f"({n / end_to_end:.0f}/s; send phase {n / send_phase:.0f}/s)"
            )
            worker.stop()
            worker = None
        if pdfs == "issue":
            parts = probe(env, "export-mail", str(mail_dir))
            result["message_bytes"] = parts["message_bytes"]
            result["pdf"] = probe(env, "pdf-cost")
            log(f"PDF: {result['pdf']['ms_per_invoice']:.2f} ms per invoice")
        pdf = result["pdf"]
        # Where were the PDFs rendered? In the worker when a job-preparing task ran there
        # (invoices.tasks.prepare_job), else in the click's process (invoices_send).
        b = result[key]
        if not b.get("stalled"):
            b["worker_tasks"] = tasks
            b["pdf_in_worker"] = any(name != "outbox.tasks.send_batch" for name in tasks)
            # Rendered during the job only when they were not at issue.
            pdf_cpu = 0.0 if pdfs == "issue" else pdf["cpu_seconds"] / pdf["invoices"] * n
            where = "worker" if b["pdf_in_worker"] else "command"
            b[f"{where}_cpu_ms_per_mail_beyond_pdf"] = (
                b[f"{where}_cpu_ms_per_mail"] - 1000 * pdf_cpu / n
            )
            other = "command" if b["pdf_in_worker"] else "worker"
            b[f"{other}_cpu_ms_per_mail_beyond_pdf"] = b[f"{other}_cpu_ms_per_mail"]

    finally:
        if worker is not None:
            worker.stop()
        if interactive is not None:
            interactive.stop()


def run(options) -> dict:
    n = options.n
    result: dict = {"n": n, "tls": options.tls, "machine": machine()}
    ticks_at_start = cpu_ticks()
    tmp = Path(tempfile.mkdtemp(prefix="directo-bench-"))
    tmp.chmod(0o755)
    databases = Databases(options.database_url, tmp)
    sink = None
    try:
        ca = throwaway_ca(tmp / "tls") if options.tls else None
        sink = PostfixTlsSink(ca) if options.tls else SmtpSink()
        sink.start()
        result["sink"] = sink.name
        log(f"sink: {sink.name} on {HOST}:{sink.port}")

        # -- (b) the project, PDFs rendered at issue, then rendered in the job -------------
        result["database"] = "PostgreSQL" if options.database_url else "SQLite"
        result["broker"] = "Redis" if options.broker_url else "filesystem"
        project(options, tmp, sink, ca, databases, result, pdfs="issue", latency=True)
        if not options.skip_in_job:
            project(options, tmp, sink, ca, databases, result, pdfs="job", latency=False)
        mail_dir = tmp / "mail-export"
        env = project_env(options, tmp, sink.port, "sqlite:///unused", ca)

        # -- (a) the ceiling ---------------------------------------------------------------
        result["a"] = ceiling(n, sink.port, mail_dir, ca)
        log(f"(a) ceiling: {result['a']['rate']:.0f}/s")

        # -- (c) the peer ------------------------------------------------------------------
        if not options.skip_peer:
            peer_env = {
                **env,
                "DJANGO_SETTINGS_MODULE": "bench.peer_settings",
                "DATABASE_URL": databases.fresh("peer"),
                "MEDIA_ROOT": str(tmp / "peer-media"),
                "BENCH_SINK_PORT": str(sink.port),
                "BENCH_SINK_TLS": "1" if options.tls else "0",
                "PYTHONPATH": str(BASE_DIR),
            }
            stdout, _wall, peer_rss, _cpu = run_waited(
                [
                    PYTHON,
                    str(BENCH_DIR / "peer.py"),
                    "--n",
                    str(n),
                    "--mail",
                    str(mail_dir),
                    "--lockfile",
                    str(tmp / "post_office"),
                ],
                peer_env,
            )
            peer = json.loads(stdout.strip().splitlines()[-1])
            if peer["sent"] != n:
                raise RuntimeError(f"post_office sent {peer['sent']} of {n}")
            total = peer["queue_seconds"] + peer["send_seconds"]
            peer.update(
                rate=n / total,
                seconds=total,
                send_phase_rate=n / peer["send_seconds"],
                cpu_ms_per_mail=1000 * peer["send_cpu_seconds"] / n,
                peak_rss_mb=max(peer_rss, peer["peak_rss_children_kb"]) / 1024,
            )
            result["c"] = peer
            log(
                f"(c) post_office: {n / total:.0f}/s "
                f"(send_queued_mail {peer['send_phase_rate']:.0f}/s)"
            )
    finally:
        if sink is not None:
            sink.stop()
        databases.drop_all()
        if options.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if ticks_at_start and (ticks := cpu_ticks()) and ticks[0] > ticks_at_start[0]:
        result["steal_percent"] = (
            100 * (ticks[1] - ticks_at_start[1]) / (ticks[0] - ticks_at_start[0])
        )
    return result


# ------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------
def _ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x and y else None


def _f(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _check(value: float | None, target: float, *, at_most: bool = False) -> str:
    if value is None:
        return "not measured"
    ok = value <= target if at_most else value >= target
    return "met" if ok else "NOT met"


def report(result: dict) -> str:
    if result["b"].get("stalled"):
        return _report_stalled(result)
    a, b, c = result["a"], result["b"], result.get("c")
    m = result["machine"]
    b_a = _ratio(b["rate"], a["rate"])
    b_c = _ratio(b["rate"], c["rate"]) if c else None
    smtp = "StartTLS" if result["tls"] else "plain"
    machine_text = f"{m['nproc']}× {m['cpu']}, Python {m['python']}"
    header = (
        "| date | N | SMTP | PDFs rendered | a: smtplib ceiling, mails/s "
        "| b: directo_mail, mails/s | c: post_office, mails/s | b/a | b/c "
        "| worker CPU ms/mail beyond PDF (total) | PDF ms/invoice "
        "| peak RSS MB (worker / web click) | machine |"
    )
    lines = [header, "|" + " --- |" * 13]
    rows = [(b, "at issue")]
    if (in_job := result.get("b_job")) and not in_job.get("stalled"):
        rows.append((in_job, "in the job"))
    for row_b, when in rows:
        rss = f"{row_b['worker_peak_rss_mb']:.0f} / {row_b['command_peak_rss_mb']:.0f}"
        lines.append(
            f"| {m['date']} | {result['n']:,} | {smtp} | {when} | {_f(a['rate'])} "
            f"| {_f(row_b['rate'])} | {_f(c['rate']) if c else '–'} "
            f"| {_f(_ratio(row_b['rate'], a['rate']), 2)} "
            f"| {_f(_ratio(row_b['rate'], c['rate']) if c else None, 2)} "
            f"| {row_b['worker_cpu_ms_per_mail_beyond_pdf']:.2f} "
            f"({row_b['worker_cpu_ms_per_mail']:.2f}) "
            f"| {result['pdf']['ms_per_invoice']:.2f} | {rss} | {machine_text} |"
        )
    lines.append("")
    lines.append(
        f"- sink: {result['sink']}; database {result['database']}, "
        f"broker {result['broker']}; one mail {result['message_bytes']:,} bytes "
        f"(one-page PDF of {result['pdf']['mean_pdf_bytes']:,.0f} bytes); "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}; "
        f"CPU time the VM's host took for others during the run (steal): "
        f"{_f(result.get('steal_percent'), 1)} %"
    )
    send_vs_a = _f(_ratio(b["send_phase_rate"], a["rate"]), 2)
    lines.append(
        f"- b phases: click → job created (the view's answer {b['click_answer_ms']:.0f} ms, "
        f"{b['click_cpu_ms']:.0f} ms CPU) {b['startup_seconds']:.2f} s, job created → first mail "
        f"claimed {b['enqueue_seconds']:.2f} s, first claim → last mail accepted "
        f"{b['send_seconds']:.2f} s ({b['send_phase_rate']:,.0f} mails/s, {send_vs_a} of a)"
    )
    pdf = result["pdf"]
    render = b.get("render_at_issue") or {}
    lines.append(
        f"- PDFs: {pdf['cpu_ms_per_invoice']:.2f} ms CPU, {pdf['ms_per_invoice']:.2f} ms wall "
        "per invoice (all N rendered again, timed alone); at issue the worker spent "
        f"{_f(render.get('worker_cpu_ms_per_invoice'), 2)} ms CPU an invoice rendering them "
        '(invoices.tasks.render_pdfs, before the job). Row "at issue": worker CPU '
        f"{b['worker_cpu_ms_per_mail']:.2f} ms/mail in all; the web click's process "
        f"{b['command_cpu_ms_per_mail']:.2f} ms/mail; worker tasks: "
        + ", ".join(f"{name} ×{count}" for name, count in b["worker_tasks"].items())
    )
    if in_job and not in_job.get("stalled"):
        lines.append(
            f'- row "in the job": PDFs rendered by invoices.tasks.prepare_job; worker CPU '
            f"{in_job['worker_cpu_ms_per_mail']:.2f} ms/mail in all, "
            f"{in_job['worker_cpu_ms_per_mail_beyond_pdf']:.2f} beyond PDFs; job created → "
            f"first claim {in_job['enqueue_seconds']:.2f} s, send phase "
            f"{in_job['send_phase_rate']:,.0f} mails/s"
        )
    if c:
        lines.append(
            f"- c phases: mail.send ×N in one transaction {c['queue_seconds']:.2f} s, "
            f"send_queued_mail --processes 2 {c['send_seconds']:.2f} s "
            f"({c['send_phase_rate']:,.0f} mails/s, {c['cpu_ms_per_mail']:.2f} ms CPU/mail); "
            f"peak RSS {c['peak_rss_mb']:.0f} MB; b send phase / c send phase "
            f"{_f(_ratio(b['send_phase_rate'], c['send_phase_rate']), 2)}"
        )
    lines.append(f"- a: smtplib client CPU {a['cpu_ms_per_mail']:.2f} ms/mail")
    if machines := b.get("machines"):
        lines.append(
            f"- scale-out: {len(machines)} worker groups as {len(machines)} machines (own "
            "directories and disks, FILE_STORAGE=database, one PostgreSQL and Redis): "
            + "; ".join(
                f"machine {k} sent {m['sent']:,} mails using {m['cpu_seconds']:.1f} s CPU"
                + (f" ({1000 * m['cpu_seconds'] / m['sent']:.2f} ms/mail)" if m["sent"] else "")
                for k, m in enumerate(machines, 1)
            )
        )
    latency = result.get("latency", {})
    idle, busy = latency.get("idle", {}), latency.get("during", {})
    if idle or busy:
        lines.append(
            "- interactive lane (its own worker, as `make run` starts it): a single mail's "
            f"click → the server's 250, idle p50 {_f(idle.get('p50_ms'))} / p95 "
            f"{_f(idle.get('p95_ms'))} ms ({idle.get('samples', 0)} mails); during the job p50 "
            f"{_f(busy.get('p50_ms'))} / p95 {_f(busy.get('p95_ms'))} ms "
            f"({busy.get('samples', 0)} mails); target p95 ≤ 300 ms "
            f"{_check(busy.get('p95_ms'), 300, at_most=True)}"
        )
    in_job_b_a = _ratio(in_job["rate"], a["rate"]) if in_job and "rate" in in_job else None
    checked = {
        "b/a": b_a,
        "b/c": b_c,
        "worker CPU ms/mail beyond PDF": b["worker_cpu_ms_per_mail_beyond_pdf"],
        "PDF ms": pdf["cpu_ms_per_invoice"],
        "b/a in job": in_job_b_a,
    }
    if spread := result.get("spread"):
        lines.append(
            f"- over {result['runs']} runs (this table: the run with the median b/a), "
            "lowest / median / highest: "
            + "; ".join(
                f"{name} {_f(low, 2)} / {_f(middle, 2)} / {_f(high, 2)}"
                for name, (low, middle, high) in spread.items()
            )
        )
        checked.update({name: spread[name][1] for name in checked if name in spread})
    cpu = checked["worker CPU ms/mail beyond PDF"]
    lines.append(
        f"- targets (issue 13{', medians' if spread else ''}): "
        f"b/a ≥ {TARGETS['b/a']} {_check(checked['b/a'], TARGETS['b/a'])}; "
        f"b/c ≥ {TARGETS['b/c']:.0f} {_check(checked['b/c'], TARGETS['b/c'])}; "
        f"worker CPU beyond PDF ≤ {TARGETS['worker_cpu_ms']} ms/mail "
        f"{_check(cpu, TARGETS['worker_cpu_ms'], at_most=True)}"
        f"; PDF ≤ {TARGETS['pdf_ms']} ms "
        f"{_check(checked['PDF ms'], TARGETS['pdf_ms'], at_most=True)}; "
        f"b/a with PDFs in the job ≥ {TARGETS['b/a in job']} "
        f"{_check(checked['b/a in job'], TARGETS['b/a in job'])}; "
        "RSS ±10 % from 2,000 to 20,000: compare the RSS column of two runs"
    )
    return "\n".join(lines)


def _report_stalled(result: dict) -> str:
    a, b, c = result["a"], result["b"], result.get("c")
    smtp = "StartTLS" if result["tls"] else "plain"
    lines = [
        f"(b) STALLED on {result['n']:,} invoices, {smtp}: no message changed state for the "
        f"stall timeout; messages by state {b['counts']}.",
        "Worker errors:",
        *(f"    {error}" for error in b["worker_errors"]),
        f"(a) smtplib ceiling {a['rate']:,.0f} mails/s; "
        + (f"(c) post_office {c['rate']:,.0f} mails/s; " if c else "")
        + f"PDF {result['pdf']['ms_per_invoice']:.2f} ms/invoice; worker peak RSS "
        f"{b['worker_peak_rss_mb']:.0f} MB; sink: {result['sink']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Mass-mailing benchmark: smtplib ceiling, directo_mail, django-post-office."
    )
    parser.add_argument("--n", type=int, default=2000, help="mails (invoices) per measurement")
    parser.add_argument("--tls", action="store_true", help="StartTLS (a private Postfix sink)")
    parser.add_argument("--database-url", help="postgres://… server for fresh databases")
    parser.add_argument("--broker-url", help="redis://…/DB (purged: use a database of its own)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--machines",
        type=int,
        default=1,
        help="worker groups, each as another machine (own directory and disk); with 2 or more "
        "--database-url and --broker-url are required",
    )
    parser.add_argument("--batch-size", type=int, help="BULK_BATCH_SIZE (default: settings)")
    parser.add_argument(
        "--polling-interval",
        type=float,
        help="CELERY_BROKER_POLLING_INTERVAL for the filesystem broker (default: settings)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        help="give (b) up when no message changes state for this many seconds",
    )
    parser.add_argument("--skip-peer", action="store_true", help="skip (c) django-post-office")
    parser.add_argument(
        "--skip-in-job", action="store_true", help="skip the second (b): PDFs rendered in the job"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run everything this many times and show the run whose b/a is the median, with "
        "the range of each figure over the runs (a shared machine's speed drifts)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, DB)")
    options = parser.parse_args()
    if options.n < 1 or options.repeat < 1:
        parser.error("--n and --repeat must be positive")
    if options.machines > 1 and not (options.database_url and options.broker_url):
        parser.error("--machines 2 needs --database-url and --broker-url (shared by the machines)")

    def _terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    runs = []
    try:
        for number in range(options.repeat):
            if options.repeat > 1:
                log(f"run {number + 1} of {options.repeat}")
            runs.append(run(options))
            if runs[-1]["b"].get("stalled"):
                break
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        sys.exit(130)
    result = median_run(runs)
    if options.json:
        print(json.dumps(result if len(runs) == 1 else runs, indent=2, default=str))
    print(report(result))
    if result["b"].get("stalled"):
        sys.exit(2)


def median_run(runs: list[dict]) -> dict:
    """Of several runs, the one whose b/a is the median (every figure of the table from that one
    run), with "spread": each headline figure's lowest, median and highest over all runs (the
    targets are checked against the medians)."""
    if len(runs) == 1 or any(r["b"].get("stalled") for r in runs):
        return runs[-1]
    figures = {
        "b/a": lambda r: _ratio(r["b"]["rate"], r["a"]["rate"]),
        "b/c": lambda r: _ratio(r["b"]["rate"], r["c"]["rate"]) if r.get("c") else None,
        "a mails/s": lambda r: r["a"]["rate"],
        "b mails/s": lambda r: r["b"]["rate"],
        "worker CPU ms/mail beyond PDF": lambda r: r["b"]["worker_cpu_ms_per_mail_beyond_pdf"],
        "PDF ms": lambda r: r["pdf"]["cpu_ms_per_invoice"],
        "steal %": lambda r: r.get("steal_percent"),
        "b/a in job": lambda r: (
            _ratio(r["b_job"]["rate"], r["a"]["rate"]) if r.get("b_job", {}).get("rate") else None
        ),
    }
    ordered = sorted(runs, key=figures["b/a"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])  # the lower median of an even count
    chosen["spread"] = {
        name: (min(values), statistics.median(values), max(values))
        for name, get in figures.items()
        if (values := [v for r in runs if (v := get(r)) is not None])
    }
    chosen["runs"] = len(runs)
    return chosen


if __name__ == "__main__":
    main()
