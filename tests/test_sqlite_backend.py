"""directo_mail.sqlite: the write lock handed over through a file lock (its docstring says why).

What it must never do: let two writers in at once, lose or half-write a transaction, keep the
lock after a commit, a rollback, a failed BEGIN or a dead process, hand a forked child its
parent's lock, or make a reader wait. Every test uses its own SQLite file, real processes where
processes matter, and the file lock's real state (probed from another open file).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from django.db import OperationalError, connections, transaction

BASE_DIR = Path(__file__).resolve().parent.parent
ALIAS = "writelock_test"

# A standalone process on the same file: Django with only this backend configured.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, {base!r})
    import django
    from django.conf import settings
    settings.configure(DATABASES={{"default": {{
        "ENGINE": "directo_mail.sqlite", "NAME": {path!r},
        "OPTIONS": {{"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                     "transaction_mode": "IMMEDIATE", "timeout": 20}},
    }}}})
    django.setup()
    from django.db import connection, transaction
    mode, count, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "fork-and-hold":
        # The Celery master's shape: a second thread's connection holds the lock while the
        # main thread forks a child that lives on.
        import threading
        held = threading.Event()
        def hold():
            with transaction.atomic():
                connection.cursor().execute("INSERT INTO item (tag, n) VALUES (%s, 0)", [tag])
                held.set()
                time.sleep(60)
        threading.Thread(target=hold, daemon=True).start()
        held.wait(10)
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        time.sleep(60)
    if mode == "hold":
        with transaction.atomic():
            connection.cursor().execute("INSERT INTO item (tag, n) VALUES (%s, 0)", [tag])
            print("held", flush=True)
            time.sleep(60)
    for i in range(count):
        if i % 2:
            with connection.cursor() as cursor:  # autocommit: one statement, its own lock
                cursor.execute("INSERT INTO item (tag, n) VALUES (%s, %s)", [tag, i])
        else:
            with transaction.atomic():
                cursor = connection.cursor()
                cursor.execute("INSERT INTO item (tag, n) VALUES (%s, %s)", [tag, i])
                cursor.execute("UPDATE counter SET value = value + 1")
    print(json.dumps({{"done": count}}), flush=True)
    """
)


def _create(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, tag TEXT, n INTEGER)")
        db.execute("CREATE TABLE counter (value INTEGER)")
        db.execute("INSERT INTO counter VALUES (0)")


