"""Two web processes and two Celery workers sharing the test database: the production shape.

Limits, locks and secrets that must hold "across processes" are only proven when more than one
process serves the same user at the same time. `app_processes` starts, for one test module:

- two gunicorn processes (`directo_mail.wsgi`, one process with a few threads each, so requests
  also run concurrently inside one process) on free ports of 127.0.0.1;
- two Celery workers (`--pool=solo`, tests.smtp_fixtures.CeleryWorker) on the session's broker.

All four get the environment of the session's `celery_worker` (test database, broker, the plain
aiosmtpd server as the platform relay, the test CA, the M365 stand-ins) plus the test process's
DJANGO_SECRET_KEY, so a session or a signed token made in the test process is valid in all of
them, plus the module's `PROCESS_ENV` (a dict of extra variables, e.g. smaller limits).
The session's own worker is stopped for the module, so exactly two workers consume, and started
again afterwards.

Tests using the processes must request `transactional_db`: the processes read committed rows.
`WebProcess.client(user)` gives a `requests.Session` logged in as `user` (a session row made
in-process, its cookie handed over), which sends the CSRF token with every POST.
"""

from __future__ import annotations

import atexit
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.smtp_fixtures import (
    HOST,
    CeleryWorker,
    free_port,
    spawn_logged,
    stop_group,
)

WEB_THREADS = 4


class LoggedInSession(requests.Session):
    """A requests.Session bound to one web process; POSTs carry Django's CSRF token."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self.trust_env = False  # no proxy from the environment between us and 127.0.0.1

    def request(self, method: str, url: str, *args, **kwargs) -> requests.Response:
        if url.startswith("/"):
            url = self.base_url + url
        if method.upper() == "POST":
            if "csrftoken" not in self.cookies:
                super().request("GET", self.base_url + "/accounts/login/", timeout=30)
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("X-CSRFToken", self.cookies.get("csrftoken", ""))
            kwargs["headers"] = headers
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)


@dataclass(eq=False)
class WebProcess:
    """`gunicorn directo_mail.wsgi` on a free port of 127.0.0.1, logging to `log_path`."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "directo_mail.wsgi",
            f"--bind={HOST}:{self.port}",
            "--workers=1",
            "--worker-class=gthread",
            f"--threads={WEB_THREADS}",
            "--timeout=60",
            "--access-logfile=-",
            "--error-logfile=-",
            # gunicorn's control socket is one path per machine: two servers would share it.
            "--no-control-socket",
        ]

    def start(self, timeout: float = 30.0) -> None:
        self.process = spawn_logged(self.command, self.env, self.log_path)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer in {timeout} s:\n{self.log}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return requests.get(self.url + "/accounts/login/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, grace: float = 10.0) -> None:
        process, self.process = self.process, None
        stop_group(process, grace)

    kill = stop

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def client(self, user=None) -> LoggedInSession:
        """A session on this process; logged in as `user` when given (the row is committed)."""
        from django.conf import settings
        from django.test import Client

        session = LoggedInSession(self.url)
        if user is not None:
            in_process = Client()
            in_process.force_login(user)
            cookie = in_process.cookies[settings.SESSION_COOKIE_NAME].value
            session.cookies.set(settings.SESSION_COOKIE_NAME, cookie, domain=HOST, path="/")
        return session


@dataclass
class AppProcesses:
    web: list[WebProcess]
    workers: list[CeleryWorker]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in [*self.web, *self.workers] if p.pid]

    def worker_tasks_done(self) -> list[int]:
        """How many tasks each worker reported as finished (succeeded, retried or failed)."""
        done = re.compile(r"Task \S+\[[0-9a-f-]+\] (succeeded|retry|raised)")
        return [len(done.findall(worker.log_text())) for worker in self.workers]


def _process_env(celery_worker: CeleryWorker, extra: dict[str, str]) -> dict[str, str]:
    from django.conf import settings

    env = {**celery_worker.env, "DJANGO_SECRET_KEY": settings.SECRET_KEY}
    if settings.FIELD_ENCRYPTION_KEYS:
        env["FIELD_ENCRYPTION_KEYS"] = ",".join(settings.FIELD_ENCRYPTION_KEYS)
    env.update({key: str(value) for key, value in extra.items()})
    return env


@pytest.fixture(scope="module")
def app_processes(
    request: pytest.FixtureRequest,
    celery_worker: CeleryWorker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AppProcesses]:
    """Two gunicorn web processes and two Celery workers, for the module (~5-8 s to start).

    The module may set `PROCESS_ENV = {...}` for settings the four processes should share
    (the test process keeps its own settings: change those with the `settings` fixture).
    """
    env = _process_env(celery_worker, getattr(request.module, "PROCESS_ENV", {}))
    directory = tmp_path_factory.mktemp("processes")
    celery_worker.stop()  # exactly two consumers while the module runs
    web = [WebProcess(f"web{i}", env, directory / f"web{i}.log") for i in (1, 2)]
    workers = [
        CeleryWorker(
            env, directory / f"worker{i}.log", nodename=f"processes{i}-{uuid.uuid4().hex[:6]}@lh"
        )
        for i in (1, 2)
    ]
    started: list = []
    try:
        for process in [*web, *workers]:
            atexit.register(process.kill)  # should teardown never run
            process.start()
            started.append(process)
        yield AppProcesses(web=web, workers=workers)
    finally:
        for process in reversed(started):
            process.stop()
        for process in [*web, *workers]:
            atexit.unregister(process.kill)
        celery_worker.start()
