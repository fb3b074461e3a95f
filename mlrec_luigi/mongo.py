"""MongoDB: the client, the indexes the API's queries need, and the bulk writes.

The only module that talks to MongoDB. ``mongomock://`` gives an in-process, in-memory
stand-in (nothing survives the process) so the pipeline can be tried with no server.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from mlrec_luigi.settings import redact

DUPLICATE_KEY = 11000
SERVER_SELECTION_TIMEOUT_MS = 10_000
MOVIE_BATCH = 500
_MISSING = object()

MOVIE_INDEXES = [
    IndexModel([("movieId_ml", ASCENDING)], unique=True, name="movieId_ml_unique"),
    IndexModel([("genres", ASCENDING)], name="genres"),
    IndexModel([("title", ASCENDING)], name="title"),
]
INTERACTION_INDEXES = [
    # {userId, type: "rate", value >= 4} sorted by timestamp desc; also serves {userId}.
    IndexModel(
        [("userId", ASCENDING), ("type", ASCENDING), ("timestamp", DESCENDING), ("value", ASCENDING)],
        name="user_type_time_value",
    ),
    IndexModel([("movieId", ASCENDING)], name="movieId"),
    # The popularity window: type "rate", timestamp in range, value >= threshold.
    IndexModel([("type", ASCENDING), ("timestamp", DESCENDING), ("value", ASCENDING)], name="type_time_value"),
    # The newest interaction of any type ends the popularity window.
    IndexModel([("timestamp", DESCENDING)], name="time"),
]


class MongoUnavailable(RuntimeError):
    """MongoDB cannot be reached; the message names the (redacted) URI."""


@functools.cache
def connect(uri: str) -> pymongo.MongoClient:
    """One client per URI and process, checked with a ping so a bad URI fails fast.

    Raises:
        MongoUnavailable: the server does not answer within 10 s or the URI is invalid.
    """
    if uri.startswith("mongomock://"):
        return _mongomock_client()
    try:
        options: dict[str, Any] = {"tz_aware": True, "appname": "mlrec-luigi"}
        if "serverselectiontimeoutms" not in uri.lower():  # the URI's own option wins
            options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
        client: pymongo.MongoClient = pymongo.MongoClient(uri, **options)
        client.admin.command("ping")
    except (PyMongoError, ValueError) as error:
        raise MongoUnavailable(f"MONGODB_URI {redact(uri)} is unusable: {redact(str(error))}") from None
    return client


def _mongomock_client() -> pymongo.MongoClient:
    import mongomock
    from mongomock.collection import BulkOperationBuilder

    # mongomock 4.3 predates pymongo 4.11's `sort` argument of UpdateOne/ReplaceOne.
    for method in ("add_update", "add_replace"):
        original = getattr(BulkOperationBuilder, method)
        if not getattr(original, "_accepts_sort", False):

            def accepting_sort(self: Any, *args: Any, _original: Any = original, sort: Any = None, **kw: Any) -> Any:
                return _original(self, *args, **kw)

            accepting_sort._accepts_sort = True  # type: ignore[attr-defined]
            setattr(BulkOperationBuilder, method, accepting_sort)
    return mongomock.MongoClient(tz_aware=True)  # type: ignore[return-value]


def database(uri: str, name: str) -> Database:
    """The pipeline's database."""
    return connect(uri)[name]


def ensure_indexes(collection: Collection, indexes: Sequence[IndexModel]) -> None:
    """Create the indexes (a no-op for those that exist)."""
    collection.create_indexes(list(indexes))


@dataclass(frozen=True)
class UpsertCounts:
    """What an upsert of movies did."""

    inserted: int
    updated: int
    unchanged: int


def upsert_movies(collection: Collection, documents: Iterable[dict[str, Any]]) -> UpsertCounts:
    """Upsert movies by ``movieId_ml``: existing ``_id``s are kept, nothing is deleted.

    Reads the stored movies first, then inserts the new ones (with fresh ObjectIds) and
    ``$set``s only the fields that differ on the others, so an unchanged rerun writes
    nothing. A concurrent run that inserts the same movie first wins on the unique index;
    the loser's movie is then updated instead, under the winner's ``_id``.
    """
    stored = {doc["movieId_ml"]: doc for doc in collection.find({"movieId_ml": {"$exists": True}})}
    inserted = updated = unchanged = 0
    new: list[dict[str, Any]] = []
    changes: list[UpdateOne] = []
    for document in documents:
        current = stored.get(document["movieId_ml"])
        if current is None:
            new.append({"_id": ObjectId(), **document})
            continue
        changed = {name: value for name, value in document.items() if current.get(name, _MISSING) != value}
        if changed:
            changes.append(UpdateOne({"_id": current["_id"]}, {"$set": changed}))
        else:
            unchanged += 1
    for start in range(0, len(new), MOVIE_BATCH):
        batch = new[start : start + MOVIE_BATCH]
        added, lost_races = insert_new(collection, batch)
        inserted += added
        if lost_races:
            winners = {
                doc["movieId_ml"]: doc["_id"]
                for doc in collection.find({"movieId_ml": {"$in": [d["movieId_ml"] for d in batch]}}, {"movieId_ml": 1})
            }
            changes.extend(
                UpdateOne({"_id": winners[d["movieId_ml"]]}, {"$set": {k: v for k, v in d.items() if k != "_id"}})
                for d in batch
                if winners[d["movieId_ml"]] != d["_id"]
            )
    for start in range(0, len(changes), MOVIE_BATCH):
        updated += collection.bulk_write(changes[start : start + MOVIE_BATCH], ordered=False).modified_count
    return UpsertCounts(inserted, updated, unchanged)


def movie_id_map(collection: Collection) -> dict[int, str]:
    """MovieLens movieId → the 24-hex ``movies._id``, for every movie in the collection."""
    cursor = collection.find({"movieId_ml": {"$exists": True}}, {"movieId_ml": 1})
    return {int(doc["movieId_ml"]): str(doc["_id"]) for doc in cursor}


def insert_new(collection: Collection, documents: list[dict[str, Any]]) -> tuple[int, int]:
    """Insert documents with deterministic ``_id``s; those already stored are left alone.

    Returns:
        (inserted, already present).

    Raises:
        BulkWriteError: for any write error other than a duplicate key.
    """
    if not documents:
        return 0, 0
    try:
        result = collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        errors = error.details["writeErrors"]
        if any(e["code"] != DUPLICATE_KEY for e in errors):
            raise
        return error.details["nInserted"], len(errors)
    return len(result.inserted_ids), 0


def estimated_count(collection: Collection) -> int:
    """The collection's document count from metadata (cheap, no scan)."""
    return collection.estimated_document_count()
