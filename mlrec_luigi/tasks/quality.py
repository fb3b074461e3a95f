"""Stage 8: measure the lists before they are published, and hold a worse model.

    luigi --module mlrec_luigi MeasureQuality --local-scheduler
    luigi --module mlrec_luigi DailyRun --MeasureQuality-confirm-drop    take a held model, once

On a temporal holdout of the MovieLens ratings (``quality.py`` defines it), every measured user's
content list is computed from their history exactly as the user-lists stage does, and hit rate@10,
NDCG@10 and recall@10 are counted, beside the popular fallback, the all-time popular movies and the
API's own method on a miss; for the similar movies, how often the next like is among the 10 similar
movies of the previous one. The collaborative model is tuned on a split of the history and measured
the same way (``methods.py``): the user lists' ``best`` method reads these figures. The figures go
into the marker (and so the run manifest and the report).

The gate: ``LoadMovies`` requires this stage, so when the embeddings change (a new model or release)
the new vectors are measured before anything of them reaches MongoDB or Redis. A hit rate@10 below
``(1 - QUALITY_MAX_DROP)`` times the live one (``quality/live.json``: the figures the gate last let
through) stops the run in one line with both figures; ``--MeasureQuality-confirm-drop`` takes it once.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import luigi
import numpy as np

from mlrec_luigi import layout, methods, quality
from mlrec_luigi.damage import DamagedObject
from mlrec_luigi.errors import CheckFailed
from mlrec_luigi.logs import log_event
from mlrec_luigi.readers import read_ratings_part, read_vectors
from mlrec_luigi.tasks.base import Shape, Stage, digest
from mlrec_luigi.tasks.embeddings import Embeddings
from mlrec_luigi.tasks.ratings import PrepareRatings

logger = logging.getLogger("mlrec_luigi")


class MeasureQuality(Stage):
    """The offline quality of the lists of the current embeddings, and the gate before they go live."""

    REPORT_NAME = "quality"
    SHAPE: ClassVar[Shape] = {"figures": dict, "gate": dict}

    confirm_drop = luigi.BoolParameter(
        default=False, significant=False, description="take a model the quality gate held (once)"
    )

    def upstream(self) -> list[Stage]:
        return [Embeddings(), PrepareRatings()]

    def marker_key(self) -> str:
        return layout.marker_key(self.settings, "quality")

    def expect(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "source_md5": self.current_source_md5(),
            "embedding_model": settings.hf_model_name,
            "sample_users": settings.quality_sample_users,
            "popularity": [settings.popularity_recent_days, settings.popularity_min_rating, settings.popularity_top_n],
        }

    def stamp(self) -> str | None:
        """A gate's identity is what it let through (the embeddings): measuring again changes nothing below."""
        marker = self.output().read()
        return None if marker is None else digest((marker.get("inputs") or {}).get("Embeddings"))

    def run(self) -> None:
        settings = self.settings
        embeddings, ratings = (stage.output().read() or {} for stage in self.upstream())
        self.progress(0, 3, "reading the embeddings and the ratings")
        vectors_by_movie = read_vectors(self.bucket, self.upstream()[0].output().key, embeddings.get("chunks", []))
        movie_ids = np.array(sorted(vectors_by_movie), dtype=np.int64)
        vectors = np.stack([vectors_by_movie[m] for m in movie_ids.tolist()]).astype(np.float32)
        movie_row = np.full(int(movie_ids.max(initial=0)) + 1, -1, np.int32)
        movie_row[movie_ids] = np.arange(len(movie_ids), dtype=np.int32)
        md5, rows = ratings["source_md5"], ratings["chunk_rows"]
        parts = [read_ratings_part(self.bucket, settings, md5, rows, i) for i in range(len(ratings["parts"]))]
        holdout = quality.build_holdout(parts, movie_row, settings.quality_sample_users)
        del parts
        self.progress(1, 3, f"computing the lists of {len(holdout.users):,} users from their history")
        figures = quality.evaluate(
            holdout, vectors, settings.popularity_recent_days, settings.popularity_min_rating, settings.popularity_top_n
        )
        figures.update(methods.measure_collaborative(holdout, len(vectors)))
        self.progress(2, 3, "comparing with the live figures")
        embeddings_stamp = Embeddings().stamp()
        gate = self._gate(figures, embeddings_stamp)
        self.bucket.write_json(layout.quality_live_key(settings), {
            "model": settings.hf_model_name, "embeddings": embeddings_stamp, "hit_rate": figures["content"]["hit_rate"],
            "ndcg": figures["content"]["ndcg"], "measured_users": figures["users"],
        })  # fmt: skip
        content = figures["content"]
        self.counts = {"users": figures["users"], "hits": round(content["hit_rate"] * figures["users"])}
        self.write_marker({"figures": figures, "gate": gate, "model": settings.hf_model_name})

    def _gate(self, figures: dict[str, Any], embeddings_stamp: str | None) -> dict[str, Any]:
        """Hold a worse model: the new hit rate against the live one's (CheckFailed, nothing written)."""
        live = self._live()
        new = float(figures["content"]["hit_rate"])
        limit = self.settings.quality_max_drop
        gate: dict[str, Any] = {"hit_rate": new, "max_drop": limit, "confirmed": bool(self.confirm_drop)}
        if live is None or live.get("embeddings") == embeddings_stamp:
            return {**gate, "live_hit_rate": None if live is None else live["hit_rate"], "passed": True}
        old = float(live["hit_rate"])
        gate.update(live_hit_rate=old, live_model=live.get("model"), passed=new >= old * (1 - limit))
        if not gate["passed"] and not self.confirm_drop:
            raise CheckFailed(
                f"hit rate@10 fell from {old:.4f} (live, {live.get('model')}) to {new:.4f} "
                f"({self.settings.hf_model_name}): more than QUALITY_MAX_DROP={limit:g} of it; nothing of the new "
                "model is published (run once with --MeasureQuality-confirm-drop to take it)"
            )
        return gate

    def _live(self) -> dict[str, Any] | None:
        """The figures the gate last let through, checked before they are believed (damaged: no baseline)."""
        try:
            return quality.read_live_figures(self.bucket, layout.quality_live_key(self.settings))
        except DamagedObject as error:
            log_event(logger, f"{error}: the gate has no live figures to compare with", logging.WARNING,
                      task=self.task_family)  # fmt: skip
            return None
