"""A failure's cause: recorded where it happens, said as the command's last line.

Luigi runs a task in a forked worker process when ``--workers`` is above 1, so a cause kept
in a list of this process would be lost there. Causes go to one file per command instead,
which every forked worker inherits and appends to (one line each, ``O_APPEND``); the command
ends its output with the first one: what the others followed from.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from pathlib import Path

from mlrec_luigi.errors import one_line
from mlrec_luigi.logs import scrub

_recorded: list[str] = []
_shared: Path | None = None


def cause_of(task_family: str, error: BaseException) -> str:
    """The one line an operator reads: the stage, the kind of error and its message, secrets removed."""
    return scrub(f"{task_family}: {one_line(error)}")


def record(task_family: str, error: BaseException) -> str:
    """Record why ``task_family`` failed (once per error, whichever hook sees it first); return the line."""
    cause = cause_of(task_family, error)
    if getattr(error, "_mlrec_cause_recorded", False):
        return cause
    with contextlib.suppress(AttributeError, TypeError):
        error._mlrec_cause_recorded = True  # type: ignore[attr-defined]
    if _shared is not None:
        descriptor = os.open(_shared, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, (cause.replace("\n", " ") + "\n").encode())
        finally:
            os.close(descriptor)
    else:
        _recorded.append(cause)
    return cause


def recorded() -> list[str]:
    """Every cause recorded by this command, its forked workers included, in order."""
    if _shared is not None and _shared.exists():
        return [line for line in _shared.read_text().splitlines() if line]
    return list(_recorded)


def first() -> str | None:
    """The first cause of this command (what the others followed from), or None."""
    causes = recorded()
    return causes[0] if causes else None


def share_with_workers() -> None:
    """Collect the causes of forked workers too (the `luigi` command calls this before it schedules)."""
    global _shared
    if _shared is not None:
        return
    descriptor, name = tempfile.mkstemp(prefix="mlrec-causes-", suffix=".txt")
    os.close(descriptor)
    _shared = Path(name)
    parent = os.getpid()

    def remove() -> None:
        if os.getpid() == parent and _shared is not None:
            _shared.unlink(missing_ok=True)

    atexit.register(remove)


def forget() -> None:
    """Drop the causes recorded so far (tests that run several commands in one process)."""
    _recorded.clear()
    if _shared is not None:
        _shared.write_text("")
