"""Django's SQLite backend with a faster hand-over of the write lock between processes.

The embedded default runs the web server and two or more worker processes on one SQLite file.
SQLite lets one writer in at a time, and a writer that finds the lock taken waits in SQLite's
busy handler, which sleeps 1, 2, 5, 10, … ms between tries. A worker's write holds the lock for
a fraction of a millisecond, so the other worker slept 1–3 ms for each one it ran into: 26 % of
a bulk job's wall time was spent in that sleep (`py-spy --native`, bench/README.md).

Here every write transaction (an atomic block's `BEGIN IMMEDIATE` up to its COMMIT or ROLLBACK,
and each write statement run in autocommit) first takes an advisory lock on a file beside the
database (`<database>.writelock`), polling it every 50–500 µs instead. SQLite's own lock and busy
timeout stay underneath unchanged, so a program that does not take the file lock (the sqlite3
shell, an older process) is still waited for correctly; the file lock only decides who goes next,
and sooner. The kernel drops it when a process dies, so a kill -9 never leaves it held. A writer
that cannot get it within the database's `timeout` gets SQLite's own "database is locked".
An in-memory database has no file and no other process: nothing changes there.
"""

from __future__ import annotations

import fcntl
import os
import time

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

_FIRST_PAUSE = 0.00005
_LONGEST_PAUSE = 0.0005
_READS = ("SELECT", "PRAGMA", "EXPLAIN", "SAVEPOINT", "RELEASE", "ROLLBACK")


class DatabaseWrapper(base.DatabaseWrapper):
    _lock_fd: int | None = None
    _lock_pid = 0
    _locked = False
    _in_file = False

    def get_new_connection(self, conn_params):
        self._in_file = not self.is_in_memory_db()
        return super().get_new_connection(conn_params)

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=CursorWrapper)
        if self._in_file:
            cursor._wrapper = self
        return cursor

    def _close(self):
        try:
            super()._close()
        finally:
            self._write_unlock()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _start_transaction_under_autocommit(self):
        self._write_lock()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._write_unlock()
            raise

    def _commit(self):
        try:
            super()._commit()
        finally:
            if not self.connection.in_transaction:
                self._write_unlock()

    def _rollback(self):
        try:
            super()._rollback()
        finally:
            if not self.connection.in_transaction:
                self._write_unlock()

    def _lock_file(self) -> int:
        """This process's own descriptor of the lock file. A forked child (Celery's pool) must
        not use its parent's: a flock belongs to the open file, which fork shares, so the child
        would "get" a lock its parent holds, or release it."""
        if self._lock_fd is not None and self._lock_pid != os.getpid():
            os.close(self._lock_fd)  # the parent's copy stays open: its lock is untouched
            self._lock_fd, self._locked = None, False
        if self._lock_fd is None:
            path = os.path.abspath(str(self.settings_dict["NAME"])) + ".writelock"
            self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_pid = os.getpid()
        return self._lock_fd

    def _write_lock(self) -> None:
        if not self._in_file or (self._locked and self._lock_pid == os.getpid()):
            return
        fd = self._lock_file()
        started = time.monotonic()
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        pause = _FIRST_PAUSE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > timeout:
                    raise OperationalError("database is locked") from None
                time.sleep(pause)
                # Short holds are the rule; a long one (a web request's transaction) is
                # polled more slowly once it has lasted a while.
                pause = min(pause * 2, _LONGEST_PAUSE if waited < 0.1 else 0.005)
            else:
                self._locked = True
                return

    def _write_unlock(self) -> None:
        if self._locked and self._lock_pid == os.getpid():
            self._locked = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


class CursorWrapper(base.SQLiteCursorWrapper):
    """Takes the write lock around a write statement that runs in autocommit (its own
    transaction); inside a transaction the lock is held already."""

    _wrapper: DatabaseWrapper | None = None

    def execute(self, query, params=None):
        wrapper = self._wrapper
        if wrapper is None or self.connection.in_transaction or _reads(query):
            return super().execute(query, params)
        wrapper._write_lock()
        try:
            return super().execute(query, params)
        finally:
            if not self.connection.in_transaction:
                wrapper._write_unlock()

    def executemany(self, query, param_list):
        wrapper = self._wrapper
        if wrapper is None or self.connection.in_transaction or _reads(query):
            return super().executemany(query, param_list)
        wrapper._write_lock()
        try:
            return super().executemany(query, param_list)
        finally:
            if not self.connection.in_transaction:
                wrapper._write_unlock()


def _reads(query: str) -> bool:
    return query.lstrip()[:9].upper().startswith(_READS)
