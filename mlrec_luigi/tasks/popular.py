"""Stage 5: rank the recently popular movies and publish them to Redis as the API's fallback.

    luigi --module mlrec_luigi UpdatePopular --local-scheduler
    luigi --module mlrec_luigi UpdatePopular --date 2026-11-24

``--date`` (default today) makes each daily cron run a new task while the upstream
stages stay complete. Without ``REDIS_URL`` the list is computed and recorded in the
marker, with a warning. An empty list leaves the published one in place, and says so.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import luigi

from mlrec_luigi import cache, layout
from mlrec_luigi.logs import log_event
from mlrec_luigi.popularity import compute_popular
from mlrec_luigi.settings import POPULAR_REDIS_KEY
from mlrec_luigi.storage import MarkerTarget
from mlrec_luigi.tasks.base import MongoStage, tasks_run
from mlrec_luigi.tasks.embeddings import Embeddings
from mlrec_luigi.tasks.interactions import LoadInteractions
from mlrec_luigi.tasks.movies import LoadMovies

logger = logging.getLogger("mlrec_luigi")


class UpdatePopular(MongoStage):
    """Popular movies of the window ending on ``date`` → Redis ``rec:fallback:popular``."""

    date = luigi.DateParameter(default=dt.date.today())

    def requires(self) -> LoadInteractions:
        return LoadInteractions()

    def output(self) -> MarkerTarget:
        return MarkerTarget(
            self.bucket,
            self.derived_key("markers", "popular", f"{self.date.isoformat()}.json"),
            expect={"source_md5": self.current_source_md5()},
        )

    def run(self) -> None:
        settings = self.settings
        popular = compute_popular(
            self.db["interactions"],
            self.date,
            settings.popularity_recent_days,
            settings.popularity_min_rating,
            settings.popularity_top_n,
        )
        if not popular.movie_ids:
            published = "kept_previous"
            log_event(
                logger,
                "no popular movies in the window: the published list is left in place",
                logging.WARNING,
                task=self.task_family,
                window=popular.window,
            )
        elif settings.redis_url is None:
            published = "no_redis"
            log_event(
                logger,
                "REDIS_URL is not set: the popular list is computed but not published",
                logging.WARNING,
                task=self.task_family,
                movies=len(popular.movie_ids),
            )
        else:
            cache.publish_list(
                settings.redis_url, POPULAR_REDIS_KEY, popular.movie_ids, settings.popularity_ttl_seconds
            )
            published = "published"
        window = popular.window
        self.counts = {"movies": len(popular.movie_ids), "ratings_counted": sum(popular.counts), "redis": published}
        result = {
            **self.counts,
            "date": self.date.isoformat(),
            "key": POPULAR_REDIS_KEY,
            "window_start": window.start.isoformat() if window else None,
            "window_end": window.end.isoformat() if window else None,
            "movie_ids": popular.movie_ids,
            "counts": popular.counts,
        }
        self.write_run_manifest(result)
        self.output().write(result)

    def write_run_manifest(self, popular: dict[str, object]) -> None:
        """The run report's manifest: every stage's marker and what this worker ran."""
        # Imported here so that `python -m mlrec_luigi.report` runs a module not yet imported.
        from mlrec_luigi import report

        stages = {
            "embeddings": Embeddings().output().read(),
            "load_movies": LoadMovies().output().read(),
            "load_interactions": {
                k: v for k, v in (LoadInteractions().output().read() or {}).items() if k != "rejected_examples"
            },
            "popular": popular,
        }
        manifest = report.build_manifest(
            date=self.date,
            source={"uri": self.bucket.uri(self.zip_key), "md5": self.current_source_md5()},
            model=self.settings.hf_model_name,
            stages=stages,
            tasks=[
                *tasks_run,
                {
                    "task": self.task_family,
                    "task_id": self.task_id,
                    "counts": self.counts,
                    "duration_s": round(time.monotonic() - self._started_at, 3),
                },
            ],
        )
        name = f"{manifest['finished'].replace(':', '')}-{self.date.isoformat()}.json"
        self.bucket.write_json(layout.run_key(self.settings, name), manifest)
        self.bucket.write_json(layout.run_key(self.settings), manifest)
