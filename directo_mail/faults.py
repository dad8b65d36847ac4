"""Named crash points for the fault harness (issue 13, tests/reliability/test_kill_points.py).

`fault_point("deliver.accepted")` kills this process with SIGKILL, as a power cut or the OOM
killer would, when the environment variable DIRECTO_FAULT names that point; with
DIRECTO_FAULT_AT=N only on its Nth pass (default 1). Nothing happens unless the variable is set:
it is read from the process's environment (which .env also fills), which only the operator
controls (no request or task can set it), so it is no lever for a user; never put it in a
production .env.
"""

from __future__ import annotations

import functools
import os
import signal

_passes: dict[str, int] = {}

# Every point, in the order a mail meets them; the harness kills at each one.
POINTS = (
    "prepare.chunk_rendered",  # a chunk's PDFs and bodies made, nothing of it written yet
    "prepare.chunk_written",  # the chunk's messages committed (and handed to the broker)
    "dispatch.committed",  # a chunk's (or a click's) rows committed, its tasks not yet sent
    "receive.taken",  # a worker took a sending task from the broker, not yet marked its own
    "prepare.before_prepared",  # every chunk written, the job not yet marked prepared
    "deliver.claimed",  # the message claimed (queued → sending), nothing sent yet
    "deliver.accepted",  # the server said 250, nothing recorded yet
    "deliver.recorded",  # message, invoice and event committed; the job not yet looked at
    "deliver.failed_recorded",  # a failure committed; the job not yet looked at
)


def fault_point(name: str) -> None:
    """Die here (SIGKILL) if DIRECTO_FAULT names this point and this is its DIRECTO_FAULT_AT
    pass. The variable is read once, at the first point a process passes (after the settings
    read .env); then one comparison when the harness is off (every mail passes three)."""
    if _armed() != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(os.environ.get("DIRECTO_FAULT_AT") or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@functools.cache
def _armed() -> str:
    return os.environ.get("DIRECTO_FAULT") or ""
