"""What every stage shares: settings, the bucket, markers that record what a stage was built from.

The keys come from ``layout.py``, which maps the whole bucket.

A :class:`Stage` is complete only while (1) its marker is stored and names the current
settings that shape its output (zip md5, model...), (2) what the marker counts is still
where readers look (MongoDB, Redis), and (3) every upstream stage is complete and still
carries the stamp this stage was built from. Luigi looks below a task only when it is
incomplete; (3) is what makes a change anywhere upstream reach every stage below it,
from the daily command alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import luigi
import pandas as pd
from pymongo.database import Database

from mlrec_luigi import causes, layout, mongo, readers
from mlrec_luigi.damage import DamagedObject
from mlrec_luigi.errors import Expected, is_expected, one_line
from mlrec_luigi.logs import interactive, log_event, scrub, terminal_progress
from mlrec_luigi.memo import cached, reads_cached
from mlrec_luigi.settings import Settings, SettingsError, get_settings
from mlrec_luigi.storage import Bucket, open_bucket
from mlrec_luigi.tasks.parameters import SettingParameter, parameter_problem
from mlrec_luigi.tasks.targets import BucketTarget, MarkerTarget

logger = logging.getLogger("mlrec_luigi")
Shape = dict[str, type | tuple[type, ...]]


def digest(value: object) -> str:
    """A short, stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _release_check() -> ReleaseCheck:
    """The task that checks the release (the first stage): the base knows it by its role, not its module."""
    (check,) = ReleaseCheck.__subclasses__()  # exactly one stage takes the role
    return check()


def refresh_pending() -> bool:
    """Whether ``--DownloadMovieLens-refresh`` asked for a release check this command has not made yet.

    Luigi never looks below a complete task, so without this a refresh asked on the daily
    command would be ignored once the stages are complete.
    """
    return _release_check().refresh_pending()


def _cause_recorded(complete: Callable[..., bool]) -> Callable[..., bool]:
    """``complete``, recording why it raised (Luigi logs it among a traceback's lines, without an event)."""

    @functools.wraps(complete)
    def wrapped(self: PipelineTask) -> bool:
        try:
            return complete(self)
        except Exception as error:
            causes.record(self.task_family, error)  # once, by the stage that raised
            raise

    return wrapped


def _run_wrapped(run: Callable[..., Any]) -> Callable[..., Any]:
    """``run``, skipped when the stage was scheduled only to wait for a refresh that left it complete,
    and ending with the dashboard at 100 % saying what was done (not the last progress message).

    A ``run`` that yields (dynamic requirements) stays a generator; any other stays a plain call, so
    ``Task().run()`` runs it (a generator wrapper would silently do nothing when called that way).
    """

    def skipped(self: PipelineTask) -> bool:
        self._report_status = self.set_status_message  # the worker's reporter, kept for on_failure
        if getattr(self, "_awaits_refresh", False) and self.complete():
            log_event(logger, "unchanged by the refreshed release: nothing to do", task=self.task_family)
            self.counts = {"unchanged_by_refresh": True}
            return True
        return False

    def done(self: PipelineTask) -> None:
        counts = ", ".join(f"{k} {v:,}" for k, v in getattr(self, "counts", {}).items() if type(v) is int)
        self.set_status_message(f"done: {counts}" if counts else "done")
        self.set_progress_percentage(100)

    if inspect.isgeneratorfunction(run):

        @functools.wraps(run)
        def yielding(self: PipelineTask) -> Iterator[Any]:
            if not skipped(self):
                yield from run(self)  # dynamic requirements, passed through
            done(self)

        return yielding

    @functools.wraps(run)
    def plain(self: PipelineTask) -> None:
        if not skipped(self):
            run(self)
        done(self)

    return plain


