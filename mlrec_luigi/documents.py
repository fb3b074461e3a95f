"""The MongoDB document shapes of ``../shared/CONTRACT.md``, built from plain values.

Interactions from MovieLens get a deterministic ObjectId: 4 bytes of the rating's
timestamp (so ``_id`` still sorts by time, like the API's own ObjectIds), 4 bytes of the
userId, 4 bytes of the movieId. A MovieLens rating is unique per (user, movie, time),
so a rerun, or a rerun after a crash, produces the same ``_id`` and can never insert a
duplicate, while the API's interactions (random ObjectIds) are never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from bson import ObjectId
from bson.raw_bson import RawBSONDocument

INTERACTION_SOURCE = "movielens"
RATE = "rate"
# Which release and part of the ratings a MovieLens interaction came from
# (``<zip md5[:12]>-r<part rows>-p<part>``): the stored count of one part, or of one release,
# is then one index-served count, and a new release replaces exactly the documents of the old one.
PART_FIELD = "movielens_part"


def part_tag(source_md5: str, chunk_rows: int, index: int) -> str:
    """The ``movielens_part`` of the interactions loaded from one ratings part."""
    return f"{release_prefix(source_md5, chunk_rows)}{index:05d}"


def release_prefix(source_md5: str, chunk_rows: int) -> str:
    """What the ``movielens_part`` of every interaction of one release starts with."""
    return f"{source_md5[:12]}-r{chunk_rows}-p"


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
    raw = _object_id_bytes(timestamps, user_ids, movie_ids).tobytes()
    return [ObjectId(raw[offset : offset + 12]) for offset in range(0, len(raw), 12)]


def _object_id_bytes(timestamps: np.ndarray, user_ids: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    packed = np.empty((len(timestamps), 3), dtype=">u4")
    packed[:, 0] = timestamps
    packed[:, 1] = user_ids
    packed[:, 2] = movie_ids
    return packed.view(np.uint8)


class MovieIds:
    """MovieLens movieId → the 24-hex ``movies._id``, looked up for whole arrays at once."""

    def __init__(self, hex_ids: Mapping[int, str]) -> None:
        ml_ids = np.fromiter(hex_ids.keys(), dtype=np.int64, count=len(hex_ids))
        order = np.argsort(ml_ids)
        self._sorted = ml_ids[order]
        self._hex = np.array([hex_ids[int(m)] for m in self._sorted], dtype="S24")
        if len(self._hex) and int(np.char.str_len(self._hex).min()) != 24:
            raise ValueError("movie ids must be 24-hex strings")

    def lookup(self, movie_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the hex ids as ``S24``, a mask of the movieIds that are known)."""
        if not len(self._sorted):
            return np.zeros(len(movie_ids), dtype="S24"), np.zeros(len(movie_ids), dtype=bool)
        positions = np.minimum(np.searchsorted(self._sorted, movie_ids), len(self._sorted) - 1)
        return self._hex[positions], self._sorted[positions] == movie_ids


def _cstring_element(kind: int, name: str) -> bytes:
    return bytes([kind]) + name.encode() + b"\0"


def _string_element(name: str, value: str) -> bytes:
    encoded = value.encode()
    return _cstring_element(0x02, name) + (len(encoded) + 1).to_bytes(4, "little") + encoded + b"\0"


# The fields of an interaction document, in order; their BSON type bytes and name headers.
_ID = _cstring_element(0x07, "_id")
_USER = _cstring_element(0x02, "userId")
_MOVIE = _cstring_element(0x02, "movieId") + (25).to_bytes(4, "little")
_TYPE = _string_element("type", RATE)
_VALUE = _cstring_element(0x01, "value")
_TIMESTAMP = _cstring_element(0x09, "timestamp")
_SOURCE = _string_element("source", INTERACTION_SOURCE)


