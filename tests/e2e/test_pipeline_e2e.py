"""The whole DAG on the real ml-latest-small.zip, end to end, against real local services.

The zip is served over HTTP (the real download path, md5 checked), the bucket is
fake-gcs-server through google-cloud-storage, Redis is a real redis-server, the model is
the real MiniLM. MongoDB is ``volume_mongo``: mongomock, or a real MongoDB when
``MLREC_TEST_MONGODB_URI`` is set (see conftest).
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from collections.abc import Callable

import luigi
import numpy as np
import pandas as pd
import pytest
import redis
from bson import ObjectId

from mlrec_luigi import DailyRun, UpdatePopular, collaborative, mongo
from mlrec_luigi.popularity import end_of_day
from mlrec_luigi.settings import POPULAR_REDIS_KEY, get_settings
from mlrec_luigi.storage import open_bucket
from tests.support.processes import MOVIELENS_ZIP
from tests.support.runs import all_tasks, build, families
from tests.test_collaborative import collaborative_brute_force

RUN_DATE = dt.date(2026, 11, 24)
EARLIER_DATE = dt.date(2018, 6, 30)


def expected_popular(
    id_map: dict[str, str], run_date: dt.date, days: int = 7, min_rating: float = 4.0, top_n: int = 50
) -> list[str]:
    """The contract's popular list, computed independently from ratings.csv with pandas."""
    with zipfile.ZipFile(MOVIELENS_ZIP) as archive:
        ratings = pd.read_csv(archive.open("ml-latest-small/ratings.csv"))
    end = min(end_of_day(run_date).timestamp(), float(ratings["timestamp"].max()))
    start = end - days * 86_400
    window = ratings[(ratings["timestamp"] > start) & (ratings["timestamp"] <= end) & (ratings["rating"] >= min_rating)]
    counts = window.groupby("movieId").size().rename("count").reset_index()
    counts["hex"] = counts["movieId"].map(lambda m: id_map[str(m)])
    ranked = counts.sort_values(["count", "hex"], ascending=[False, True]).head(top_n)
    return ranked["hex"].tolist()


@pytest.fixture
def e2e_env(
    pipeline_env: Callable[..., dict[str, str]],
    served_movielens: str,
    gcs_emulator: str,
    gcs_bucket: str,
    redis_url: str,
    volume_mongo: tuple[str, str],
) -> dict[str, str]:
    uri, database = volume_mongo
    return pipeline_env(
        MOVIELENS_URL=served_movielens,
        GCS_BUCKET_NAME=gcs_bucket,
        STORAGE_EMULATOR_HOST=gcs_emulator,
        MONGODB_URI=uri,
        MONGODB_DATABASE=database,
        REDIS_URL=redis_url,
        EMBEDDING_CHUNK_SIZE="2000",
    )


def expected_similar(db, sample: int) -> dict[str, tuple[list[str], dict[str, float]]]:
    """For every ``sample``-th movie: its 10 nearest neighbours by brute force (float64), and every score."""
    movies = sorted(db.movies.find({}, {"embedding": 1}), key=lambda d: str(d["_id"]))
    ids = np.array([str(d["_id"]) for d in movies])
    vectors = np.array([d["embedding"] for d in movies], dtype=np.float64)
    expected = {}
    for row in range(0, len(ids), sample):
        scores = vectors @ vectors[row]
        scores[row] = -np.inf
        order = np.lexsort((np.arange(len(ids)), -scores))[:10]
        expected[f"rec:item:{ids[row]}"] = (ids[order].tolist(), dict(zip(ids.tolist(), scores.tolist(), strict=True)))
    return expected


def seen_by(interactions: list[dict], user: str) -> set[str]:
    return {doc["movieId"] for doc in interactions if doc["userId"] == user}


def expected_user_lists(interactions: list[dict], movies: dict[int, dict]) -> dict[str, tuple[list[str], dict]]:
    """The API's definition, user by user, in float64: key → (the 10 best ids, every candidate's score)."""
    ids = sorted(str(doc["_id"]) for doc in movies.values())
    vectors = {str(doc["_id"]): np.asarray(doc["embedding"], dtype=np.float64) for doc in movies.values()}
    matrix = np.array([vectors[i] for i in ids])
    by_user: dict[str, list[dict]] = {}
    for doc in interactions:
        by_user.setdefault(doc["userId"], []).append(doc)
    expected = {}
    for user, docs in by_user.items():
        likes = sorted(
            (d for d in docs if d["type"] == "rate" and d["value"] >= 4.0),
            key=lambda d: (-d["timestamp"].timestamp(), d["movieId"]),
        )[:50]
        liked = list(dict.fromkeys(d["movieId"] for d in likes))
        if not liked:
            continue
        profile = np.mean([vectors[m] for m in liked], axis=0)
        profile /= np.linalg.norm(profile)
        scores = dict(zip(ids, (matrix @ profile).tolist(), strict=True))
        seen = {d["movieId"] for d in docs}
        best = sorted((m for m in ids if m not in seen), key=lambda m: (-scores[m], m))[:10]
        expected[f"rec:user:{user}"] = (best, scores)
    return expected


