"""The MongoDB document shapes of ``../shared/CONTRACT.md``, built from plain values.

Interactions from MovieLens get a deterministic ObjectId: 4 bytes of the rating's
timestamp (so ``_id`` still sorts by time, like the API's own ObjectIds), 4 bytes of the
userId, 4 bytes of the movieId. A MovieLens rating is unique per (user, movie, time),
so a rerun, or a rerun after a crash, produces the same ``_id`` and can never insert a
duplicate, while the API's interactions (random ObjectIds) are never touched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from bson import ObjectId

INTERACTION_SOURCE = "movielens"
RATE = "rate"


def movie_document(movie: Mapping[str, Any], embedding: Sequence[float], model_name: str) -> dict[str, Any]:
    """The fields of one ``movies`` document (``_id`` is assigned by the upsert)."""
    year = movie["year"]
    return {
        "movieId_ml": int(movie["movieId"]),
        "title": str(movie["title"]),
        "genres": list(movie["genres"]),
        "year": None if year is None or pd.isna(year) else int(year),
        "imdbId": movie["imdbId"],
        "tmdbId": movie["tmdbId"],
        "embedding": [float(x) for x in embedding],
        "embedding_model": model_name,
    }


def interaction_ids(timestamps: np.ndarray, user_ids: np.ndarray, movie_ids: np.ndarray) -> list[ObjectId]:
    """Deterministic ObjectIds for MovieLens ratings (see the module docstring)."""
    packed = np.empty((len(timestamps), 3), dtype=">u4")
    packed[:, 0] = timestamps
    packed[:, 1] = user_ids
    packed[:, 2] = movie_ids
    raw = packed.tobytes()
    return [ObjectId(raw[offset : offset + 12]) for offset in range(0, len(raw), 12)]


def interaction_documents(ratings: pd.DataFrame, movie_ids: Mapping[int, str]) -> tuple[list[dict[str, Any]], int]:
    """``interactions`` documents for valid ratings whose movie is known.

    Args:
        ratings: columns userId, movieId (MovieLens ids), rating, timestamp (epoch s).
        movie_ids: MovieLens movieId → the 24-hex ``movies._id``.

    Returns:
        The documents, and how many ratings were skipped because their movie is unknown.
    """
    hex_ids = ratings["movieId"].map(movie_ids)
    known = hex_ids.notna().to_numpy()
    rows = ratings[known]
    hex_ids = hex_ids[known]
    timestamps = rows["timestamp"].to_numpy()
    ids = interaction_ids(timestamps, rows["userId"].to_numpy(), rows["movieId"].to_numpy())
    times = pd.to_datetime(timestamps, unit="s", utc=True).to_pydatetime()
    documents = [
        {
            "_id": oid,
            "userId": user,
            "movieId": movie,
            "type": RATE,
            "value": value,
            "timestamp": time,
            "source": INTERACTION_SOURCE,
        }
        for oid, user, movie, value, time in zip(
            ids,
            rows["userId"].astype(str).tolist(),
            hex_ids.tolist(),
            rows["rating"].astype(float).tolist(),
            times,
            strict=True,
        )
    ]
    return documents, int((~known).sum())


def utc(timestamp: dt.datetime) -> dt.datetime:
    """``timestamp`` as an aware UTC datetime (MongoDB hands back naive UTC)."""
    return timestamp.replace(tzinfo=dt.UTC) if timestamp.tzinfo is None else timestamp.astimezone(dt.UTC)
