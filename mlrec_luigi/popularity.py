"""The recently popular movies: the window rule and the MongoDB aggregation.

Popular = interactions of type ``rate`` with ``value >= min_rating`` whose timestamp falls
in the ``days`` days that end at the earlier of the end of the run's date and the newest
interaction (so historical data still yields a list). The window is ``(end - days, end]``.
Movies are ranked by the number of such ratings, ties broken by ``movies._id`` ascending.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo.collection import Collection

from mlrec_luigi.documents import RATE, utc


@dataclass(frozen=True)
class Window:
    """The half-open interval ``(start, end]`` of timestamps that count."""

    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class Popular:
    """The ranked movie ids with their counts, and the window they were counted in."""

    movie_ids: list[str]
    counts: list[int]
    window: Window | None


def end_of_day(day: dt.date) -> dt.datetime:
    """The last millisecond of ``day`` in UTC (MongoDB stores milliseconds)."""
    return dt.datetime.combine(day, dt.time(23, 59, 59, 999_000), tzinfo=dt.UTC)


def popularity_window(run_date: dt.date, newest: dt.datetime | None, days: int) -> Window | None:
    """The window for a run on ``run_date`` given the newest interaction (None: no data)."""
    if newest is None:
        return None
    end = min(end_of_day(run_date), utc(newest))
    return Window(start=end - dt.timedelta(days=days), end=end)


def popularity_pipeline(window: Window, min_rating: float, top_n: int | None = None) -> list[dict[str, Any]]:
    """The aggregation that ranks movies inside ``window`` (the first ``top_n``, or all)."""
    stages: list[dict[str, Any]] = [
        {
            "$match": {
                "type": RATE,
                "timestamp": {"$gt": window.start, "$lte": window.end},
                "value": {"$gte": min_rating},
            }
        },
        {"$group": {"_id": "$movieId", "count": {"$sum": 1}}},
        {"$sort": {"count": -1, "_id": 1}},
    ]
    return [*stages, {"$limit": top_n}] if top_n else stages


def newest_timestamp(interactions: Collection) -> dt.datetime | None:
    """The timestamp of the newest interaction of any type."""
    newest = interactions.find_one({}, {"timestamp": 1}, sort=[("timestamp", -1)])
    return newest["timestamp"] if newest else None


def compute_popular(
    interactions: Collection,
    run_date: dt.date,
    days: int,
    min_rating: float,
    top_n: int,
    existing: Callable[[list[str]], set[str]] | None = None,
) -> Popular:
    """Rank the recently popular movies of ``interactions`` for a run on ``run_date``.

    ``existing(ids)`` tells which ids are movies that exist: the others (a movie deleted
    since it was rated) are passed over, so the list never names a movie the API lacks.
    """
    window = popularity_window(run_date, newest_timestamp(interactions), days)
    if window is None:
        return Popular([], [], None)
    if existing is None:
        rows = list(interactions.aggregate(popularity_pipeline(window, min_rating, top_n)))
        return Popular([str(row["_id"]) for row in rows], [int(row["count"]) for row in rows], window)
    ids: list[str] = []
    counts: list[int] = []
    batch: list[dict[str, Any]] = []
    cursor = interactions.aggregate(popularity_pipeline(window, min_rating), batchSize=max(2 * top_n, 100))
    for row in itertools.chain(cursor, [None]):
        if row is not None:
            batch.append(row)
        if batch and (row is None or len(batch) >= 2 * top_n):
            found = existing([str(r["_id"]) for r in batch])
            for kept in (r for r in batch if str(r["_id"]) in found):
                ids.append(str(kept["_id"]))
                counts.append(int(kept["count"]))
            batch = []
            if len(ids) >= top_n:
                break
    return Popular(ids[:top_n], counts[:top_n], window)
