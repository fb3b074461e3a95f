"""What every stage shares: settings, the bucket, the keys of its outputs, a JSON summary.

The keys come from ``layout.py``, which maps the whole bucket.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import luigi
import pandas as pd
from pymongo.database import Database

from mlrec_luigi import layout, mongo, movielens
from mlrec_luigi.embedding import model_slug
from mlrec_luigi.logs import interactive, log_event, scrub, terminal_progress
from mlrec_luigi.settings import Settings, SettingsError, get_settings
from mlrec_luigi.storage import Bucket, open_bucket

logger = logging.getLogger("mlrec_luigi")

# What this worker process ran, for the run manifest (see report.py).
tasks_run: list[dict[str, Any]] = []


class PipelineTask(luigi.Task):
    """A stage of the pipeline. ``run()`` fills ``self.counts``; a summary is logged at the end."""

    counts: dict[str, Any]

    @property
    def settings(self) -> Settings:
        return get_settings()

    @functools.cached_property
    def bucket(self) -> Bucket:
        return open_bucket(self.settings)

    # --- keys --------------------------------------------------------------------

    @property
    def zip_key(self) -> str:
        return layout.zip_key(self.settings)

    def derived_key(self, *parts: str) -> str:
        return layout.derived_key(self.settings, *parts)

    def embeddings_key(self, *parts: str) -> str:
        return self.derived_key("embeddings", model_slug(self.settings.hf_model_name), *parts)

    @property
    def db(self) -> Database:
        if not self.settings.mongodb_uri:
            raise SettingsError("MONGODB_URI is not set: the pipeline needs a MongoDB to write to")
        return mongo.database(self.settings.mongodb_uri, self.settings.mongodb_database)

    def collection_holds(self, name: str, field: str) -> Callable[[dict[str, Any]], bool]:
        """A marker check: collection ``name`` still holds at least ``marker[field]`` documents."""
        return lambda marker: mongo.estimated_count(self.db[name]) >= int(marker.get(field, 0))

    # --- the source --------------------------------------------------------------

    def current_source_md5(self) -> str | None:
        """The md5 of the zip in the bucket: the identity of everything derived from it."""
        return self.bucket.md5_hex(self.zip_key)

    def local_zip(self) -> Path:
        return self.bucket.local_copy(self.zip_key, self.settings.cache_dir)

    def read_movies(self) -> pd.DataFrame:
        # Keyed by content: a local bucket replaces a zip in place, under the same path.
        return _read_movies(self.local_zip(), self.current_source_md5(), self.settings.max_member_bytes)

    def on_failure(self, exception: BaseException) -> str:
        """The explanation the scheduler shows, with secrets removed."""
        return scrub(super().on_failure(exception))

    def progress(self, done: int, total: int, message: str) -> None:
        """Report progress to the scheduler's dashboard, and to the terminal when there is one."""
        percent = round(100 * done / total) if total else 100
        self.set_status_message(message)
        self.set_progress_percentage(percent)
        if interactive():
            terminal_progress(self.task_family, percent, message)


class MongoStage(PipelineTask):
    """A stage that writes to MongoDB: an unreachable MongoDB fails the run before any work.

    Luigi checks ``complete()`` top-down before it runs anything; connecting there makes a
    bad ``MONGODB_URI`` a scheduling error at start, not after the embeddings are computed.
    """

    def complete(self) -> bool:
        self.db  # noqa: B018 - connects (and pings) once per process, or raises MongoUnavailable
        return super().complete()


class SourceChanged(RuntimeError):
    """The zip in the bucket changed while derived outputs were being computed."""


class ChunkedStage(PipelineTask):
    """A stage done by chunk tasks, then finished by one step that writes its marker.

    When the chunks can be planned at scheduling time (their input is in the bucket) they
    are static requirements, so every worker sharing a central scheduler can take some;
    otherwise they are yielded as dynamic requirements once their input exists.
    """

    @functools.cached_property
    def planned_chunks(self) -> list[luigi.Task]:
        """The chunks known when the task was first scheduled: fixed, since Luigi checks them again before run()."""
        return list(self.chunks())

    def chunks(self) -> Sequence[luigi.Task]:
        raise NotImplementedError

    def finish(self, chunks: list[luigi.Task]) -> None:
        """Check and record the completed chunks (write the stage's marker)."""
        raise NotImplementedError

    def run(self) -> Iterator[list[luigi.Task]]:
        md5 = self.current_source_md5()
        chunks = list(self.chunks())
        yield chunks  # already complete when they were planned as static requirements
        if self.current_source_md5() != md5:
            raise SourceChanged(f"{self.bucket.uri(self.zip_key)} changed while its chunks were computed")
        self.finish(chunks)


@functools.lru_cache(maxsize=2)
def _read_movies(zip_path: Path, md5: str | None, max_member_bytes: int) -> pd.DataFrame:
    return movielens.read_movies(zip_path, max_member_bytes)


@PipelineTask.event_handler(luigi.Event.START)
def _on_start(task: PipelineTask) -> None:
    task.counts = {}
    task._started_at = time.monotonic()  # type: ignore[attr-defined]


@PipelineTask.event_handler(luigi.Event.SUCCESS)
def _on_success(task: PipelineTask) -> None:
    started = getattr(task, "_started_at", time.monotonic())
    summary = {
        "task": task.task_family,
        "task_id": task.task_id,
        "params": task.to_str_params(only_significant=True),
        "counts": getattr(task, "counts", {}),
        "duration_s": round(time.monotonic() - started, 3),
    }
    tasks_run.append(summary)
    log_event(logger, "task finished", **{k: v for k, v in summary.items() if k != "params"})


@PipelineTask.event_handler(luigi.Event.FAILURE)
def _on_failure(task: PipelineTask, exception: BaseException) -> None:
    started = getattr(task, "_started_at", time.monotonic())
    log_event(
        logger,
        "task failed",
        logging.ERROR,
        task=task.task_family,
        task_id=task.task_id,
        error=scrub(f"{type(exception).__name__}: {exception}"),
        counts=getattr(task, "counts", {}),
        duration_s=round(time.monotonic() - started, 3),
    )
