"""Running the pipeline in tests: `luigi.build` that checks every task's status, the `luigi` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import luigi
from luigi.execution_summary import LuigiStatusCode, _summary_dict

from mlrec_luigi import mongo, readers, settings
from tests.support.processes import PROJECT


def reset_process_state() -> None:
    """Forget what this process cached about settings, clients and task instances."""
    settings.get_settings.cache_clear()
    mongo.forget_clients()
    readers.movies_in.cache_clear()
    luigi.task_register.Register.clear_instance_cache()


def build(*tasks: luigi.Task, workers: int = 1) -> dict[str, set]:
    """Run ``tasks`` with a local scheduler; fail unless every task succeeded.

    ``luigi.build`` returns True whenever scheduling worked, failed tasks or not: the
    detailed status is what tells.
    """
    result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, workers=workers)
    assert result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY), result.summary_text
    return _summary_dict(result.worker)


# Every task failure of this process, as (task family, "ErrorType: message"): build_fails reads it.
FAILURES: list[tuple[str, str]] = []


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _record_failure(task: luigi.Task, exception: BaseException) -> None:
    FAILURES.append((task.task_family, f"{type(exception).__name__}: {exception}"))


@luigi.Task.event_handler(luigi.Event.BROKEN_TASK)
def _record_broken(task: luigi.Task, exception: BaseException) -> None:
    FAILURES.append((task.task_family, f"{type(exception).__name__}: {exception}"))


def build_fails(*tasks: luigi.Task, failed: str, match: str) -> dict[str, set]:
    """Run ``tasks`` with a local scheduler; fail unless task family ``failed`` failed with an error matching ``match``.

    ``match`` is a regular expression searched in ``"ErrorType: message"``.
    """
    FAILURES.clear()
    result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True)
    assert result.status in (LuigiStatusCode.FAILED, LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED), result.summary_text
    reasons = [reason for family, reason in FAILURES if family == failed]
    assert reasons, f"{failed} did not fail; failures: {FAILURES}"
    assert any(re.search(match, reason) for reason in reasons), f"{failed} failed otherwise: {reasons}"
    return _summary_dict(result.worker)


def all_tasks(**chunks: int) -> list[str]:
    """Every task family the package declares (``mlrec_luigi.tasks.__all__``), each chunk task ``chunks[name]``
    times: what a full run runs. Tests take the list from here, so a new stage needs no edit of theirs."""
    from mlrec_luigi import tasks

    default = {name: 0 for name in tasks.OCCASIONAL}  # run only with some settings: counted when asked
    return sorted(name for name in tasks.__all__ for _ in range(chunks.get(name, default.get(name, 1))))


# A user-lists run for a new date, one partition, content lists: the API read, the partition, the publishing.
USER_RUN = ["ReadApiInteractions", "UpdateUserRecommendations", "UserRecsPartition"]


def families(tasks: set) -> list[str]:
    """The sorted task families of a summary set."""
    return sorted(task.task_family for task in tasks)


def scheduled_dag_command(port: int, *extra: str) -> list[str]:
    """The DAG for 2026-11-24 against the luigid on loopback ``port``."""
    return luigi_command(
        "DailyRun", "--date", "2026-11-24", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port), *extra
    )


def luigi_command(*args: str) -> list[str]:
    """The real `luigi` command line for this package."""
    return [str(Path(sys.executable).with_name("luigi")), "--module", "mlrec_luigi", *args]


def run_luigi(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `luigi` from the project root with ``env`` (default: this process's environment)."""
    return subprocess.run(
        luigi_command(*args),
        cwd=PROJECT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def the_cause(stderr: str, expected: str) -> str:
    """The `luigi` command's last line, which must be the cause of its failure, alone: its message.

    Luigi's own lines (its warning, its "failed" line) and the "task failed" event may quote it above;
    no line holding it shows a traceback.
    """
    import json

    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    message = json.loads(lines[-1])["message"]
    assert expected in message, stderr[-3000:]
    holding = [line for line in lines if expected in line]
    assert len(holding) <= 3 and all("Traceback" not in line for line in holding), holding
    return message


def finished_events(text: str) -> list[dict]:
    """The ``task finished`` events among a `luigi` process's stderr lines (JSON lines; others skipped)."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "task finished":
            events.append(event)
    return events
