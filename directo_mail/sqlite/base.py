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
and sooner. The kernel drops it when the last holder of the open file dies: a forked child closes
its copies of its parent's lock files at once (`os.register_at_fork`), so a kill -9 of the holder
never leaves the lock held. A write statement that returns rows (`INSERT … RETURNING` in
autocommit) keeps SQLite's lock until its rows are read, so it keeps the file lock until its
cursor is closed. A writer that cannot get the file lock within the database's `timeout` gets
SQLite's own "database is locked" (a program holding SQLite's lock without the file lock can
make that wait up to twice the timeout). An in-memory database has no file and no other process:
nothing changes there.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import weakref
from sqlite3 import ProgrammingError

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

logger = logging.getLogger(__name__)
_FIRST_PAUSE = 0.00005
_LONGEST_PAUSE = 0.0005
_READS = ("SELECT", "PRAGMA", "EXPLAIN", "SAVEPOINT", "RELEASE", "ROLLBACK")


_open_lock_files: weakref.WeakSet[DatabaseWrapper] = weakref.WeakSet()


def _forget_parents_lock_files() -> None:
    """In a forked child: close the copies of the parent's lock files. A flock belongs to the
    open file, which fork shares, so a child keeping them would "get" a lock its parent holds,
    or keep it held after the parent is killed."""
    for wrapper in list(_open_lock_files):
        if wrapper._lock_fd is not None:
            os.close(wrapper._lock_fd)
        wrapper._lock_fd, wrapper._locked = None, False
    _open_lock_files.clear()


os.register_at_fork(after_in_child=_forget_parents_lock_files)


class DatabaseWrapper(base.DatabaseWrapper):
    _lock_fd: int | None = None
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
                _open_lock_files.discard(self)
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
            self._unlock_unless_in_transaction()

    def _rollback(self):
        try:
            super()._rollback()
        finally:
            self._unlock_unless_in_transaction()

    def _unlock_unless_in_transaction(self) -> None:
        if self.connection is None or not self.connection.in_transaction:
            self._write_unlock()

    def _write_lock(self) -> None:
        if not self._in_file or self._locked:
            return
        if self._lock_fd is None:
            path = os.path.abspath(str(self.settings_dict["NAME"])) + ".writelock"
            try:
                self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as error:
                # Not ours to open (another user made it): SQLite's own busy handler decides,
                # as without this backend; a write never fails for the lock file's sake.
                logger.warning("%s: %s; writers wait in SQLite's busy handler", path, error)
                self._in_file = False
                return
            _open_lock_files.add(self)
        started = time.monotonic()
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        pause = _FIRST_PAUSE
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
        if self._locked:
            self._locked = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


class CursorWrapper(base.SQLiteCursorWrapper):
    """Takes the write lock around a write statement that runs in autocommit (its own
    transaction); inside a transaction the lock is held already. A write that returns rows
    holds SQLite's lock until they are read: its file lock is given back when the cursor is
    closed (Django closes every cursor it opens) or its rows have run out."""

    _wrapper: DatabaseWrapper | None = None
    _returning = False

    def execute(self, query, params=None):
        return self._locked_run(super().execute, query, params)

    def executemany(self, query, param_list):
        return self._locked_run(super().executemany, query, param_list)

    def _locked_run(self, run, query, params):
        wrapper = self._wrapper
        if wrapper is None or self.connection.in_transaction or _reads(query):
            return run(query, params)
        self._give_back()  # an earlier statement's rows on this cursor are discarded now
        wrapper._write_lock()
        try:
            result = run(query, params)
        except BaseException:
            self._unlock()
            raise
        if self.description is None:
            self._unlock()
        else:
            self._returning = True
        return result

    def fetchone(self):
        row = super().fetchone()
        if row is None:
            self._give_back()
        return row

    def fetchmany(self, size=None):
        rows = super().fetchmany(self.arraysize if size is None else size)
        if not rows:
            self._give_back()
        return rows

    def fetchall(self):
        rows = super().fetchall()
        self._give_back()
        return rows

    def __next__(self):
        try:
            return super().__next__()
        except StopIteration:
            self._give_back()
            raise

    def close(self):
        try:
            super().close()
        finally:
            self._give_back()

    def _give_back(self) -> None:
        if self._returning:
            self._returning = False
            self._unlock()

    def _unlock(self) -> None:
        try:
            in_transaction = self.connection.in_transaction
        except ProgrammingError:  # the connection is closed: so is its transaction
            in_transaction = False
        if not in_transaction:
            self._wrapper._write_unlock()


def _reads(query: str) -> bool:
    return query.lstrip()[:9].upper().startswith(_READS)
