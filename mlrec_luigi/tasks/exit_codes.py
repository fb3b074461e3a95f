"""The `luigi` command's exit code when several machines share one DAG: 0 when the DAG is done.

Luigi exits 10 or 25 from a worker whose tasks another worker ran ("run by another worker", "not granted
run permission"), even when the whole DAG then completed: cron could not tell a good night. After the run,
when nothing failed and the root task is complete, the tasks other machines ran count as done, so such a
worker exits 0; if the root is not complete (another machine failed, or still runs), the code is Luigi's.

A worker kept alive leaves only when nothing is left pending for it: the root itself may then still be
running on another machine (its last step, seconds). It waits for it up to ``ROOT_WAIT_S``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import luigi.execution_summary

ELSEWHERE = ("run_by_other_worker", "upstream_run_by_other_worker", "not_run")
ROOT_WAIT_S = 120.0
FAILING = ("failed", "scheduling_error", "still_pending_ext", "upstream_failure", "upstream_scheduling_error")


def finishes(root: Any, every_s: float = 0.5) -> bool:
    """Whether ``root`` is complete, or becomes so within ``ROOT_WAIT_S`` (another machine running its last step)."""
    deadline = time.monotonic() + ROOT_WAIT_S
    while not root.complete():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
    return True


def done_elsewhere(summary: Callable[[Any], dict[str, set]]) -> Callable[[Any], dict[str, set]]:
    """``_summary_dict``, with the tasks other workers ran counted as done once the root is complete."""

    @functools.wraps(summary)
    def wrapped(worker: Any) -> dict[str, set]:
        sets = summary(worker)
        if not any(sets.get(name) for name in ELSEWHERE) or any(sets.get(name) for name in FAILING):
            return sets
        root = luigi.execution_summary._root_task(worker)
        if root is None or not finishes(root):
            return sets
        for name in ELSEWHERE:
            sets["already_done"] |= sets.get(name, set())
            sets[name] = set()
        sets["already_done"].add(root)
        return sets

    wrapped._mlrec_done_elsewhere = True  # type: ignore[attr-defined]
    return wrapped


def exit_zero_when_the_dag_is_done() -> None:
    """Install :func:`done_elsewhere` (the `luigi` command does, once)."""
    current = luigi.execution_summary._summary_dict
    if not getattr(current, "_mlrec_done_elsewhere", False):
        luigi.execution_summary._summary_dict = done_elsewhere(current)
