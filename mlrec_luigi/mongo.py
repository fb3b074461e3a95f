"""MongoDB: the client, the indexes the API's queries need, and the bulk writes.

The only module that talks to MongoDB. ``mongomock://`` gives an in-process, in-memory
stand-in (``standins.py``; kept in a file with ``?store=PATH``) so the pipeline can be tried with no server.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pymongo
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from mlrec_luigi import standins
from mlrec_luigi.documents import PART_FIELD, MovieIds, cyclic_gc_paused, interaction_bson
from mlrec_luigi.errors import Expected
from mlrec_luigi.logs import log_event
from mlrec_luigi.settings import Settings, redact

DUPLICATE_KEY = 11000
SERVER_SELECTION_TIMEOUT_MS = 5_000
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
    # Counting and replacing what one release or part of the ratings stored.
    IndexModel([(PART_FIELD, ASCENDING)], name=PART_FIELD),
]


class MongoUnavailable(Expected, RuntimeError):
    """MongoDB cannot be reached; the message names the (redacted) URI."""


def open_mongo(settings: Settings) -> Database:
    """The pipeline's database, as the settings name it (the try-out store when ``MONGODB_URI`` is unset).

    Raises:
        MongoUnavailable: the server does not answer within 5 s or refuses the URI.
    """
    uri = settings.mongodb_uri or ""
    if settings.mongodb_is_tryout:
        _warn_tryout(settings.tryout_store)
    return connect(uri)[settings.mongodb_database]


@functools.cache
def _warn_tryout(store: Path) -> None:
    log_event(
        logging.getLogger("mlrec_luigi"),
        f"MONGODB_URI is not set: using the try-out store {store} (an in-process MongoDB stand-in kept between "
        "runs; not for production). Set MONGODB_URI (environment, .env or MLREC_ENV_FILE) for a real MongoDB.",
        logging.WARNING,
        store=str(store),
    )


def connect(uri: str) -> pymongo.MongoClient:
    """One client per URI and process, checked with a ping so a bad URI fails fast.

    Keyed by process id too: Luigi's ``--workers N`` forks, and a client must not cross a fork.
    A failure is remembered too: every stage's completeness check asks, and an unreachable
    server must cost one timeout per command, not one per stage.

    Raises:
        MongoUnavailable: the server does not answer within 5 s or the URI is invalid.
    """
    if uri.startswith(standins.MONGOMOCK_SCHEME):
        return standins.mongomock_client(uri)
    client = _connect(uri, os.getpid())
    if isinstance(client, MongoUnavailable):
        raise MongoUnavailable(str(client))
    return client


def saved() -> None:
    """After a stage wrote: the try-out stand-in writes its store file (a real MongoDB has nothing to do)."""
    standins.save_mongomock()


def forget_clients() -> None:
    """Drop the cached clients (and mongomock's data): for tests and benchmarks that change settings."""
    _connect.cache_clear()
    standins.forget_mongomock()


@functools.cache
def _connect(uri: str, pid: int) -> pymongo.MongoClient | MongoUnavailable:
    try:
        options: dict[str, Any] = {"tz_aware": True, "appname": "mlrec-luigi"}
        if "serverselectiontimeoutms" not in uri.lower():  # the URI's own option wins
            options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
        client: pymongo.MongoClient = pymongo.MongoClient(uri, **options)
        client.admin.command("ping")
    except (PyMongoError, ValueError) as error:
        # The driver's text can quote pieces of a malformed URI (its password included):
        # only the error's kind goes out, with the redacted URI.
        reason = (
            _first_line(error) if isinstance(error, PyMongoError) and not _quotes_uri(error) else type(error).__name__
        )
        return MongoUnavailable(f"MONGODB_URI {redact(uri)} is unusable: {reason}")
    return client


def _first_line(error: Exception) -> str:
    """pymongo's reason without its topology dump (``…, Timeout: 5s, Topology Description: <…>``)."""
    return redact(str(error).split(", Timeout:")[0].split(" Topology Description:")[0].strip())


def _quotes_uri(error: Exception) -> bool:
    return isinstance(error, pymongo.errors.ConfigurationError | pymongo.errors.InvalidURI)


def ensure_indexes(collection: Collection, indexes: Sequence[IndexModel]) -> None:
    """Create the indexes (a no-op for those that exist)."""
    collection.create_indexes(list(indexes))


@dataclass(frozen=True)
class UpsertCounts:
    """What an upsert of movies did."""

    inserted: int
    updated: int
    unchanged: int


def upsert_movies(
    collection: Collection,
    documents: Iterable[dict[str, Any]],
    recorded_ids: Mapping[int, str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> UpsertCounts:
    """Upsert movies by ``movieId_ml``: existing ``_id``s are kept, nothing is deleted.

    A movie missing from the collection gets back the ``_id`` recorded for it in
    ``recorded_ids`` (the last ``movie_id_map.json``), so a movie deleted by hand and
    loaded again keeps the ``_id`` its interactions point to; a new movie gets a new one.

    Reads the stored movies first, then inserts the new ones (with fresh ObjectIds) and
    ``$set``s only the fields that differ on the others, so an unchanged rerun writes
    nothing. A concurrent run that inserts the same movie first wins on the unique index;
    the loser's movie is then updated instead, under the winner's ``_id``. ``on_progress(done, total)``
    is called after each batch written (the dashboard's progress).
    """
    stored = {doc["movieId_ml"]: doc for doc in collection.find({"movieId_ml": {"$exists": True}})}
    inserted = updated = unchanged = 0
    new: list[dict[str, Any]] = []
    changes: list[UpdateOne] = []
    for document in documents:
        current = stored.get(document["movieId_ml"])
        if current is None:
            recorded = (recorded_ids or {}).get(document["movieId_ml"])
            new.append({"_id": ObjectId(recorded) if recorded else ObjectId(), **document})
            continue
        changed = {name: value for name, value in document.items() if current.get(name, _MISSING) != value}
        if changed:
            changes.append(UpdateOne({"_id": current["_id"]}, {"$set": changed}))
        else:
            unchanged += 1
    total = len(new) + len(changes)
    for start in range(0, len(new), MOVIE_BATCH):
        if on_progress is not None:
            on_progress(start, total)
        batch = new[start : start + MOVIE_BATCH]
        added, lost_races = insert_new(collection, batch)
        inserted += added
        if lost_races:
            batch = [batch[i] for i in lost_races]
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
        if on_progress is not None:
            on_progress(len(new) + start, max(total, len(new) + len(changes)))
        updated += collection.bulk_write(changes[start : start + MOVIE_BATCH], ordered=False).modified_count
    return UpsertCounts(inserted, updated, unchanged)


def movie_id_map(collection: Collection) -> dict[int, str]:
    """MovieLens movieId → the 24-hex ``movies._id``, for every movie in the collection."""
    cursor = collection.find({"movieId_ml": {"$exists": True}}, {"movieId_ml": 1})
    return {int(doc["movieId_ml"]): str(doc["_id"]) for doc in cursor}


def insert_new(collection: Collection, documents: Sequence[Mapping[str, Any]]) -> tuple[int, list[int]]:
    """Insert documents with deterministic ``_id``s; those already stored are left alone.

    One unordered ``insert_many``: it carries the collection's write concern (the URI's
    ``w=majority``, say) and is retried once on a network error as a retryable write.
    Already-encoded documents (:class:`RawBSONDocument`) go out as they are.

    Returns:
        (how many were inserted, the positions in ``documents`` of those already stored).

    Raises:
        BulkWriteError: for any write error other than a duplicate key.
    """
    if not documents:
        return 0, []
    documents = standins.documents_for(collection, documents)
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        errors = error.details["writeErrors"]
        if any(e["code"] != DUPLICATE_KEY for e in errors):
            raise
        return error.details["nInserted"], sorted(e["index"] for e in errors)
    return len(documents), []


@dataclass(frozen=True)
class InsertCounts:
    """What a load of interactions did."""

    inserted: int
    updated: int
    already_present: int
    unknown_movie: int
    retagged: int = 0  # stored from an older release with the same value: only its part changed


def insert_interactions(
    collection: Collection,
    records: np.ndarray,
    movie_ids: MovieIds,
    part: str,
    batch_rows: int,
    on_batch: Callable[[int], None] | None = None,
) -> InsertCounts:
    """Store the interactions of ``records`` (:data:`~mlrec_luigi.documents.RATING_RECORD`) as part ``part``.

    New ratings are inserted; a rating already stored from another part or release (same
    user, movie and time, so the same ``_id``) gets this part's value and ``movielens_part``;
    one already stored from this part is left alone. Batches of ``batch_rows`` are encoded
    to BSON and sent one at a time, so memory stays bounded; ``on_batch(rows_done)`` is
    called after each. Ratings of movies missing from ``movie_ids`` are skipped and counted.
    """
    inserted = updated = retagged = present = unknown = 0
    for start in range(0, len(records), batch_rows):
        with cyclic_gc_paused():
            documents, skipped = interaction_bson(records[start : start + batch_rows], movie_ids, part)
            added, stored_before = insert_new(collection, documents)
            changed, moved = _take_over(collection, [documents[i] for i in stored_before], part)
            del documents
        inserted, updated, retagged = inserted + added, updated + changed, retagged + moved
        present, unknown = present + len(stored_before) - changed - moved, unknown + skipped
        if on_batch:
            on_batch(min(start + batch_rows, len(records)))
    return InsertCounts(inserted, updated, present, unknown, retagged)


def _take_over(collection: Collection, documents: Sequence[Mapping[str, Any]], part: str) -> tuple[int, int]:
    """Give stored ratings of another part or release this part's values: (values changed, only re-tagged).

    Those already stored from this part (a rerun, a resumed crash) are found with one query
    by ``_id`` and left alone, so a rerun sends no update at all. A rating whose value and movie
    are unchanged is only re-tagged with this part: it is not counted as updated.
    """
    if not documents:
        return 0, 0
    ids = [doc["_id"] for doc in documents]
    stored = {d["_id"]: d for d in collection.find({"_id": {"$in": ids}}, {PART_FIELD: 1, "value": 1, "movieId": 1})}
    moving = [doc for doc in documents if stored.get(doc["_id"], {}).get(PART_FIELD) != part]
    changes = [
        UpdateOne(
            {"_id": doc["_id"], PART_FIELD: {"$ne": part}},
            {"$set": {"movieId": doc["movieId"], "value": doc["value"], PART_FIELD: part}},
        )
        for doc in moving
    ]
    if not changes:
        return 0, 0
    modified = collection.bulk_write(changes, ordered=False).modified_count
    changed_values = sum(
        1
        for doc in moving
        if (stored.get(doc["_id"], {}).get("value"), stored.get(doc["_id"], {}).get("movieId"))
        != (doc["value"], doc["movieId"])
    )
    changed_values = min(changed_values, modified)
    return changed_values, modified - changed_values


def count_parts(collection: Collection, parts: Sequence[str]) -> int:
    """How many interactions are stored from the ratings parts ``parts`` (index-served)."""
    return collection.count_documents({PART_FIELD: parts[0] if len(parts) == 1 else {"$in": list(parts)}})


def count_other_parts(collection: Collection, parts: Sequence[str]) -> tuple[int, int]:
    """(MovieLens interactions of parts not in ``parts``, all MovieLens interactions): what a release removes."""
    movielens = {"source": "movielens"}
    return collection.count_documents({**movielens, PART_FIELD: {"$nin": list(parts)}}), collection.count_documents(
        movielens
    )


def remove_other_parts(collection: Collection, parts: Sequence[str]) -> int:
    """Delete the MovieLens interactions of every part not in ``parts`` (an older release); how many.

    The API's own interactions carry no ``source`` and are never touched.
    """
    return collection.delete_many({"source": "movielens", PART_FIELD: {"$nin": list(parts)}}).deleted_count


def count_movies(collection: Collection) -> int:
    """How many MovieLens movies ``movies`` holds (a range on the unique index: counted from the index)."""
    return collection.count_documents({"movieId_ml": {"$gt": 0}})


def existing_ids(collection: Collection, hex_ids: Sequence[str]) -> set[str]:
    """Those of ``hex_ids`` that are ``_id``s of documents in ``collection``."""
    found = collection.find({"_id": {"$in": [ObjectId(h) for h in hex_ids if ObjectId.is_valid(h)]}}, {"_id": 1})
    return {str(doc["_id"]) for doc in found}


def estimated_count(collection: Collection) -> int:
    """The collection's document count from metadata (cheap, no scan)."""
    return collection.estimated_document_count()


API_FIELDS = {"_id": 1, "userId": 1, "movieId": 1, "type": 1, "value": 1, "timestamp": 1}


def api_interactions(collection: Collection, since: ObjectId | None = None) -> list[dict[str, Any]]:
    """The API's own interactions (no ``movielens_part``: index-served), ``_id >= since`` when given."""
    query: dict[str, Any] = {PART_FIELD: None}
    if since is not None:
        query["_id"] = {"$gte": since}
    return list(collection.find(query, API_FIELDS))


def api_interactions_of(collection: Collection, users: Sequence[str]) -> list[dict[str, Any]]:
    """The API's own interactions of ``users`` (served by the ``userId`` index)."""
    return list(collection.find({"userId": {"$in": list(users)}, PART_FIELD: None}, API_FIELDS))
