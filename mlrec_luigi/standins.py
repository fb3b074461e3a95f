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

    # mongomock 4.3 predates pymongo 4.11's `sort` argument of UpdateOne/ReplaceOne.
    for method in ("add_update", "add_replace"):
        original = getattr(BulkOperationBuilder, method)
        if not getattr(original, "_accepts_sort", False):

            def accepting_sort(self: Any, *args: Any, _original: Any = original, sort: Any = None, **kw: Any) -> Any:
                return _original(self, *args, **kw)

            accepting_sort._accepts_sort = True  # type: ignore[attr-defined]
            setattr(BulkOperationBuilder, method, accepting_sort)
    return mongomock.MongoClient(tz_aware=True), os.getpid()


def documents_for(collection: Collection, documents: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """``documents`` as ``collection`` can store them: mongomock takes dicts, not encoded BSON."""
    if isinstance(collection, Collection) or not documents or not isinstance(documents[0], RawBSONDocument):
        return documents
    return [bson.decode(d.raw, _CODEC) if isinstance(d, RawBSONDocument) else d for d in documents]
