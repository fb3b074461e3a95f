"""Stand-ins for services, for trying the pipeline with none: ``MONGODB_URI=mongomock://``.

``mongomock://localhost/mlrec?store=var/mongomock.bson`` (what ``scripts/run-pipeline.sh`` uses when
no ``MONGODB_URI`` is set) keeps the data between runs in one file, so a rerun is the no-op it is
on a real MongoDB. Not for production: one process at a time, the whole store rewritten after each stage.

mongomock keeps its data inside one process and is not a wire server: it stores Python
dicts (not BSON), and it predates arguments newer pymongo passes. Everything the
production code needs to run on it lives here, so ``mongo.py`` has no mongomock branches
beyond asking this module for the client.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from mlrec_luigi.settings import SettingsError

MONGOMOCK_SCHEME = "mongomock://"
_CODEC: CodecOptions = CodecOptions(tz_aware=True)
_STORED: CodecOptions = CodecOptions(tz_aware=False)


def mongomock_client(uri: str = MONGOMOCK_SCHEME) -> Any:
    """The process's mongomock client (one per process; refused in a forked worker).

    ``mongomock://host/db?store=PATH`` keeps the data between processes in the file PATH: read
    when the client is made, written (atomically) by :func:`save_mongomock` after each stage.
    """
    client, created_in = _mongomock_client(store_path(uri))
    if created_in != os.getpid():
        raise SettingsError(
            "MONGODB_URI=mongomock:// keeps its data inside one process, and this task runs in a "
            "worker process of its own: run with --workers 1, or give a real MongoDB"
        )
    return client


def forget_mongomock() -> None:
    """Drop mongomock's client and data (in memory; a store file stays)."""
    _mongomock_client.cache_clear()
    _STORES.clear()


def store_path(uri: str) -> Path | None:
    """The file a ``mongomock://…?store=PATH`` URI keeps its data in (None: in memory only)."""
    values = parse_qs(urlsplit(uri).query).get("store")
    return Path(values[-1]) if values else None


