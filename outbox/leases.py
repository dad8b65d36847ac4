"""Worker leases (issue 13, item 2): which worker processes are alive, so that what a dead one
held is taken back within about a minute, and what a live one holds never is.

A Celery worker process takes a lease when it starts (directo_mail/celery.py: the solo
process) or before its first task (a prefork child), and a daemon thread renews it every
WORKER_BEAT_SECONDS. The process writes its lease's name on what it holds: what a task it
took is for (a solo worker, at once: outbox_received), a bulk batch's messages when the batch
task starts, a message when it claims it, a job while it builds its messages. A process
without a lease (the web, a management command, a test) writes "" and is judged by
SEND_CLAIM_TIMEOUT.
The thread beats while the process waits on a slow server, so a live claim never looks dead;
a process that is killed stops beating, and after WORKER_LEASE_SECONDS it is dead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.models.functions import Now

from .models import WorkerLease

logger = logging.getLogger(__name__)

# What a row holds instead of a worker's name while its task is not yet with the broker (set in
# the row's transaction, cleared once the broker has it). No lease ever has this name, so the
# sweep hands such a row over again once it is older than a lease (outbox.services._abandoned).
UNDISPATCHED = "(not yet with the broker)"

_lock = threading.Lock()
_lease = {"name": "", "pid": 0}


def lease_current() -> str:
    """This process's lease, "" if it has none (a forked child has its own, or none yet)."""
    return _lease["name"] if _lease["pid"] == os.getpid() else ""


def lease_start() -> str:
    """Take a lease for this process (idempotent) and start the thread that renews it."""
    with _lock:
        if name := lease_current():
            return name
        host, pid = _host(), os.getpid()
        name = f"{socket.gethostname()[:60]}:{pid}:{secrets.token_hex(4)}"
        WorkerLease.objects.create(name=name, host=host, pid=pid, beat_at=Now())
        _lease.update(name=name, pid=pid)
    threading.Thread(target=_beat, args=(name,), name="lease-beat", daemon=True).start()
    logger.info("worker lease %s taken", name)
    return name


def _beat(name: str) -> None:
    """Renew the lease until the process ends (a daemon thread dies with it)."""
    while _lease["name"] == name:
        time.sleep(settings.WORKER_BEAT_SECONDS)
        if _lease["name"] != name or _lease["pid"] != os.getpid():
            return
        try:
            if not WorkerLease.objects.filter(name=name).update(beat_at=Now()):
                # Declared dead meanwhile (a stall longer than the lease): what it held has been
                # taken back and flagged; the process goes on under the same name.
                WorkerLease.objects.create(name=name, host=_host(), pid=os.getpid(), beat_at=Now())
        except Exception:  # the database away for a moment: the next beat tries again
            logger.warning("worker lease %s: could not renew", name, exc_info=True)
        finally:
            connection.close()  # this thread's own connection


def _host() -> str:
    """Where this process's pid means something: the host name, the boot and the pid namespace
    (two containers with one host name, or a machine rebooted, are different places)."""
    parts = [socket.gethostname()[:60]]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:36])
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid")[:30])
    return "/".join(parts)[:200]


def lease_end() -> None:
    """A clean shutdown: the lease is given back (nothing is held after a warm shutdown)."""
    name = lease_current()
    _lease.update(name="", pid=0)
    if name:
        WorkerLease.objects.filter(name=name).delete()


def leases_forget_dead_here() -> int:
    """At a worker's start: the live-looking leases of this host whose process no longer
    exists are expired now (a worker restarted after a crash need not wait out their lease).
    Returns how many."""
    host = _host()
    dead = []
    since = Now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS)
    rows = WorkerLease.objects.filter(host=host, beat_at__gte=since).values_list("name", "pid")
    for name, pid in rows:
        if name == lease_current():
            continue
        if pid == os.getpid():  # our pid, another lease: a process before us in this container
            dead.append(name)
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(name)
        except PermissionError:  # another user's process: alive
            continue
    # Marked expired rather than deleted: the sweep then knows at once that what they held
    # is free (a name without a row counts as dead only after a lease's time).
    expired = Now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS + 1)
    return WorkerLease.objects.filter(name__in=dead).update(beat_at=expired)


def leases_forget_old() -> int:
    """Leases dead for a day: nothing can refer to them any more (the sweep ran since)."""
    return WorkerLease.objects.filter(beat_at__lt=Now() - timedelta(days=1)).delete()[0]