class PipelineTask(luigi.Task):
    """A stage of the pipeline. ``run()`` fills ``self.counts``; a summary is logged at the end."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _run_wrapped(cls.__dict__["run"])  # type: ignore[method-assign]
        if "complete" in cls.__dict__:
            cls.complete = _cause_recorded(cls.__dict__["complete"])  # type: ignore[method-assign]

    dataset = SettingParameter(
        read=layout.dataset_uri,
        description="where the dataset's outputs live; default: from GCS_BUCKET_NAME, GCS_DATASET_PATH and the zip",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts: dict[str, Any] = {}  # what run() did: logged, shown on the dashboard, recorded
        self._report_status: Callable[[str], None] | None = None  # the worker's reporter, kept for on_failure

    def complete(self) -> bool:
        return super().complete()  # wrapped below: the cause of a failure is recorded

    @property
    def settings(self) -> Settings:
        problem = parameter_problem(self)
        if problem:
            raise SettingsError(problem)
        settings = get_settings()
        if self.dataset != layout.dataset_uri(settings):
            raise SettingsError(
                f"--dataset {self.dataset} is not the dataset these settings name ({layout.dataset_uri(settings)}): "
                "set GCS_BUCKET_NAME, GCS_DATASET_PATH and MOVIELENS_URL for it instead"
            )
        model = getattr(self, "model", settings.hf_model_name)
        if model != settings.hf_model_name:
            raise SettingsError(f"--model {model} is not HF_MODEL_NAME ({settings.hf_model_name}): set HF_MODEL_NAME")
        return settings

    @functools.cached_property
    def bucket(self) -> Bucket:
        return open_bucket(self.settings)

    @property
    def zip_key(self) -> str:
        return layout.zip_key(self.settings)

    @property
    def db(self) -> Database:
        return mongo.open_mongo(self.settings)

    # --- the source --------------------------------------------------------------

    def current_source_md5(self) -> str | None:
        """The md5 of the zip in the bucket: the identity of everything derived from it."""
        return cached(("md5", self.bucket.uri(self.zip_key)), lambda: self.bucket.md5_hex(self.zip_key))

    def local_zip(self) -> Path:
        """A local copy of the zip in the bucket, checked (a damaged one is named and removed: readers.py)."""
        return readers.local_zip(self.bucket, self.zip_key, self.settings.cache_dir, self.current_source_md5())

    def read_movies(self) -> pd.DataFrame:
        # Keyed by content: a local bucket replaces a zip in place, under the same path.
        return readers.movies_in(self.local_zip(), self.current_source_md5(), self.settings.max_member_bytes)

    def on_failure(self, exception: BaseException) -> str:
        """The explanation the scheduler shows and Luigi's failure e-mail carries, secrets removed.

        An expected error (bad input, a setting, a service down) is its one line; a bug keeps its traceback.
        """
        # The dashboard shows the cause, not the last progress message (run in the worker that failed).
        report = getattr(self, "_report_status", None)
        if report is not None:
            with contextlib.suppress(Exception):  # the scheduler gone: the command's last line still says it
                report(f"failed: {causes.cause_of(self.task_family, exception)}")
        if is_expected(exception):
            return scrub(one_line(exception))
        return scrub(super().on_failure(exception))

    def progress(self, done: int, total: int, message: str) -> None:
        """Report progress to the scheduler's dashboard, and to the terminal when there is one."""
        percent = round(100 * done / total) if total else 100
        self.set_status_message(message)
        self.set_progress_percentage(percent)
        if interactive():
            terminal_progress(self.task_family, percent, message)


PipelineTask.complete = _cause_recorded(PipelineTask.complete)  # type: ignore[method-assign]