def save_mongomock() -> None:
    """Write the stand-in's data to its store file, if it has one (atomically: a kill leaves the old file)."""
    if _mongomock_client.cache_info().currsize == 0:
        return
    for path in sorted(_STORES):
        client, _ = _mongomock_client(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as out:
            for db_name, database in client._store._databases.items():
                for name, store in database._collections.items():
                    if not store.is_created:
                        continue
                    header = {"_db": db_name, "_collection": name, "_count": len(store._documents)}
                    indexes = {n: _stored_index(i) for n, i in store.indexes.items()}
                    out.write(bson.encode({**header, "indexes": indexes}))
                    for document in store._documents.values():
                        out.write(bson.encode(document))
        os.replace(temporary, path)


_STORES: set[Path] = set()
_KEY_KIND = "_key_kind"


def _stored_index(index: Mapping[str, Any]) -> dict[str, Any]:
    """An index as BSON can hold it: its key as pairs, and the kind of key mongomock made (so it compares equal)."""
    return {**index, "key": [list(pair) for pair in index["key"]], _KEY_KIND: type(index["key"]).__name__}


def _loaded_index(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The index as mongomock made it: ``create_index`` with the same options must find it equal, not different."""
    index = {name: value for name, value in stored.items() if name != _KEY_KIND}
    pairs = [tuple(pair) for pair in stored["key"]]
    # A store written before the kind was recorded: its indexes all came from IndexModel (dict_items).
    index["key"] = dict(pairs).items() if stored.get(_KEY_KIND, "dict_items") == "dict_items" else pairs
    return index


def _load(client: Any, path: Path) -> None:
    from mongomock.store import CollectionStore

    try:
        # One decode of the whole file (twice as fast as a document at a time); naive UTC datetimes,
        # as mongomock keeps them.
        documents = iter(bson.decode_all(path.read_bytes(), _STORED))
        for header in documents:
            store = CollectionStore(header["_collection"])
            store.create()
            store.indexes = {n: _loaded_index(i) for n, i in header["indexes"].items()}
            for _ in range(header["_count"]):
                document = next(documents)
                store._documents[document["_id"]] = document
            client._store[header["_db"]]._collections[header["_collection"]] = store
    except (bson.errors.BSONError, KeyError, StopIteration, TypeError) as error:
        raise SettingsError(
            f"{path}, the try-out MongoDB's store, is damaged ({type(error).__name__}): delete it to start afresh"
        ) from None


@functools.cache
def _mongomock_client(store: Path | None) -> tuple[Any, int]:
    import mongomock
    from mongomock.collection import BulkOperationBuilder

    _speed_up(mongomock.collection.Collection, mongomock.collection.Cursor)

    # mongomock 4.3 predates pymongo 4.11's `sort` argument of UpdateOne/ReplaceOne.
    for method in ("add_update", "add_replace"):
        original = getattr(BulkOperationBuilder, method)
        if not getattr(original, "_accepts_sort", False):

            def accepting_sort(self: Any, *args: Any, _original: Any = original, sort: Any = None, **kw: Any) -> Any:
                return _original(self, *args, **kw)

            accepting_sort._accepts_sort = True  # type: ignore[attr-defined]
            setattr(BulkOperationBuilder, method, accepting_sort)
    client: Any = mongomock.MongoClient(tz_aware=True)
    if store is not None:
        _STORES.add(store)
        if store.exists():
            _load(client, store)
    return client, os.getpid()


def _speed_up(collection_class: Any, cursor_class: Any) -> None:
    """Make two of mongomock's costs proportional to what they touch (same results).

    ``aggregate`` copies every document of the collection before the first ``$match``
    (112 s for 100,000 interactions); it now lets ``find`` apply that ``$match`` first.
    Each insert checks a unique index by evaluating a filter on every stored document
    (quadratic: ~2 min for 10,000 movies); a one-field index is now checked by comparing
    that field directly. A query or update by ``_id`` (one, or ``$in``) evaluated its filter on
    every document; it now looks the ids up, as MongoDB's ``_id`` index does. A cursor copied
    its remaining results for every document it returned (quadratic); it now indexes them.
    """
    from mongomock import aggregate
    from mongomock.collection import DuplicateKeyError
    from mongomock.filtering import filter_applies

    if getattr(collection_class, "_mlrec_fast", False):
        return
    original_aggregate = collection_class.aggregate
    original_ensure_uniques = collection_class._ensure_uniques
    original_iter_documents = collection_class._iter_documents

    def iter_documents_by_id(self: Any, filter: Any) -> Any:
        ids = _ids_of(filter)
        if ids is None:
            return original_iter_documents(self, filter)
        found = [self._store[i] for i in ids if i in self._store]
        rest = {name: value for name, value in filter.items() if name != "_id"}  # the ids are looked up
        return (document for document in found if filter_applies(rest, document))

    def aggregate_matching_first(self: Any, pipeline: list[dict[str, Any]], session: Any = None, **kw: Any) -> Any:
        if pipeline and list(pipeline[0]) == ["$match"]:
            matching = list(self.find(pipeline[0]["$match"]))
            return aggregate.process_pipeline(matching, self.database, pipeline[1:], session)
        return original_aggregate(self, pipeline, session, **kw)

    def ensure_uniques_by_field(self: Any, new_data: dict[str, Any]) -> None:
        indexes = [index for index in self._store.indexes.values() if index.get("unique")]
        simple = all(
            len(list(index["key"])) == 1
            and "." not in next(iter(index["key"]))[0]
            and not index.get("sparse")
            and index.get("partialFilterExpression") is None
            for index in indexes
        )
        if not simple:
            original_ensure_uniques(self, new_data)
            return
        for index in indexes:
            field = next(iter(index["key"]))[0]
            value = new_data.get(field)
            if sum(1 for doc in self._store.documents if doc.get(field) == value) > 1:
                raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)

    def next_without_copies(self: Any) -> Any:
        results = self._compute_results(with_limit_and_skip=False)
        position = self._skip + self._emitted
        if (self._limit and self._emitted >= abs(self._limit)) or position >= len(results):
            raise StopIteration
        self._emitted += 1
        return results[position]

    cursor_class.__next__ = next_without_copies
    cursor_class.next = next_without_copies
    collection_class._iter_documents = iter_documents_by_id
    collection_class.aggregate = aggregate_matching_first
    collection_class._ensure_uniques = ensure_uniques_by_field
    collection_class._mlrec_fast = True


def _ids_of(filter: Any) -> list[Any] | None:
    """The ``_id``s a filter is limited to (``{"_id": x}`` or ``{"_id": {"$in": [...]}}``), else None."""
    if not isinstance(filter, dict) or "_id" not in filter:
        return None
    value = filter["_id"]
    if isinstance(value, dict):
        return list(dict.fromkeys(value["$in"])) if set(value) == {"$in"} else None
    try:
        hash(value)
    except TypeError:
        return None
    return [value]


def documents_for(collection: Collection, documents: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """``documents`` as ``collection`` can store them: mongomock takes dicts, not encoded BSON."""
    if isinstance(collection, Collection) or not documents or not isinstance(documents[0], RawBSONDocument):
        return documents
    return [bson.decode(d.raw, _CODEC) if isinstance(d, RawBSONDocument) else d for d in documents]
