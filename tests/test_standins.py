"""The mongomock stand-in (MONGODB_URI=mongomock://): faster where it was quadratic, same answers."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError

from mlrec_luigi import mongo, standins
from mlrec_luigi.settings import SettingsError


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


def test_the_try_out_store_gives_back_what_it_kept(tmp_path) -> None:
    import datetime as dt

    from bson import ObjectId

    from mlrec_luigi import mongo, standins

    uri = f"mongomock://localhost/mlrec?store={tmp_path / 'store.bson'}"
    db = mongo.connect(uri)["mlrec"]
    movies = [{"_id": ObjectId(), "movieId_ml": i, "embedding": [i / 3, -0.1 * i, 1e-300]} for i in range(5)]
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678000)
    db.movies.insert_many([dict(m) for m in movies])
    db.movies.create_index("movieId_ml", unique=True, name="movieId_ml_unique")
    db.interactions.insert_one({"userId": "1", "timestamp": when, "value": 4.5})
    standins.save_mongomock()
    mongo.forget_clients()  # a new process
    again = mongo.connect(uri)["mlrec"]
    assert list(again.movies.find()) == movies  # the vectors bit for bit, the ids, in order
    assert again.interactions.find_one({"timestamp": {"$gte": when}})["value"] == 4.5
    assert "movieId_ml_unique" in again.movies.index_information()
    (tmp_path / "store.bson").write_bytes(b"\x05\x00")
    mongo.forget_clients()
    with pytest.raises(SettingsError, match=r"store\.bson, the try-out MongoDB's store, is damaged"):
        mongo.connect(uri)


def test_upserting_movies_reports_its_progress_batch_by_batch(database) -> None:
    seen: list[tuple[int, int]] = []
    documents = [{"movieId_ml": i, "title": f"m{i}"} for i in range(1, 1201)]
    counts = mongo.upsert_movies(database.movies, documents, None, lambda done, total: seen.append((done, total)))
    assert counts.inserted == 1200 and seen == [(0, 1200), (500, 1200), (1000, 1200)]
    changed = [{**d, "title": "new"} for d in documents[:600]]
    seen.clear()
    mongo.upsert_movies(database.movies, changed, None, lambda done, total: seen.append((done, total)))
    assert seen == [(0, 600), (500, 600)]  # the updates, batch by batch
