"""Stand-ins for services, for trying the pipeline with none: ``MONGODB_URI=mongomock://``.

mongomock keeps its data inside one process and is not a wire server: it stores Python
dicts (not BSON), and it predates arguments newer pymongo passes. Everything the
production code needs to run on it lives here, so ``mongo.py`` has no mongomock branches
beyond asking this module for the client.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from mlrec_luigi.settings import SettingsError

MONGOMOCK_SCHEME = "mongomock://"
_CODEC: CodecOptions = CodecOptions(tz_aware=True)


def mongomock_client() -> Any:
    """The process's mongomock client (one per process; refused in a forked worker)."""
    client, created_in = _mongomock_client()
    if created_in != os.getpid():
        raise SettingsError(
            "MONGODB_URI=mongomock:// keeps its data inside one process, and this task runs in a "
            "worker process of its own: run with --workers 1, or give a real MongoDB"
        )
    return client


def forget_mongomock() -> None:
    """Drop mongomock's client and data."""
    _mongomock_client.cache_clear()


@functools.cache
def _mongomock_client() -> tuple[Any, int]:
    import mongomock
    from mongomock.collection import BulkOperationBuilder

    _speed_up(mongomock.collection.Collection)

    # mongomock 4.3 predates pymongo 4.11's `sort` argument of UpdateOne/ReplaceOne.
    for method in ("add_update", "add_replace"):
        original = getattr(BulkOperationBuilder, method)
        if not getattr(original, "_accepts_sort", False):

            def accepting_sort(self: Any, *args: Any, _original: Any = original, sort: Any = None, **kw: Any) -> Any:
                return _original(self, *args, **kw)

            accepting_sort._accepts_sort = True  # type: ignore[attr-defined]
            setattr(BulkOperationBuilder, method, accepting_sort)
    return mongomock.MongoClient(tz_aware=True), os.getpid()


def _speed_up(collection_class: Any) -> None:
    """Make two of mongomock's costs proportional to what they touch (same results).

    ``aggregate`` copies every document of the collection before the first ``$match``
    (112 s for 100,000 interactions); it now lets ``find`` apply that ``$match`` first.
    Each insert checks a unique index by evaluating a filter on every stored document
    (quadratic: ~2 min for 10,000 movies); a one-field index is now checked by comparing
    that field directly.
    """
    from mongomock import aggregate
    from mongomock.collection import DuplicateKeyError

    if getattr(collection_class, "_mlrec_fast", False):
        return
    original_aggregate = collection_class.aggregate
    original_ensure_uniques = collection_class._ensure_uniques

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

    collection_class.aggregate = aggregate_matching_first
    collection_class._ensure_uniques = ensure_uniques_by_field
    collection_class._mlrec_fast = True


def documents_for(collection: Collection, documents: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """``documents`` as ``collection`` can store them: mongomock takes dicts, not encoded BSON."""
    if isinstance(collection, Collection) or not documents or not isinstance(documents[0], RawBSONDocument):
        return documents
    return [bson.decode(d.raw, _CODEC) if isinstance(d, RawBSONDocument) else d for d in documents]
