"""Exact nearest neighbours: blocks against brute force, ties by _id, and the stage on real services."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pymongo
import pytest
import redis

from mlrec_luigi import DailyRun, UpdateSimilarMovies, similar
from mlrec_luigi.storage import LocalBucket
from tests.support.runs import build, families
from tests.support.zips import MOVIES, small_zip


def brute_force(vectors: np.ndarray, k: int) -> list[list[int]]:
    """Every row's k best other rows by (score desc, row asc), the obvious way."""
    scores = vectors @ vectors.T
    return [
        sorted((j for j in range(len(vectors)) if j != i), key=lambda j, i=i: (-scores[i, j], j))[:k]
        for i in range(len(vectors))
    ]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1000])
def test_blocks_equal_brute_force_whatever_the_block(block_rows: int) -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng.normal(size=(150, 16)))
    rows = np.concatenate(
        [similar.compute_block(vectors, start, min(start + block_rows, 150), 10) for start in range(0, 150, block_rows)]
    )
    assert rows["neighbours"].tolist() == brute_force(vectors, 10)
    expected = np.sort(vectors @ vectors.T - 3 * np.eye(150), axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(rows["scores"], expected, atol=1e-6)


def test_ties_go_to_the_lower_id_even_across_the_partition_cut() -> None:
    # Rows 1..6 are the same vector: for row 0 every one ties; k=3 must take rows 1, 2, 3.
    base = unit(np.array([[1.0, 0.2], *[[1.0, 0.0]] * 6, [0.0, 1.0]]))
    rows = similar.compute_block(base, 0, len(base), 3)
    assert rows["neighbours"][0].tolist() == [1, 2, 3]
    assert rows["neighbours"][4].tolist() == [1, 2, 3]  # itself excluded, ties by row
    assert rows["neighbours"].tolist() == brute_force(base, 3)


def test_one_movie_has_no_neighbours_and_two_have_each_other() -> None:
    assert similar.compute_block(unit(np.ones((1, 4))), 0, 1, 0)["neighbours"].shape == (1, 0)
    assert similar.compute_block(unit(np.eye(2) + 0.1), 0, 2, 1)["neighbours"].tolist() == [[1], [0]]


def test_a_damaged_block_is_named() -> None:
    data = similar.pack_block(similar.compute_block(unit(np.eye(4) + 0.1), 0, 4, 2))
    assert similar.unpack_block(data, "b")["neighbours"].shape == (4, 2)
    with pytest.raises(similar.BlockDamaged, match=r"gs://x/block-00001\.npy is not a readable \.npy file"):
        similar.unpack_block(data[:100], "gs://x/block-00001.npy")


# --- the stage, on the real model, a real wire-protocol MongoDB and a real redis-server ----------

EXTRA = "".join(f"{100 + i},{title} ({1990 + i}),{genres}\n" for i, (title, genres) in enumerate(
    [("Toy Story 2", "Animation|Children|Comedy"), ("The Exorcist", "Horror|Thriller"), ("Heat", "Action|Crime"),
     ("Finding Nemo", "Animation|Children"), ("Alien", "Horror|Sci-Fi"), ("Casino", "Crime|Drama")]
))  # fmt: skip


@pytest.fixture
def similar_env(pipeline_env: Callable[..., dict[str, str]], wire_mongo, redis_url: str, tmp_path: Path, model):
    uri, database = wire_mongo
    zip_path = small_zip(tmp_path / "ml.zip", movies_csv=MOVIES + EXTRA)

    def configure(**env: str) -> LocalBucket:
        base = {
            "MOVIELENS_URL": zip_path.as_uri(),
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": database,
            "REDIS_URL": redis_url,
            "SIMILAR_MOVIES_TOP_N": "4",
            "SIMILAR_MOVIES_BLOCK_ROWS": "3",
            "POPULARITY_RECENT_DAYS": "10000",
        }
        values = pipeline_env(**{**base, **env})
        return LocalBucket(Path(values["LOCAL_BUCKET_DIR"]))

    return configure, pymongo.MongoClient(uri)[database], redis.Redis.from_url(redis_url)


def published(client: redis.Redis) -> dict[str, list[str]]:
    return {k.decode(): json.loads(client.get(k)) for k in client.scan_iter("rec:item:*")}


def expected_lists(db: pymongo.database.Database, k: int) -> dict[str, list[str]]:
    movies = sorted(db.movies.find({}, {"embedding": 1}), key=lambda d: str(d["_id"]))
    ids = [str(d["_id"]) for d in movies]
    vectors = np.array([d["embedding"] for d in movies], dtype=np.float32)
    return {f"rec:item:{ids[i]}": [ids[j] for j in row] for i, row in enumerate(brute_force(vectors, k))}


def test_every_movie_gets_its_exact_neighbours_with_the_ttl(similar_env) -> None:
    configure, db, client = similar_env
    bucket = configure()
    summary = build(UpdateSimilarMovies())
    assert families(summary["completed"]).count("SimilarMoviesBlock") == 4  # 10 movies, blocks of 3
    lists = published(client)
    assert len(lists) == db.movies.count_documents({}) == 10
    assert lists == expected_lists(db, 4)
    ids = {str(d["_id"]): d["title"] for d in db.movies.find()}
    toy_story = next(i for i, t in ids.items() if t == "Toy Story (1995)")
    assert ids[lists[f"rec:item:{toy_story}"][0]] == "Toy Story 2 (1990)"
    assert all(86_390 < client.ttl(key) <= 90_000 for key in lists)
    marker = bucket.read_json("datasets/ml/markers/similar_movies.json")
    assert (marker["movies"], marker["neighbours"], marker["redis"]) == (10, 4, "published")
    assert not build(UpdateSimilarMovies())["completed"]  # rerun: publishes nothing


def test_n_ttl_redis_loss_and_a_new_model_each_republish(similar_env, model, tmp_path: Path) -> None:
    configure, db, client = similar_env
    configure()
    build(UpdateSimilarMovies())
    configure(SIMILAR_MOVIES_TOP_N="2", SIMILAR_MOVIES_TTL_SECONDS="100000")
    assert "UpdateSimilarMovies" in families(build(UpdateSimilarMovies())["completed"])
    assert published(client) == expected_lists(db, 2)
    assert all(99_990 < client.ttl(key) <= 100_000 for key in published(client))
    client.flushall()  # a restart without persistence: the sampled keys are gone
    configure(SIMILAR_MOVIES_TOP_N="2", SIMILAR_MOVIES_TTL_SECONDS="100000")
    assert families(build(UpdateSimilarMovies())["completed"]) == ["UpdateSimilarMovies"]  # blocks are kept
    assert len(published(client)) == 10
    model.save(str(tmp_path / "other-model"))
    configure(HF_MODEL_NAME=str(tmp_path / "other-model"))
    summary = build(DailyRun(date=dt.date(2026, 11, 24)))
    assert {"LoadMovies", "SimilarMoviesBlock", "UpdateSimilarMovies", "UpdatePopular"} <= set(
        families(summary["completed"])
    )
    assert published(client) == expected_lists(db, 4)


def test_without_redis_the_lists_are_kept_in_the_bucket(similar_env) -> None:
    configure, _, client = similar_env
    bucket = configure(REDIS_URL="")
    build(UpdateSimilarMovies())
    assert bucket.read_json("datasets/ml/markers/similar_movies.json")["redis"] == "no_redis"
    assert len([key for key in bucket.list("datasets/ml/similar/") if "/block-" in key and key.endswith(".npy")]) == 4
    assert published(client) == {}


def test_a_new_id_map_for_the_same_zip_recomputes_the_blocks(similar_env) -> None:
    # A block's rows name movies by their place in the id map: its key must name the map, not only the zip.
    configure, db, client = similar_env
    bucket = configure()
    build(UpdateSimilarMovies())
    first_blocks = set(bucket.list("datasets/ml/similar/"))
    db.movies.drop()  # every movie gone, and the map with them: new _ids, a new map
    bucket.delete("datasets/ml/movie_id_map.json")
    client.flushall()
    configure()
    summary = build(UpdateSimilarMovies())
    assert families(summary["completed"]).count("SimilarMoviesBlock") == 4
    assert set(bucket.list("datasets/ml/similar/")) - first_blocks  # new keys, beside the old ones
    assert published(client) == expected_lists(db, 4)


@pytest.mark.parametrize("damage", ["evicted", "rewritten", "one-id-changed", "emptied"])
def test_every_key_is_checked_not_a_sample(similar_env, damage: str, tmp_path: Path) -> None:
    # Keys vanish one at a time (maxmemory evicts keys with a TTL first), and the API writes its own
    # sampled list under the same key on a miss: the check compares every value. 40 movies: more
    # keys than a sample of 16 would read.
    configure, db, client = similar_env
    more = "".join(f"{200 + i},Film number {i} ({1950 + i}),{'Drama' if i % 2 else 'Comedy'}\n" for i in range(30))
    zip_path = small_zip(tmp_path / "more.zip", movies_csv=MOVIES + EXTRA + more)
    configure = functools.partial(configure, MOVIELENS_URL=zip_path.as_uri())
    configure()
    build(UpdateSimilarMovies())
    lists = published(client)
    assert len(lists) == 40
    key = sorted(lists)[29]  # not one a sample of every (40 // 16)-th key reads
    if damage == "evicted":
        client.delete(key)
    elif damage == "rewritten":
        client.set(key, json.dumps(lists[key][::-1]), ex=86_400)  # the API's own list: other order
    elif damage == "one-id-changed":
        client.set(key, json.dumps([*lists[key][:-1], "0" * 24]), ex=86_400)
    else:
        client.set(key, "[]", ex=86_400)
    configure()
    assert families(build(UpdateSimilarMovies())["completed"]) == ["UpdateSimilarMovies"]  # blocks kept
    assert published(client) == lists == expected_lists(db, 4)
    configure()
    assert build(UpdateSimilarMovies())["completed"] == set()


@pytest.mark.parametrize("kind", ["distinct", "many-ties", "mostly-masked", "rounded"])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_the_grouped_selection_equals_sorting_every_row(kind: str, k: int) -> None:
    # Wide rows take the bound-then-select path (group maxima); 81 x 64 + 53 columns: a shorter last group.
    rng = np.random.default_rng(k)
    scores = rng.normal(size=(40, 5_237)).astype(np.float32)
    if kind == "many-ties":
        scores = rng.integers(0, 4, size=scores.shape).astype(np.float32)
    elif kind == "mostly-masked":
        scores[rng.random(scores.shape) < 0.998] = -np.inf  # some rows have fewer than k finite scores
    elif kind == "rounded":
        scores = np.round(scores, 1)
    assert scores.shape[1] >= 8 * similar.GROUP_COLUMNS * k  # the grouped path
    columns, values = similar.select_top_k(scores, k)
    for row in range(len(scores)):
        expected = sorted(range(scores.shape[1]), key=lambda c: (-scores[row, c], c))[:k]
        assert columns[row].tolist() == expected, (kind, row)
        np.testing.assert_array_equal(values[row], scores[row, expected])
