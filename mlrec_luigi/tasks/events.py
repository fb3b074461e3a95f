"""What every task does when Luigi says it started, succeeded, failed or could not be scheduled.

Registered on ``PipelineTask`` when this module is imported (``tasks/__init__.py`` does): the counts and
timing of a finished task in one event, a chunk's time beside it, the try-out store saved after a
MongoDB stage, and every failure's cause recorded (``causes.py``) for the command's last line.
"""

from __future__ import annotations

import logging
import time

import luigi

from mlrec_luigi import causes, layout, mongo
from mlrec_luigi.errors import one_line
from mlrec_luigi.logs import log_event, scrub
from mlrec_luigi.tasks.base import ChunkTask, MongoStage, PipelineTask

logger = logging.getLogger("mlrec_luigi")


@PipelineTask.event_handler(luigi.Event.START)
def _on_start(task: PipelineTask) -> None:
    task.counts = {}
    task._started_at = time.monotonic()  # type: ignore[attr-defined]


@PipelineTask.event_handler(luigi.Event.SUCCESS)
def _on_success(task: PipelineTask) -> None:
    if isinstance(task, MongoStage):
        mongo.saved()
    took = round(time.monotonic() - getattr(task, "_started_at", time.monotonic()), 3)
    if isinstance(task, ChunkTask):
        task.bucket.write_json(layout.timing_key(task.output().key), {"duration_s": took})
    log_event(
        logger,
        "task finished",
        task=task.task_family,
        task_id=task.task_id,
        counts=getattr(task, "counts", {}),
        duration_s=took,
    )


def say_the_cause_last() -> None:
    """Log the last failure's cause as the command's final line (registered for the `luigi` command)."""
    cause = causes.first()  # the first: what the others followed from; forked workers' included
    if cause:
        log_event(logger, cause, logging.ERROR)


@PipelineTask.event_handler(luigi.Event.BROKEN_TASK)
def _on_broken(task: PipelineTask, exception: BaseException) -> None:
    # requires() raised while the DAG was scheduled.
    causes.record(task.task_family, exception)


@PipelineTask.event_handler(luigi.Event.FAILURE)
def _on_failure(task: PipelineTask, exception: BaseException) -> None:
    causes.record(task.task_family, exception)
    started = getattr(task, "_started_at", time.monotonic())
    log_event(
        logger,
        "task failed",
        logging.ERROR,
        task=task.task_family,
        task_id=task.task_id,
        error=scrub(one_line(exception)),
        counts=getattr(task, "counts", {}),
        duration_s=round(time.monotonic() - started, 3),
    )