def test_full_pipeline_then_reruns_change_nothing(e2e_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    summary = build(DailyRun(date=RUN_DATE))
    # "best" trains the collaborative model (checked below: it measured better)
    assert families(summary["completed"]) == all_tasks(EmbeddingChunk=5, SimilarMoviesBlock=5, TrainCollaborative=1)

    settings = get_settings()
    db = mongo.open_mongo(settings)
    bucket = open_bucket(settings)

    # The zip is in the bucket, byte for byte.
    assert bucket.md5_hex("datasets/ml-latest-small.zip") == "31a303aabbc519bd33d025e44d6c2570"

    # movies: 9,742, contract shapes.
    movies = {doc["movieId_ml"]: doc for doc in db.movies.find()}
    assert len(movies) == 9742
    toy_story = movies[1]
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["imdbId"] == "0114709" and toy_story["tmdbId"] == "862"
    assert toy_story["year"] == 1995 and type(toy_story["year"]) is int
    assert toy_story["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy_story["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    vectors = np.array([doc["embedding"] for doc in movies.values()])
    assert vectors.shape == (9742, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert all(isinstance(doc["genres"], list) for doc in movies.values())
    assert all(doc["year"] is None or type(doc["year"]) is int for doc in movies.values())
    assert sum(doc["genres"] == [] for doc in movies.values()) == 34  # "(no genres listed)"
    assert all(doc["tmdbId"] is None or isinstance(doc["tmdbId"], str) for doc in movies.values())
    assert any(doc["tmdbId"] is None for doc in movies.values())  # links.csv has blank tmdbIds
    # Similar movies are near: Toy Story 2 is closer to Toy Story than a horror film is.
    toy_story_2 = np.array(movies[3114]["embedding"])
    exorcist = np.array(movies[1997]["embedding"])
    assert np.dot(toy_story["embedding"], toy_story_2) > np.dot(toy_story["embedding"], exorcist)

    # movie_id_map.json covers every movie and matches movies._id.
    id_map = bucket.read_json("datasets/ml-latest-small/movie_id_map.json")
    assert id_map == {str(m): str(doc["_id"]) for m, doc in movies.items()}

    # interactions: 100,836, contract shapes.
    interactions = list(db.interactions.find())
    assert len(interactions) == 100836
    movie_ids = {str(doc["_id"]) for doc in movies.values()}
    assert all(doc["movieId"] in movie_ids for doc in interactions)
    assert all(doc["type"] == "rate" and isinstance(doc["value"], float) for doc in interactions)
    assert {doc["userId"] for doc in interactions} == {str(u) for u in range(1, 611)}
    first = db.interactions.find_one({"userId": "1", "movieId": id_map["1"]})
    assert first["value"] == 4.0
    assert first["timestamp"].replace(tzinfo=dt.UTC) == dt.datetime(2000, 7, 30, 18, 45, 3, tzinfo=dt.UTC)
    assert set(db.interactions.index_information()) >= {"user_type_time_value", "movieId", "type_time_value", "time"}
    assert db.movies.index_information()["movieId_ml_unique"]["unique"]

    # Redis holds the contract's popular list with its TTL.
    client = redis.Redis.from_url(e2e_env["REDIS_URL"])
    published = json.loads(client.get(POPULAR_REDIS_KEY))
    assert published == expected_popular(id_map, RUN_DATE)
    assert 1 <= len(published) <= 50
    assert 86_000 < client.ttl(POPULAR_REDIS_KEY) <= 86_400

    # Similar movies: every movie has its key, with the exact neighbours (a slice checked by brute
    # force, ties within float error allowed to swap), and a TTL longer than a day.
    similar_keys = {key.decode() for key in client.scan_iter("rec:item:*", count=1000)}
    assert similar_keys == {f"rec:item:{doc['_id']}" for doc in movies.values()}
    for key, (ids, score) in expected_similar(db, 97).items():
        got = json.loads(client.get(key))
        assert len(got) == 10 and key.removeprefix("rec:item:") not in got
        # The same neighbours in the same order; where float32 and float64 disagree, only on a near-tie.
        np.testing.assert_allclose([score[i] for i in got], [score[i] for i in ids], atol=1e-6, err_msg=key)
    assert 86_400 < client.ttl(next(iter(similar_keys))) <= 90_000

    # The quality stage measured the methods on its holdout; "best" (the default) published the collaborative
    # lists, which find at least twice the held-out likes of the popular list and five times the content lists'.
    figures = bucket.read_json("datasets/ml-latest-small/markers/quality.json")["figures"]
    collaborative_rate = figures["collaborative"]["hit_rate"]
    assert (
        collaborative_rate >= 2 * figures["popular"]["hit_rate"]
        and collaborative_rate >= 5 * figures["content"]["hit_rate"]
    )
    user_marker = bucket.read_json(f"datasets/ml-latest-small/markers/user_recs/{RUN_DATE.isoformat()}.json")
    assert user_marker["method"]["method"] == "collaborative"
    assert user_marker["method"]["params"] == figures["collaborative"]["params"]
    embeddings = {str(doc["_id"]): np.asarray(doc["embedding"]) for doc in movies.values()}
    params = collaborative.Params.from_dict(figures["collaborative"]["params"])
    expected_collaborative = collaborative_brute_force(interactions, embeddings, 10, params)
    user_keys = {key.decode() for key in client.scan_iter("rec:user:*", count=1000)}
    assert user_keys == set(expected_collaborative) and len(user_keys) == 609
    for key, (ids, score) in expected_collaborative.items():
        got = json.loads(client.get(key))
        assert len(got) == 10 and not set(got) & seen_by(interactions, key.removeprefix("rec:user:"))
        np.testing.assert_allclose([score[i] for i in got], [score[i] for i in ids], atol=1e-5, err_msg=key)
    assert 86_400 < client.ttl(next(iter(user_keys))) <= 90_000

    # The API's content definition, switched to: every MovieLens user with a liked movie (609 of 610) has
    # the exact list. (Settings read again; the in-process MongoDB and its data kept.)
    monkeypatch.setenv("USER_RECS_METHOD", "content")
    get_settings.cache_clear()
    luigi.task_register.Register.clear_instance_cache()
    assert families(build(DailyRun(date=RUN_DATE))["completed"]) == [
        "DailyRun", "UpdateUserRecommendations", "UserRecsPartition"
    ]  # fmt: skip
    user_keys = {key.decode() for key in client.scan_iter("rec:user:*", count=1000)}
    expected_users = expected_user_lists(interactions, movies)
    assert user_keys == set(expected_users) and len(user_keys) == 609
    for key, (ids, score) in expected_users.items():
        got = json.loads(client.get(key))
        assert len(got) == 10 and not set(got) & seen_by(interactions, key.removeprefix("rec:user:"))
        np.testing.assert_allclose([score[i] for i in got], [score[i] for i in ids], atol=1e-6, err_msg=key)

    # A rerun with everything complete runs nothing.
    snapshot_movies = {m: doc["_id"] for m, doc in movies.items()}
    summary = build(DailyRun(date=RUN_DATE))
    assert summary["completed"] == set()
    assert families(summary["already_done"]) == ["DailyRun"]

    # Markers gone (say, a bucket cleanup): the stages rerun and write nothing new.
    for key in bucket.list("datasets/ml-latest-small/markers/"):
        bucket.delete(key)
    summary = build(UpdatePopular(date=RUN_DATE))
    # (LoadMovies requires the quality gate, whose marker went too: measured again, the same figures)
    assert families(summary["completed"]) == [
        "InteractionsChunk", "LoadInteractions", "LoadMovies", "MeasureQuality", "UpdatePopular"
    ]  # fmt: skip
    movie_marker = bucket.read_json("datasets/ml-latest-small/markers/load_movies.json")
    assert (movie_marker["inserted"], movie_marker["updated"], movie_marker["unchanged"]) == (0, 0, 9742)
    interaction_marker = bucket.read_json("datasets/ml-latest-small/markers/load_interactions.json")
    assert (interaction_marker["inserted"], interaction_marker["already_present"]) == (0, 100836)
    assert {doc["movieId_ml"]: doc["_id"] for doc in db.movies.find({}, {"movieId_ml": 1})} == snapshot_movies
    assert db.interactions.count_documents({}) == 100836
    assert json.loads(client.get(POPULAR_REDIS_KEY)) == published

    # An API-written interaction survives reruns; a run for another date counts the window it asks for.
    api_interaction = {
        "_id": ObjectId(),
        "userId": "1",
        "movieId": id_map["1"],
        "type": "like",
        "value": 1.0,
        "timestamp": dt.datetime(2018, 1, 1, tzinfo=dt.UTC),
    }
    db.interactions.insert_one(api_interaction)
    summary = build(UpdatePopular(date=EARLIER_DATE))
    assert families(summary["completed"]) == ["UpdatePopular"]
    backfill = bucket.read_json(f"datasets/ml-latest-small/markers/popular/{EARLIER_DATE.isoformat()}.json")
    assert backfill["movie_ids"] == expected_popular(id_map, EARLIER_DATE) and backfill["redis"] == "not_live"
    assert json.loads(client.get(POPULAR_REDIS_KEY)) == published  # the newest date's list stays live
    assert db.interactions.count_documents({}) == 100837
    assert db.interactions.find_one({"_id": api_interaction["_id"]})["type"] == "like"

    # A marker must not lie: interactions dropped after a success are noticed and reloaded.
    db.interactions.drop()
    summary = build(UpdatePopular(date=RUN_DATE + dt.timedelta(days=1)))
    assert families(summary["completed"]) == ["InteractionsChunk", "LoadInteractions", "UpdatePopular"]
    assert db.interactions.count_documents({"source": "movielens"}) == 100836
