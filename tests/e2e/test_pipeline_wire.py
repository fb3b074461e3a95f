"""The whole DAG over the real MongoDB wire protocol, on a slice of the real data.

MongoDB is ``wire_mongo``: the mongoeco server (real pymongo, real BSON), or a real MongoDB
when ``MLREC_TEST_MONGODB_URI`` is set. The bucket is a local folder (no cloud at all)
and the zip comes from a ``file://`` URL.
"""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pymongo
import pytest
from bson import ObjectId

from mlrec_luigi import UpdatePopular, cache
from mlrec_luigi.settings import POPULAR_REDIS_KEY
from mlrec_luigi.storage import LocalBucket
from tests.support.processes import MOVIELENS_ZIP
from tests.support.runs import build
from tests.support.zips import real_slice

MOVIES, RATINGS = 120, 1500


@pytest.fixture
def sliced_zip(tmp_path: Path) -> Path:
    return real_slice(MOVIELENS_ZIP, tmp_path / "ml-slice.zip", MOVIES, RATINGS)


def test_pipeline_over_the_wire_protocol(
    pipeline_env: Callable[..., dict[str, str]], sliced_zip: Path, wire_mongo: tuple[str, str], redis_url: str
) -> None:
    uri, database = wire_mongo
    env = pipeline_env(
        MOVIELENS_URL=sliced_zip.as_uri(),
        MONGODB_URI=uri,
        MONGODB_DATABASE=database,
        REDIS_URL=redis_url,
        EMBEDDING_CHUNK_SIZE="50",
    )
    build(UpdatePopular(date=dt.date(2026, 11, 24)))

    client = pymongo.MongoClient(uri, tz_aware=True)
    db = client[database]
    movies = {doc["movieId_ml"]: doc for doc in db.movies.find()}
    assert len(movies) == MOVIES
    assert movies[1]["year"] == 1995 and movies[1]["imdbId"] == "0114709" and movies[1]["tmdbId"] == "862"
    assert len(movies[1]["embedding"]) == 384 and all(type(x) is float for x in movies[1]["embedding"])
    assert db.interactions.count_documents({}) == RATINGS
    doc = db.interactions.find_one({"userId": "1"})
    assert isinstance(doc["timestamp"], dt.datetime) and doc["timestamp"].tzinfo is not None
    assert ObjectId.is_valid(doc["movieId"]) and db.movies.find_one({"_id": ObjectId(doc["movieId"])})

    bucket = LocalBucket(Path(env["LOCAL_BUCKET_DIR"]))
    assert bucket.exists("datasets/ml-slice.zip")
    chunks = sorted(p.name for p in (Path(env["LOCAL_BUCKET_DIR"]) / "datasets/ml-slice/embeddings").rglob("*.npy"))
    assert chunks == ["chunk-00000.npy", "chunk-00001.npy", "chunk-00002.npy"]
    id_map = bucket.read_json("datasets/ml-slice/movie_id_map.json")
    assert id_map == {str(m): str(d["_id"]) for m, d in movies.items()}

    with zipfile.ZipFile(sliced_zip) as archive:
        ratings = pd.read_csv(archive.open("ml-latest-small/ratings.csv"))
    end = ratings["timestamp"].max()
    window = ratings[(ratings["timestamp"] > end - 7 * 86400) & (ratings["rating"] >= 4.0)]
    counts = window.groupby("movieId").size()
    ranked = sorted(((-n, id_map[str(m)]) for m, n in counts.items()))
    assert cache.read_list(redis_url, POPULAR_REDIS_KEY) == [hex_id for _, hex_id in ranked][:50]

    # Markers gone: LoadMovies and the interaction chunks rerun over the wire and write nothing new.
    shutil.rmtree(Path(env["LOCAL_BUCKET_DIR"]) / "datasets/ml-slice/markers")
    ids_before = {m: d["_id"] for m, d in movies.items()}
    build(UpdatePopular(date=dt.date(2026, 11, 24)))
    assert {d["movieId_ml"]: d["_id"] for d in db.movies.find({}, {"movieId_ml": 1})} == ids_before
    assert db.interactions.count_documents({}) == RATINGS
    assert bucket.read_json("datasets/ml-slice/markers/load_interactions.json")["already_present"] == RATINGS
    assert bucket.read_json("datasets/ml-slice/markers/load_movies.json")["unchanged"] == MOVIES
    client.close()
