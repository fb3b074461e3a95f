"""Users in partitions: which partition a user is in, the shuffle of the ratings and API documents into them.

Plain numpy, no Luigi. A user's partition is a stable hash of their ``userId`` as text (the same on
every machine and every run: blake2b, not Python's salted ``hash``), modulo the number of partitions.
Every interaction of a user, MovieLens or API, lands in the user's partition, so a partition's lists
are computed from its own pieces alone: its memory is bounded by its users, not by the data set.

The API's documents are kept as :data:`API_RECORD` rows: what the user lists read of a document
(its user, the movie it names as the API reads it, whether it is a like, its time), and a hash of every
field (the fingerprint of a user's API interactions is the sum of theirs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

import numpy as np
from bson import Decimal128, ObjectId

from mlrec_luigi.errors import Damaged
from mlrec_luigi.npy import from_npy, to_npy

LIKED_MIN_VALUE = 4.0  # a like, as the API defines it: a rate of 4.0 or more (the user lists read it from here)


def user_hashes(users: Sequence[str]) -> np.ndarray:
    """uint64 per userId (as text): blake2b's first 8 bytes, the same everywhere."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little") for u in users),
        dtype=np.uint64,
        count=len(users),
    )


def partition_of(users: Sequence[str], partitions: int) -> np.ndarray:
    """int32 per userId: its partition among ``partitions``."""
    return (user_hashes(users) % np.uint64(partitions)).astype(np.int32)


def split_ratings(part: np.ndarray, partitions: int) -> list[np.ndarray]:
    """A ratings part (``RATING_RECORD``) as one piece per partition, each in the part's order."""
    distinct, inverse = np.unique(part["userId"], return_inverse=True)
    of_row = partition_of([str(u) for u in distinct.tolist()], partitions)[inverse]
    order = np.argsort(of_row, kind="stable")
    bounds = np.searchsorted(of_row[order], np.arange(partitions + 1))
    return [part[order[bounds[p] : bounds[p + 1]]] for p in range(partitions)]


def number(value: object) -> float:
    """``value`` as MongoDB's ``value >= 4.0`` compares it: only numbers (int, float, Int64, Decimal128)
    match; text (``"5"``), booleans and null never do, whatever they hold; NaN never likes."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal128):
        return float("-inf")
    result = float(value.to_decimal()) if isinstance(value, Decimal128) else float(value)
    return result if result == result else float("-inf")


def api_movie_id(value: object) -> str:
    """The movie an API interaction names, as the API reads it: what ``ObjectId.is_valid`` accepts (24 hex
    characters in either case, or a stored ObjectId) names the movie ``ObjectId`` names (as lowercase hex);
    anything else names no movie (neither liked nor seen), whatever its length."""
    if isinstance(value, str | bytes | ObjectId) and ObjectId.is_valid(value):
        return str(ObjectId(value))
    return f"invalid:{value!r}"  # never equal to a movie's id, still ordered for ties


def _micros(timestamp: object) -> int:
    if isinstance(timestamp, dt.datetime):
        aware = timestamp.replace(tzinfo=dt.UTC) if timestamp.tzinfo is None else timestamp
        return int(aware.timestamp() * 1_000_000)
    return 0


def payload_hash(doc: dict) -> int:
    """What identifies one API interaction for the fingerprints: every field read, as text, hashed."""
    payload = repr(sorted((key, str(value)) for key, value in doc.items())).encode()
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little")


def text_width(values: list[str]) -> int:
    """The bytes of the longest of ``values`` as UTF-8 (at least 1): the width of a fixed-width text field."""
    return max((len(v.encode()) for v in values), default=1) or 1


def api_records(docs: Sequence[dict]) -> np.ndarray:
    """The API's documents as ``API_RECORD``-shaped rows (text fields as wide as their longest value)."""
    users = [str(doc.get("userId")) for doc in docs]
    movies = [api_movie_id(doc.get("movieId")) for doc in docs]
    records = np.empty(len(docs), api_record_dtype(text_width(users), text_width(movies)))
    records["id"] = [str(doc.get("_id", "")).encode() for doc in docs]
    records["user"] = [u.encode() for u in users]
    records["movie"] = [m.encode() for m in movies]
    records["liked"] = [doc.get("type") == "rate" and number(doc.get("value")) >= LIKED_MIN_VALUE for doc in docs]
    records["time_us"] = [_micros(doc.get("timestamp")) for doc in docs]
    records["hash"] = [payload_hash(doc) for doc in docs]
    return records


def api_record_dtype(user_width: int, movie_width: int) -> np.dtype:
    return np.dtype([("id", "S24"), ("user", f"S{user_width}"), ("movie", f"S{movie_width}"), ("liked", "?"),
                     ("time_us", "<i8"), ("hash", "<u8")])  # fmt: skip


API_FIELDS = ("id", "user", "movie", "liked", "time_us", "hash")


def merged(kept: np.ndarray, read: np.ndarray) -> np.ndarray:
    """A piece of API records read before (``kept``) with the ones read since (``read``): one row per document
    (``id``), the newer read winning, ordered by id. The text fields widen to the wider of the two."""
    if not len(kept):
        return np.sort(read, order="id") if len(read) else read
    if not len(read):
        return kept
    dtype = api_record_dtype(max(kept.dtype["user"].itemsize, read.dtype["user"].itemsize),
                             max(kept.dtype["movie"].itemsize, read.dtype["movie"].itemsize))  # fmt: skip
    both = np.concatenate([read.astype(dtype), kept[~np.isin(kept["id"], read["id"])].astype(dtype)])
    return np.sort(both, order="id")


def split_api(records: np.ndarray, partitions: int) -> list[np.ndarray]:
    """API records as one piece per partition."""
    of_row = partition_of(np.char.decode(records["user"]).tolist(), partitions) if len(records) else np.zeros(0, int)
    return [records[of_row == p] for p in range(partitions)]


class PieceDamaged(Damaged):
    """A stored piece of a partition cannot be read; the message names it."""


def read_api_piece(data: bytes, label: str) -> np.ndarray:
    records = from_npy(data, label, PieceDamaged)
    if records.dtype.names != API_FIELDS:
        raise PieceDamaged(f"{label} is not a piece of API interactions")
    return records


def pack(records: np.ndarray) -> bytes:
    return to_npy(records)
