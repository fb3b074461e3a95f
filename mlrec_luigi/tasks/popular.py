"""Stage 5: rank the recently popular movies and publish them to Redis as the API's fallback.

    luigi --module mlrec_luigi UpdatePopular --local-scheduler
    luigi --module mlrec_luigi UpdatePopular --date 2026-11-24

``--date`` (default: the day the command runs) makes each daily cron run a new task while
the upstream stages stay complete. The live key ``rec:fallback:popular`` belongs to the
newest date run: an older date (a backfill) computes its list and records it in its
marker without publishing. Without ``REDIS_URL`` the list is computed and recorded, with
a warning. An empty list leaves the published one in place, and says so. A date whose
list is live counts as done only while Redis holds that list (a restart or FLUSHALL makes
the next run publish it again).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from mlrec_luigi import cache, layout, mongo
from mlrec_luigi.damage import read_json_checked
from mlrec_luigi.logs import log_event
from mlrec_luigi.popularity import compute_popular
from mlrec_luigi.settings import POPULAR_REDIS_KEY
from mlrec_luigi.tasks.base import MongoStage, Shape, Stage
from mlrec_luigi.tasks.interactions import LoadInteractions
from mlrec_luigi.tasks.parameters import RunDateParameter

logger = logging.getLogger("mlrec_luigi")

WARNINGS = {
    cache.KEPT_PREVIOUS: "no popular movies in the window: the published list is left in place",
    cache.NO_REDIS: "REDIS_URL is not set: the popular list is computed but not published",
    cache.NOT_LIVE: "an older date than the live list's: computed and recorded, not published",
}


class UpdatePopular(MongoStage):
    """Popular movies of the window ending on ``date`` → Redis ``rec:fallback:popular``."""

    date = RunDateParameter(default=None, description="the run's date (UTC); default: today")

    STAMPED = ("movie_ids", "redis")
    SHAPE: ClassVar[Shape] = {"movie_ids": list}

    def upstream(self) -> list[Stage]:
        return [LoadInteractions()]

    def marker_key(self) -> str:
        return layout.popular_marker_key(self.settings, self.date)

    def expect(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "source_md5": self.current_source_md5(),
            "recent_days": settings.popularity_recent_days,
            "min_rating": settings.popularity_min_rating,
            "top_n": settings.popularity_top_n,
            "redis_configured": settings.redis_url is not None,
        }

    def holds(self, marker: dict[str, Any]) -> bool:
        if marker.get("redis") != cache.PUBLISHED:
            return True
        if cache.read_list(self.settings.redis_url, POPULAR_REDIS_KEY) == marker.get("movie_ids"):
            return True
        return self.live_date() != self.date.isoformat()  # a newer date's list is live: this one is done

    def live_date(self) -> str | None:
        """The date whose list is live in Redis (None: none published yet)."""
        try:
            live = read_json_checked(
                self.bucket,
                layout.popular_live_key(self.settings),
                lambda value: isinstance(value, dict) and isinstance(value.get("date"), str),
                "the next run of the newest date publishes its list and writes it again",
            )
        except FileNotFoundError:
            return None
        return live["date"]

    def run(self) -> None:
        settings = self.settings
        self.progress(0, 2, "ranking the ratings of the window")
        popular = compute_popular(
            self.db["interactions"],
            self.date,
            settings.popularity_recent_days,
            settings.popularity_min_rating,
            settings.popularity_top_n,
            existing=lambda ids: mongo.existing_ids(self.db["movies"], ids),
        )
        live = self.live_date()
        published = cache.publish_policy(
            settings.redis_url, popular.movie_ids, live is None or self.date.isoformat() >= live
        )
        if published == cache.PUBLISHED:
            self.progress(1, 2, f"publishing {len(popular.movie_ids)} movies to {POPULAR_REDIS_KEY}")
            cache.publish_list(
                settings.redis_url, POPULAR_REDIS_KEY, popular.movie_ids, settings.popularity_ttl_seconds
            )
            self.bucket.write_json(layout.popular_live_key(settings), {"date": self.date.isoformat()})
        else:
            log_event(logger, WARNINGS[published], logging.WARNING, task=self.task_family, live_date=live)
        window = popular.window
        self.counts = {"movies": len(popular.movie_ids), "ratings_counted": sum(popular.counts), "redis": published}
        self.write_marker(
            {
                **self.counts,
                "date": self.date.isoformat(),
                "key": POPULAR_REDIS_KEY,
                "window_start": window.start.isoformat() if window else None,
                "window_end": window.end.isoformat() if window else None,
                "movie_ids": popular.movie_ids,
                "counts": popular.counts,
            }
        )
