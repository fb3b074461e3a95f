"""MongoDB: the client, the indexes the API's queries need, and the bulk writes.

The only module that talks to MongoDB. ``mongomock://`` gives an in-process, in-memory
stand-in (nothing survives the process) so the pipeline can be tried with no server.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
import numpy as np
import pymongo
from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from mlrec_luigi.documents import MovieIds, cyclic_gc_paused, interaction_bson
from mlrec_luigi.settings import SettingsError, redact

DUPLICATE_KEY = 11000
SERVER_SELECTION_TIMEOUT_MS = 10_000
MOVIE_BATCH = 500
_MISSING = object()
_MOCK_CODEC: CodecOptions = CodecOptions(tz_aware=True)

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


def connect(uri: str) -> pymongo.MongoClient:
    """One client per URI and process, checked with a ping so a bad URI fails fast.

    Keyed by process id too: Luigi's ``--workers N`` forks, and a client must not cross a fork.

    Raises:
        MongoUnavailable: the server does not answer within 10 s or the URI is invalid.
    """
    if uri.startswith("mongomock://"):
        client, created_in = _mongomock_client()
        if created_in != os.getpid():
            raise SettingsError(
                "MONGODB_URI=mongomock:// keeps its data inside one process, and this task runs in a "
                "worker process of its own: run with --workers 1, or give a real MongoDB"
            )
        return client
    return _connect(uri, os.getpid())


def forget_clients() -> None:
    """Drop the cached clients (and mongomock's data): for tests and benchmarks that change settings."""
    _connect.cache_clear()
    _mongomock_client.cache_clear()


@functools.cache
def _connect(uri: str, pid: int) -> pymongo.MongoClient:
    try:
        options: dict[str, Any] = {"tz_aware": True, "appname": "mlrec-luigi"}
        if "serverselectiontimeoutms" not in uri.lower():  # the URI's own option wins
            options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
        client: pymongo.MongoClient = pymongo.MongoClient(uri, **options)
        client.admin.command("ping")
    except (PyMongoError, ValueError) as error:
        raise MongoUnavailable(f"MONGODB_URI {redact(uri)} is unusable: {redact(str(error))}") from None
    return client


@functools.cache
def _mongomock_client() -> tuple[pymongo.MongoClient, int]:
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
    return mongomock.MongoClient(tz_aware=True), os.getpid()  # type: ignore[return-value]


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


def insert_new(collection: Collection, documents: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """Insert documents with deterministic ``_id``s; those already stored are left alone.

    Already-encoded documents (:class:`RawBSONDocument`) go out as one ``insert`` command:
    the same message ``insert_many`` sends, without its per-document Python bookkeeping,
    which costs more than the encoding itself.

    Returns:
        (inserted, already present).

    Raises:
        BulkWriteError: for any write error other than a duplicate key.
    """
    if not documents:
        return 0, 0
    if not isinstance(collection, Collection):  # mongomock stores dicts, not BSON
        documents = [bson.decode(d.raw, _MOCK_CODEC) if isinstance(d, RawBSONDocument) else d for d in documents]
    elif isinstance(documents[0], RawBSONDocument):
        reply = collection.database.command({"insert": collection.name, "documents": documents, "ordered": False})
        return _inserted_and_duplicates({"nInserted": reply["n"], "writeErrors": reply.get("writeErrors", [])})
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        return _inserted_and_duplicates(error.details)
    return len(documents), 0


def _inserted_and_duplicates(details: Mapping[str, Any]) -> tuple[int, int]:
    errors = details["writeErrors"]
    if any(e["code"] != DUPLICATE_KEY for e in errors):
        raise BulkWriteError(dict(details))
    return details["nInserted"], len(errors)


@dataclass(frozen=True)
class InsertCounts:
    """What a load of interactions did."""

    inserted: int
    already_present: int
    unknown_movie: int


def insert_interactions(
    collection: Collection,
    records: np.ndarray,
    movie_ids: MovieIds,
    batch_rows: int,
    on_batch: Callable[[int], None] | None = None,
) -> InsertCounts:
    """Insert the interactions of ``records`` (:data:`~mlrec_luigi.documents.RATING_RECORD`) not yet stored.

    Batches of ``batch_rows`` are encoded to BSON and sent one at a time, so memory stays
    bounded; ``on_batch(rows_done)`` is called after each. Ratings of movies missing from
    ``movie_ids`` are skipped and counted.
    """
    inserted = present = unknown = 0
    for start in range(0, len(records), batch_rows):
        with cyclic_gc_paused():
            documents, skipped = interaction_bson(records[start : start + batch_rows], movie_ids)
            added, existing = insert_new(collection, documents)
            del documents
        inserted, present, unknown = inserted + added, present + existing, unknown + skipped
        if on_batch:
            on_batch(min(start + batch_rows, len(records)))
    return InsertCounts(inserted, present, unknown)


def estimated_count(collection: Collection) -> int:
    """The collection's document count from metadata (cheap, no scan)."""
    return collection.estimated_document_count()
