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

import datetime as dt
from typing import Any, ClassVar

from mlrec_luigi import layout, live, mongo, published
from mlrec_luigi.popularity import compute_popular
from mlrec_luigi.settings import POPULAR_REDIS_KEY
from mlrec_luigi.tasks.base import MongoStage, Shape, Stage
from mlrec_luigi.tasks.interactions import LoadInteractions
from mlrec_luigi.tasks.parameters import RunDateParameter


class UpdatePopular(MongoStage):
    """Popular movies of the window ending on ``date`` → Redis ``rec:fallback:popular``."""

    REPORT_NAME = "popular"

    date = RunDateParameter(description="the run's date (UTC); default: today")

    STAMPED = ("movie_ids", "redis")
    SHAPE: ClassVar[Shape] = {"movie_ids": list, "redis": str}

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
            "ttl_seconds": settings.popularity_ttl_seconds,
            "redis_configured": settings.redis_url is not None,
        }

    def holds(self, marker: dict[str, Any]) -> bool:
        """Not published (a backfill, no Redis): done. Published: done while Redis holds it, or a newer date is live."""
        if marker.get("redis") != published.PUBLISHED:
            return True
        record = published.read_record(self.bucket, str(marker.get("record")), self.task_family)
        if record is not None and not published.unpublished_keys(str(self.settings.redis_url), record):
            return True
        live_now = self.live_date()
        return live_now is not None and live_now != self.date  # another date's list is live: this one is done

    def live_date(self) -> dt.date | None:
        """The date whose list is live in Redis (None: none published yet), checked before it is believed."""
        return live.live_date(
            self.bucket,
            layout.popular_live_key(self.settings),
            layout.derived_key(self.settings, "markers", "popular") + "/",
            self.task_family,
        )

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
        live_now = self.live_date()
        self.progress(1, 2, f"publishing {len(popular.movie_ids)} movies to {POPULAR_REDIS_KEY}")
        policy = published.publish(
            settings.redis_url,
            [POPULAR_REDIS_KEY] if popular.movie_ids else [],
            [popular.movie_ids],
            settings.popularity_ttl_seconds,
            what="the popular list",
            task=self.task_family,
            live=live_now is None or self.date >= live_now,  # a backfill never takes the live key
        )
        record: dict[str, Any] = {}
        if policy == published.PUBLISHED:
            live.record_live(self.bucket, layout.popular_live_key(settings), self.date)
            record_key = layout.popular_record_key(settings, self.date)
            record = published.write_record(self.bucket, record_key, [POPULAR_REDIS_KEY], [popular.movie_ids])
        window = popular.window
        self.counts = {"movies": len(popular.movie_ids), "ratings_counted": sum(popular.counts), "redis": policy}
        self.write_marker(
            {
                **self.counts,
                **record,
                "date": self.date.isoformat(),
                "key": POPULAR_REDIS_KEY,
                "live_date": live_now.isoformat() if live_now else None,
                "window_start": window.start.isoformat() if window else None,
                "window_end": window.end.isoformat() if window else None,
                "movie_ids": popular.movie_ids,
                "counts": popular.counts,
            }
        )