class ReleaseCheck(PipelineTask):
    """The role of the first stage: put the release in the bucket, and check it again on ``--refresh``.

    Every stage consults it (``refresh_pending``) without knowing which stage it is.
    """

    refresh = luigi.BoolParameter(
        default=False, significant=False, description="download again and replace the zip if it changed"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The command's start: a refresh recorded after it was done by this command (or its forked workers).
        self._asked_at = time.time()

    @property
    def refresh_key(self) -> str:
        return layout.marker_key(self.settings, "download")

    def refresh_pending(self) -> bool:
        """Whether ``--refresh`` was asked and no refresh has been recorded since this command started."""
        if not self.refresh:
            return False
        try:
            record = self.bucket.read_json(self.refresh_key)
        except (FileNotFoundError, ValueError):
            return True
        checked = record.get("checked_at") if isinstance(record, dict) else None  # another shape: not recorded
        return not isinstance(checked, int | float) or checked < self._asked_at

    def complete(self) -> bool:
        return not self.refresh_pending() and super().complete()

    def record_refresh(self, record: dict[str, Any]) -> None:
        """Record the release check this command made (``refresh_pending`` is then false)."""
        self.bucket.write_json(self.refresh_key, {**record, "checked_at": time.time()})


class Stage(PipelineTask):
    """A stage whose output is a marker: the record of what it wrote and what it was built from.

    Subclasses give ``marker_key()``, ``expect()`` (the settings that shape the output),
    ``holds(marker)`` (a cheap check that what the marker counts is still there) and
    ``upstream()`` (the stages whose output they read).
    """

    STAMPED: ClassVar[tuple[str, ...]] = ()  # marker fields that downstream stages depend on
    # The stage's name in the run manifest and the report (None: not reported, e.g. a chunk), and the
    # marker fields too long for the manifest: declared by the stage, so the manifest follows the DAG.
    REPORT_NAME: ClassVar[str | None] = None
    BRIEF_OMITS: ClassVar[tuple[str, ...]] = ()

    def marker_key(self) -> str:
        raise NotImplementedError

    def expect(self) -> dict[str, Any]:
        """Marker fields that must equal the current settings for the marker to count."""
        return {}

    def holds(self, marker: dict[str, Any]) -> bool:
        """Whether what ``marker`` records is still where the readers look."""
        return True

    def upstream(self) -> list[Stage]:
        """The stages whose outputs this one reads (and whose stamps its marker records)."""
        return []

    def requires(self) -> Any:
        """The upstream stages, declared once (``upstream``); a stage adds its own chunks to them."""
        return self.upstream()

    SHAPE: ClassVar[Shape] = {}  # marker fields readers rely on, and their types

    def output(self) -> MarkerTarget:
        return MarkerTarget(self.bucket, self.marker_key(), self.expect(), self.holds, self.SHAPE)

    def _requires(self) -> list[luigi.Task]:
        # --DownloadMovieLens-refresh: every stage waits for the download, then runs only if the
        # release it fetched changed what the stage was built from (_skipped_when_complete_after_refresh).
        required = list(super()._requires())
        if refresh_pending():
            self._awaits_refresh = True
            required.append(_release_check())
        return required

    def complete(self) -> bool:
        if refresh_pending():
            return False  # not done while the release it is built from is to be checked again
        # One check of the root checks every stage below it: each marker, the zip's md5 and each
        # stage's verdict are read once per check (see storage.reads_cached).
        with reads_cached():
            return cached(("complete", self.task_id), self._complete)

    def _complete(self) -> bool:
        marker = self.output().valid()
        if marker is None:
            return False
        recorded = marker.get("inputs") or {}
        return all(up.complete() and recorded.get(up.task_family) == up.stamp() for up in self.upstream())

    def stamp(self) -> str | None:
        """The identity of this stage's current output, as recorded in its marker."""
        marker = self.output().read()
        return None if marker is None else marker.get("stamp")

    def write_marker(self, content: dict[str, Any]) -> None:
        """Record ``content`` with the upstream stamps and this run's timing; written last."""
        target = self.output()  # its expect() reads the zip's md5 once, for the identity and the write
        inputs = {up.task_family: up.stamp() for up in self.upstream()}
        identity = {**target.expect, "inputs": inputs, **{name: content.get(name) for name in self.STAMPED}}
        started = getattr(self, "_started_at", None)
        run = {
            "task_id": self.task_id,
            "params": self.to_str_params(only_significant=True),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - started, 3) if started else None,
            # the time its chunk tasks took (each once, in whichever run computed it): where the time went
            "chunks_s": getattr(self, "_chunks_s", None),
            "counts": getattr(self, "counts", {}),
        }
        target.write({**content, "inputs": inputs, "stamp": digest(identity), "run": run})


class MongoStage(Stage):
    """A stage that writes to MongoDB: an unreachable MongoDB fails the run before any work.

    Luigi checks ``complete()`` top-down before it runs anything; connecting there makes a
    bad ``MONGODB_URI`` a scheduling error at start, not after the embeddings are computed.
    """

    def complete(self) -> bool:
        self.db  # noqa: B018 - connects (and pings) once per process, or raises MongoUnavailable
        return super().complete()


class SourceChanged(Expected, RuntimeError):
    """The zip in the bucket changed while derived outputs were being computed."""


class ChunkedStage(Stage):
    """A stage done by chunk tasks, then finished by one step that writes its marker.

    When the chunks can be planned at scheduling time (their input is in the bucket) they
    are static requirements, so every worker sharing a central scheduler can take some;
    otherwise they are yielded as dynamic requirements once their input exists.
    """

    @functools.cached_property
    def planned_chunks(self) -> list[luigi.Task]:
        """The chunks known when the task was first scheduled: fixed, since Luigi checks them again before run().

        None while a refresh is pending: the release may change, and with it the chunks (run() yields them).
        """
        if refresh_pending():
            return []
        try:
            return list(self.chunks())
        except DamagedObject as error:
            # Named now, in one line; the stage then fails on its missing input (exit 30).
            log_event(logger, causes.record(self.task_family, error), logging.ERROR, task=self.task_family)
            return []

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
        self._chunks_s = chunk_seconds(chunks)
        self.finish(chunks)


class ChunkTask(PipelineTask):
    """A chunk whose output is one object in the bucket; the time it took is kept beside it."""

    def output(self) -> BucketTarget:
        raise NotImplementedError


def chunk_seconds(chunks: Sequence[luigi.Task]) -> float:
    """The seconds ``chunks`` took to compute (a chunk's own record: its marker, or its timing object)."""
    total = 0.0
    for chunk in chunks:
        took: object = None
        with contextlib.suppress(FileNotFoundError, ValueError, AttributeError):
            if isinstance(chunk, Stage):
                took = ((chunk.output().read() or {}).get("run") or {}).get("duration_s")
            elif isinstance(chunk, ChunkTask):
                took = chunk.bucket.read_json(layout.timing_key(chunk.output().key)).get("duration_s")
        total += took if isinstance(took, int | float) and not isinstance(took, bool) else 0.0
    return round(total, 3)
