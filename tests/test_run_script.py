"""`make run` (scripts/run.sh) starts the web server, the mail catcher, a worker for each lane
and beat, on the embedded defaults; one SIGTERM stops every process it started.

The script runs for real on free ports, with its own SQLite database, filesystem broker, logs
and beat schedule in a temporary folder (nothing of var/ is touched).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.smtp_fixtures import BASE_DIR, HOST, free_port, spawn_logged, stop_group


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (ppid is the 2nd field after the command name)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live descendant of `pid`."""
    children, found, todo = _children(), {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()).replace(b"\0", b" ")
            except OSError:
                continue
            todo.append(child)
    return {child: command.decode("utf-8", "replace") for child, command in found.items()}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in log.glob("*.log"))
            raise AssertionError(f"{what} after {timeout} s\n{logs}")
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait_for_log(folder: Path, name: str, pattern: str, timeout: float = 30.0) -> None:
    regex = re.compile(pattern)
    _wait_until(lambda: regex.search(_log(folder, name)), timeout, f"{name}: no {pattern}", folder)


def _log(folder: Path, name: str) -> str:
    try:
        return (folder / name).read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""


def test_make_run_starts_web_catcher_both_lanes_and_beat_and_stops_them_all(tmp_path):
    makefile = subprocess.run(
        ["make", "-n", "run"], cwd=BASE_DIR, capture_output=True, text=True, check=True
    )
    assert "scripts/run.sh" in makefile.stdout  # what `make run` ends in

    logs, port = tmp_path / "log", free_port()
    env = {
        **os.environ,
        # The embedded defaults, in this test's folder (CI's Redis and PostgreSQL not used).
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_BROKER_DIR": str(tmp_path / "broker"),
        "CELERY_BROKER_POLLING_INTERVAL": "0.1",
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
        "EMAIL_URL": f"smtp://{HOST}:{free_port()}",  # the catcher's port
        "OUTBOX_SWEEP_SECONDS": "1",  # beat's first sweep comes at once
        "HOST": HOST,
        "PORT": str(port),
        "LOG_DIR": str(logs),
        "BEAT_SCHEDULE": str(tmp_path / "beat" / "schedule"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=BASE_DIR,
        env=env,
        check=True,
    )
    script = spawn_logged([str(BASE_DIR / "scripts" / "run.sh")], env, tmp_path / "run.out")
    try:
        _wait_until(lambda: _answers(f"http://{HOST}:{port}/accounts/login/"), 60, "no page", logs)
        ready = {
            "worker-interactive.log": r"interactive@\S+ ready\.",
            "worker-bulk.log": r"bulk@\S+ ready\.",
            "beat.log": r"beat: Starting",
            "mail_catcher.log": r"Mail catcher on ",
        }
        for name, pattern in ready.items():
            _wait_for_log(logs, name, pattern)
        processes = _descendants(script.pid)
        commands = " | ".join(processes.values())
        for started in (
            "manage.py runserver",
            "manage.py mail_catcher",
            "worker -Q interactive",
            "worker -Q bulk",
            "celery -A directo_mail beat",
        ):
            assert started in commands, started

        # Beat's sweep runs on the interactive worker; a bulk task runs on the bulk worker only.
        _wait_for_log(logs, "worker-interactive.log", r"Task outbox\.tasks\.sweep\[\S+\] succeeded")
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", _PUBLISH_BATCH],
            cwd=BASE_DIR,
            env=env,
            check=True,
        )
        _wait_for_log(logs, "worker-bulk.log", r"Task outbox\.tasks\.send_batch\[\S+\] succeeded")
        assert "Task outbox.tasks.send_batch[" not in _log(logs, "worker-interactive.log")
        assert "Task outbox.tasks.sweep[" not in _log(logs, "worker-bulk.log")
        # The filesystem broker keeps both lanes apart: an exchange table each.
        assert {p.name for p in (tmp_path / "broker" / "control").iterdir()} >= {
            "interactive.exchange",
            "bulk.exchange",
        }

        os.kill(script.pid, signal.SIGTERM)  # the script only: it stops the others
        assert script.wait(30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 5
        while any(map(_alive, processes)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: command for pid, command in processes.items() if _alive(pid)}
        assert not left, f"still running after the script stopped: {left}"
    finally:
        stop_group(script)


_PUBLISH_BATCH = "from outbox.tasks import send_batch; send_batch.delay([])"
