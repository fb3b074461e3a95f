"""The mongomock stand-in (MONGODB_URI=mongomock://): faster where it was quadratic, same answers."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError

from mlrec_luigi import mongo, standins


@pytest.fixture
def database():
    mongo.forget_clients()
    yield standins.mongomock_client()["standins"]
    mongo.forget_clients()


def test_a_unique_index_still_refuses_a_duplicate(database) -> None:
    mongo.ensure_indexes(database.movies, mongo.MOVIE_INDEXES)
    database.movies.insert_many([{"movieId_ml": i} for i in range(1, 2001)])
    with pytest.raises(DuplicateKeyError):
        database.movies.insert_one({"movieId_ml": 7})
    assert mongo.count_movies(database.movies) == 2000


def test_aggregate_with_a_leading_match_answers_as_before(database) -> None:
    database.ratings.insert_many([{"movie": i % 7, "value": i % 5} for i in range(500)])
    pipeline = [
        {"$match": {"value": {"$gte": 3}}},
        {"$group": {"_id": "$movie", "n": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    expected = [{"_id": m, "n": sum(1 for i in range(500) if i % 7 == m and i % 5 >= 3)} for m in range(7)]
    assert list(database.ratings.aggregate(pipeline)) == expected
    assert next(iter(database.ratings.aggregate(pipeline[1:])))["n"] == sum(1 for i in range(500) if i % 7 == 0)