def interaction_bson(records: np.ndarray, movie_ids: MovieIds, part: str) -> tuple[list[RawBSONDocument], int]:
    """``interactions`` documents, encoded to BSON with numpy, for the ratings of known movies.

    Call it inside :func:`cyclic_gc_paused` for batches of many thousand ratings.

    The documents equal those a dict per rating would give, field for field (``_id``,
    ``userId``, ``movieId``, ``type``, ``value``, ``timestamp``, ``source``, ``movielens_part``); building
    them a column at a time rather than a dict at a time is what makes the load fast.

    Args:
        records: :data:`~mlrec_luigi.movielens.RATING_RECORD` rows.
        movie_ids: the lookup of ``movies._id`` by MovieLens movieId.
        part: the documents' ``movielens_part`` (:func:`part_tag`).

    Returns:
        The documents, and how many ratings were skipped because their movie is unknown.
    """
    hex_ids, known = movie_ids.lookup(records["movieId"])
    records, hex_ids = records[known], hex_ids[known]
    user_ids = records["userId"]
    widths = np.ones(len(records), dtype=np.int8)
    for power in range(1, 10):
        widths += user_ids >= 10**power
    documents: list[RawBSONDocument] = []
    for width in np.unique(widths).tolist():
        rows = widths == width
        documents.extend(_encode_same_width(records[rows], hex_ids[rows], width, part))
    return documents, int((~known).sum())


def _decimal_digits(numbers: np.ndarray, width: int) -> np.ndarray:
    """The ASCII decimal digits of numbers that all have ``width`` digits, one row each."""
    digits = np.empty((len(numbers), width), dtype=np.uint8)
    remaining = numbers.astype(np.uint32)
    for position in range(width - 1, -1, -1):
        digits[:, position] = remaining % 10 + ord("0")
        remaining //= 10
    return digits


def _encode_same_width(records: np.ndarray, hex_ids: np.ndarray, width: int, part: str) -> list[RawBSONDocument]:
    """Documents whose userId has ``width`` digits: all the same length, so one 2-D byte array."""
    tail = _SOURCE + _string_element(PART_FIELD, part) + b"\0"
    fields: list[tuple[bytes | np.ndarray, int]] = [
        (_ID, len(_ID)),
        (_object_id_bytes(records["timestamp"], records["userId"], records["movieId"]), 12),
        (_USER + (width + 1).to_bytes(4, "little"), len(_USER) + 4),
        (_decimal_digits(records["userId"], width), width),
        (b"\0" + _MOVIE, 1 + len(_MOVIE)),
        (hex_ids.view(np.uint8).reshape(-1, 24), 24),
        (b"\0" + _TYPE + _VALUE, 1 + len(_TYPE) + len(_VALUE)),
        (records["rating"].astype("<f8").view(np.uint8).reshape(-1, 8), 8),
        (_TIMESTAMP, len(_TIMESTAMP)),
        ((records["timestamp"].astype("<i8") * 1000).view(np.uint8).reshape(-1, 8), 8),
        (tail, len(tail)),
    ]
    size = 4 + sum(span for _, span in fields)  # the document's length prefix counts itself
    matrix = np.empty((len(records), size), dtype=np.uint8)
    column = 0
    for value, span in [(size.to_bytes(4, "little"), 4), *fields]:
        matrix[:, column : column + span] = np.frombuffer(value, dtype=np.uint8) if isinstance(value, bytes) else value
        column += span
    raw = matrix.tobytes()
    return [RawBSONDocument(raw[offset : offset + size]) for offset in range(0, len(raw), size)]


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cycle collector while a batch of documents is made, sent and dropped.

    Each RawBSONDocument holds only bytes and cannot form a cycle; without the pause the
    collector's passes over a batch (which find nothing) take a third of the encoding
    time. Drop the batch inside the block and it is never scanned at all.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def utc(timestamp: dt.datetime) -> dt.datetime:
    """``timestamp`` as an aware UTC datetime (MongoDB hands back naive UTC)."""
    return timestamp.replace(tzinfo=dt.UTC) if timestamp.tzinfo is None else timestamp.astimezone(dt.UTC)
