"""The daily run: every published stage, then the run manifest the report reads.

    luigi --module mlrec_luigi DailyRun --local-scheduler
    luigi --module mlrec_luigi DailyRun --date 2026-11-24

Requires ``UpdatePopular`` and ``UpdateUserRecommendations`` (for ``--date``) and ``UpdateSimilarMovies``; the manifest
(``<ds>/runs/<finished>-<date>.json`` and ``runs/latest.json``) is built from its inputs'
markers, each carrying its own stage's counts and timing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

from mlrec_luigi import layout
from mlrec_luigi.tasks.base import Shape, Stage
from mlrec_luigi.tasks.parameters import RunDateParameter
from mlrec_luigi.tasks.popular import UpdatePopular
from mlrec_luigi.tasks.quality import MeasureQuality
from mlrec_luigi.tasks.similar import UpdateSimilarMovies
from mlrec_luigi.tasks.user_recs import UpdateUserRecommendations


class DailyRun(Stage):
    """The cron job's root: the popular list for ``date``, every movie's similar movies, every user's list."""

    date = RunDateParameter(description="the run's date (UTC); default: today")
    SHAPE: ClassVar[Shape] = {"manifest": str}

    def upstream(self) -> list[Stage]:
        return [
            UpdatePopular(date=self.date),
            UpdateSimilarMovies(),
            UpdateUserRecommendations(date=self.date),
            MeasureQuality(),
        ]

    def marker_key(self) -> str:
        return layout.derived_key(self.settings, "markers", "daily", f"{self.date.isoformat()}.json")

    def expect(self) -> dict[str, Any]:
        return {"source_md5": self.current_source_md5()}

    def run(self) -> None:
        stages = {
            stage.REPORT_NAME: _brief(stage.output().read(), stage.BRIEF_OMITS)
            for stage in _below(self)
            if stage.REPORT_NAME is not None
        }
        manifest = build_manifest(
            date=self.date,
            source={"uri": self.bucket.uri(self.zip_key), "md5": self.current_source_md5()},
            model=self.settings.hf_model_name,
            stages=stages,
        )
        name = f"{manifest['finished'].replace(':', '')}-{self.date.isoformat()}.json"
        self.bucket.write_json(layout.run_key(self.settings, name), manifest)
        self.bucket.write_json(layout.run_key(self.settings), manifest)
        self.counts = {"stages": len(stages)}
        self.write_marker({"manifest": layout.run_key(self.settings, name)})


def build_manifest(
    *,
    date: dt.date,
    source: Mapping[str, Any],
    model: str,
    stages: Mapping[str, Any],
) -> dict[str, Any]:
    """The run manifest as plain JSON values."""
    finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {
        "finished": finished,
        "date": date.isoformat(),
        "source": dict(source),
        "embedding_model": model,
        "stages": dict(stages),
    }


def _below(stage: Stage) -> list[Stage]:
    """Every stage upstream of ``stage``, each once, in pipeline order (a stage after what it reads)."""
    found: dict[str, Stage] = {}

    def visit(current: Stage) -> None:
        for up in current.upstream():
            if up.task_id not in found:
                visit(up)
                found[up.task_id] = up

    visit(stage)
    return list(found.values())


def _brief(marker: dict[str, Any] | None, omits: tuple[str, ...]) -> dict[str, Any]:
    """A marker without its long lists (what its stage declares, and the upstream stamps)."""
    return {k: v for k, v in (marker or {}).items() if k not in omits and k != "inputs"}