def _rows(path: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return db.execute("SELECT tag, n FROM item ORDER BY id").fetchall()


def _lock_is_free(path: Path) -> bool:
    """Whether another open file could take the write lock right now."""
    fd = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


class _Held:
    """The write lock taken by another open file, as another process would hold it."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.fixture
def database(tmp_path, django_db_blocker):
    """A connection alias on a fresh SQLite file, through directo_mail.sqlite."""
    path = tmp_path / "lock.sqlite3"
    _create(path)
    connections.settings[ALIAS] = connections.configure_settings(
        {
            "default": connections.settings["default"],
            ALIAS: {
                "ENGINE": "directo_mail.sqlite",
                "NAME": str(path),
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 0.5},
            },
        }
    )[ALIAS]
    with django_db_blocker.unblock():
        yield path
        connections[ALIAS].close()
    del connections[ALIAS]
    del connections.settings[ALIAS]


def _insert(tag: str, n: int = 0) -> None:
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("INSERT INTO item (tag, n) VALUES (%s, %s)", [tag, n])


def _spawn(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(base=str(BASE_DIR), path=str(path)), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_lock_is_held_for_the_transaction_and_free_after_commit_and_rollback(database):
    with transaction.atomic(using=ALIAS):
        assert not _lock_is_free(database)
        _insert("committed")
        assert not _lock_is_free(database)
    assert _lock_is_free(database)

    with pytest.raises(ZeroDivisionError), transaction.atomic(using=ALIAS):
        _insert("rolled back")
        raise ZeroDivisionError
    assert _lock_is_free(database)

    _insert("autocommit")  # a statement on its own takes it and gives it back
    assert _lock_is_free(database)
    assert _rows(database) == [("committed", 0), ("autocommit", 0)]


def test_a_writer_waits_for_the_holder_and_goes_on_when_it_lets_go(database):
    held = _Held(database)
    done = threading.Event()

    def write() -> None:
        try:
            with transaction.atomic(using=ALIAS):
                _insert("after the holder")
            done.set()
        finally:
            connections[ALIAS].close()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.2), "the writer went in while the lock was held"
    held.release()
    writer.join(5)
    assert done.is_set()
    assert _rows(database) == [("after the holder", 0)]
    assert _lock_is_free(database)


def test_a_writer_that_cannot_get_the_lock_gets_sqlites_error_and_nothing_is_written(database):
    held = _Held(database)
    try:
        started = time.monotonic()
        with (
            pytest.raises(OperationalError, match="database is locked"),
            transaction.atomic(using=ALIAS),
        ):
            _insert("never")
        assert time.monotonic() - started >= 0.5  # the database's own timeout
        with pytest.raises(OperationalError, match="database is locked"):
            _insert("never either")
    finally:
        held.release()
    # The connection is still good and takes the lock again once it is free.
    with transaction.atomic(using=ALIAS):
        _insert("later")
    assert _rows(database) == [("later", 0)]
    assert _lock_is_free(database)


def test_a_failed_begin_gives_the_lock_back(database):
    """SQLite's own lock taken by a program that does not use the file lock (the sqlite3
    shell): BEGIN IMMEDIATE fails after the timeout, and the file lock is not kept."""
    import sqlite3

    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="locked"), transaction.atomic(using=ALIAS):
            _insert("never")
        assert _lock_is_free(database)
    finally:
        other.execute("ROLLBACK")
        other.close()
    _insert("later")
    assert _rows(database) == [("later", 0)]


def test_a_reader_does_not_wait_for_the_lock(database):
    _insert("there")
    held = _Held(database)
    try:
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("SELECT tag FROM item")
            assert cursor.fetchall() == [("there",)]
    finally:
        held.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_neither_gets_nor_releases_its_parents_lock(database):
    """Celery's prefork pool forks the worker: the child shares the parent's open files, and a
    flock belongs to the open file. The child must wait like any other process."""
    read_end, write_end = os.pipe()
    with transaction.atomic(using=ALIAS):
        _insert("parent")
        pid = os.fork()
        if pid == 0:  # the child: try to write while the parent holds the lock
            outcome = "wrote"
            try:
                wrapper = connections[ALIAS]
                wrapper.close()  # Celery's pool child closes what it inherited
                wrapper._write_lock()
            except OperationalError:
                outcome = "waited"
            except BaseException as error:
                outcome = repr(error)
            finally:
                os.write(write_end, outcome.encode())
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        outcome = os.read(read_end, 200).decode()
        os.close(read_end)
        assert outcome == "waited"
        assert not _lock_is_free(database), "the child released the parent's lock"
    assert _lock_is_free(database)


def test_a_holder_killed_while_its_forked_child_lives_leaves_the_lock_free(database):
    """A flock lives as long as any copy of its open file: a child forked after another
    thread took the lock would keep it held for ever once the parent is killed, unless the
    child drops its copies at the fork."""
    parent = _spawn(database, "fork-and-hold", "0", "killed")
    child = None
    try:
        line = parent.stdout.readline().strip()
        assert line.isdigit(), parent.stderr.read()
        child = int(line)
        assert not _lock_is_free(database)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        os.kill(child, 0)  # the child still lives
        assert _lock_is_free(database)
    finally:
        parent.kill()
        parent.wait()
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    with transaction.atomic(using=ALIAS):
        _insert("after the kill")
    assert _rows(database) == [("after the kill", 0)]


def test_a_write_returning_rows_keeps_the_lock_until_its_cursor_is_closed(database):
    """SQLite keeps its write lock until an `… RETURNING` statement's rows are read: the file
    lock is kept as long, then given back with SQLite's."""
    import sqlite3

    with connections[ALIAS].cursor() as cursor:
        cursor.execute("UPDATE counter SET value = value + 1 RETURNING value")
        assert not _lock_is_free(database)
        assert cursor.fetchone() == (1,)
    assert _lock_is_free(database)
    other = sqlite3.connect(database, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # SQLite's own lock is free as well
        other.execute("ROLLBACK")
    finally:
        other.close()
    # Rows read to their end give it back too, before the cursor is closed.
    cursor = connections[ALIAS].cursor()
    cursor.execute("INSERT INTO item (tag, n) VALUES ('a', 1), ('b', 2) RETURNING n")
    assert not _lock_is_free(database)
    assert [row for row in cursor] == [(1,), (2,)]
    assert _lock_is_free(database)
    cursor.close()


def test_commit_and_rollback_without_a_connection_do_nothing(database):
    connections[ALIAS].close()
    transaction.commit(using=ALIAS)
    transaction.rollback(using=ALIAS)
    _insert("still fine")
    assert _lock_is_free(database)


def test_a_holder_killed_by_sigkill_leaves_the_lock_free(database):
    holder = _spawn(database, "hold", "0", "killed")
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        assert not _lock_is_free(database)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    finally:
        holder.kill()
        holder.wait()
    with transaction.atomic(using=ALIAS):
        _insert("after the kill")
    # Nothing of the killed transaction is there; the new one is.
    assert _rows(database) == [("after the kill", 0)]


def test_processes_writing_at_once_lose_nothing(database):
    """Three processes, each 300 writes (atomic blocks of two statements and autocommit
    statements, alternately): every row and every counter increment lands, no "locked". (It
    passes on Django's own backend too: it shows that nothing is lost or refused, not speed.)"""
    count = 300
    writers = [_spawn(database, "write", str(count), f"p{i}") for i in range(3)]
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"done": count}
    rows = _rows(database)
    for i in range(3):
        assert sorted(n for tag, n in rows if tag == f"p{i}") == list(range(count))
    import sqlite3

    with sqlite3.connect(database) as db:
        assert db.execute("SELECT value FROM counter").fetchone() == (3 * count // 2,)
    assert _lock_is_free(database)


def test_a_lock_file_it_may_not_open_falls_back_to_sqlites_own_waiting(database, caplog):
    """Made by another OS user, say: writes still work, SQLite's busy handler decides."""
    lock = Path(f"{database}.writelock")
    lock.touch()
    lock.chmod(0o000)
    connections[ALIAS].close()
    try:
        if os.geteuid() == 0:  # root opens anything: make the path a directory instead
            lock.chmod(0o600)
            lock.unlink()
            lock.mkdir()
        with transaction.atomic(using=ALIAS):
            _insert("still written")
        _insert("and again")
    finally:
        if lock.is_dir():
            lock.rmdir()
        else:
            lock.chmod(0o600)
    assert _rows(database) == [("still written", 0), ("and again", 0)]
    assert "writers wait in SQLite's busy handler" in caplog.text
