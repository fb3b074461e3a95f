"""The popularity window rule and the aggregation, over a real wire-protocol MongoDB."""

from __future__ import annotations

import datetime as dt

import pymongo
import pytest
from bson import ObjectId

from mlrec_luigi import mongo
from mlrec_luigi.popularity import compute_popular, end_of_day, popularity_window

UTC = dt.UTC


def test_window_ends_at_the_end_of_the_run_date_when_data_is_current() -> None:
    newest = dt.datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    window = popularity_window(dt.date(2026, 11, 24), newest, 7)
    assert window.end == dt.datetime(2026, 11, 24, 23, 59, 59, 999000, tzinfo=UTC)
    assert window.start == window.end - dt.timedelta(days=7)


def test_window_ends_at_the_newest_interaction_for_historical_data() -> None:
    newest = dt.datetime(2018, 9, 24, 14, 27, 30)  # naive, as MongoDB returns UTC
    window = popularity_window(dt.date(2026, 11, 24), newest, 7)
    assert window.end == newest.replace(tzinfo=UTC)
    assert window.start == dt.datetime(2018, 9, 17, 14, 27, 30, tzinfo=UTC)


def test_no_interactions_no_window() -> None:
    assert popularity_window(dt.date(2026, 11, 24), None, 7) is None


def test_end_of_day_is_utc() -> None:
    assert end_of_day(dt.date(2020, 2, 29)).isoformat() == "2020-02-29T23:59:59.999000+00:00"


@pytest.fixture
def interactions(wire_mongo: tuple[str, str]):
    uri, name = wire_mongo
    client = pymongo.MongoClient(uri, tz_aware=True)
    collection = client[name]["interactions"]
    mongo.ensure_indexes(collection, mongo.INTERACTION_INDEXES)
    yield collection
    client.close()


def rating(movie: str, value: float, when: dt.datetime, kind: str = "rate") -> dict:
    return {"_id": ObjectId(), "userId": "1", "movieId": movie, "type": kind, "value": value, "timestamp": when}


def test_popular_counts_high_ratings_in_the_window_with_deterministic_ties(interactions) -> None:
    a, b, c, d = (str(ObjectId()) for _ in range(4))
    a, b, c, d = sorted([a, b, c, d])
    end = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    interactions.insert_many(
        [
            rating(c, 5.0, end),
            rating(c, 4.0, end - dt.timedelta(days=1)),  # c: 2
            rating(b, 4.5, end - dt.timedelta(days=2)),
            rating(a, 4.0, end - dt.timedelta(days=3)),  # a, b: 1 (tie)
            rating(d, 3.5, end),  # below the threshold
            rating(d, 5.0, end - dt.timedelta(days=7)),  # exactly 7 days before the end: outside (start is open)
            rating(d, 5.0, end, kind="like"),  # not a rating
            rating(d, 5.0, end + dt.timedelta(days=3), kind="view"),  # after the run date: ignored
        ]
    )
    popular = compute_popular(interactions, dt.date(2026, 11, 20), days=7, min_rating=4.0, top_n=50)
    assert popular.movie_ids == [c, a, b]
    assert popular.counts == [2, 1, 1]
    assert popular.window.end == end_of_day(dt.date(2026, 11, 20))
    assert compute_popular(interactions, dt.date(2026, 11, 20), 7, 4.0, top_n=2).movie_ids == [c, a]


def test_the_window_is_open_at_its_start_and_closed_at_its_end(interactions) -> None:
    before, first, last = sorted(str(ObjectId()) for _ in range(3))
    end = end_of_day(dt.date(2026, 11, 20))
    start = end - dt.timedelta(days=7)
    interactions.insert_many(
        [
            rating(before, 5.0, start),  # exactly at the start: outside (open)
            rating(first, 5.0, start + dt.timedelta(milliseconds=1)),  # just after it: inside
            rating(last, 5.0, end),  # exactly at the end: inside (closed)
            rating(before, 5.0, end + dt.timedelta(milliseconds=1), kind="view"),  # after the end: not a rating anyway
        ]
    )
    popular = compute_popular(interactions, dt.date(2026, 11, 20), days=7, min_rating=4.0, top_n=50)
    assert (popular.window.start, popular.window.end) == (start, end)
    assert popular.movie_ids == [first, last] and popular.counts == [1, 1]


def test_popular_of_an_empty_collection_is_empty(interactions) -> None:
    popular = compute_popular(interactions, dt.date(2026, 11, 20), 7, 4.0, 50)
    assert popular.movie_ids == [] and popular.window is None
