"""Loading interactions in chunks: the split, resuming at missing chunks, parallel workers, lost data.

The Luigi runs use a real wire-protocol MongoDB (mongoeco, or MLREC_TEST_MONGODB_URI): the
data is a few ratings, small enough for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pymongo
import pytest

from mlrec_luigi import LoadInteractions, LoadMovies, mongo, movielens
from mlrec_luigi.documents import MovieIds
from mlrec_luigi.settings import SettingsError
from mlrec_luigi.storage import LocalBucket
from tests.support.runs import build, families
from tests.support.zips import small_zip

# Nine ratings of known movies (1..4) and one of movie 9, which movies.csv lacks.
RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{user},{movie},{rating},{964982703 + user * 10 + movie}\n"
    for user, movie, rating in [
        (1, 1, 4.0), (1, 2, 3.5), (1, 3, 5.0), (2, 1, 0.5), (2, 4, 4.0),
        (3, 2, 2.0), (3, 3, 4.5), (4, 1, 1.0), (4, 9, 3.0), (5, 4, 5.0),
    ]
)  # fmt: skip
KNOWN, CHUNK_ROWS = 9, 3
MARKERS = "datasets/ml/markers"


def test_ratings_parts_cut_known_ratings_into_parts_and_count(tmp_path: Path) -> None:
    zip_path = small_zip(tmp_path / "ml.zip", ratings_csv=RATINGS + "x,1,4.0,1\n")
    parts: list[np.ndarray] = []
    limits = movielens.RatingsLimits(4, 10**9, max_rejected_rows=1, max_unknown_fraction=0.1, read_rows=3)
    counts = movielens.prepare_ratings(zip_path, np.array([1, 2, 3, 4]), limits, lambda i, p: parts.append(p))
    assert [len(part) for part in parts] == [4, 4, 1]
    assert (counts.rows, counts.records, counts.skipped_unknown_movie, counts.rejected) == (11, 9, 1, 1)
    assert counts.rejected_examples == ["ratings.csv row 11: userId is not a positive 32-bit integer"]
    joined = np.concatenate(parts)
    assert joined["movieId"].tolist() == [1, 2, 3, 1, 4, 2, 3, 1, 4]
    assert joined["rating"].tolist()[:3] == [4.0, 3.5, 5.0]
    with pytest.raises(movielens.DatasetError, match=r"1 of 11 ratings .* movieId missing from movies\.csv"):
        movielens.check_unknown_movies(counts, 0.05)
    movielens.check_unknown_movies(counts, 0.1)
    strict = movielens.RatingsLimits(part_rows=4, max_member_bytes=10**9, max_rejected_rows=0)
    with pytest.raises(movielens.DatasetError, match=r"1 bad row.* row 11: userId"):
        movielens.prepare_ratings(zip_path, np.array([1]), strict, lambda i, p: None)


@pytest.fixture
def chunked_env(
    pipeline_env: Callable[..., dict[str, str]], wire_mongo: tuple[str, str], tmp_path: Path
) -> tuple[LocalBucket, pymongo.collection.Collection]:
    uri, database = wire_mongo
    zip_path = small_zip(tmp_path / "ml.zip", ratings_csv=RATINGS)
    values = pipeline_env(
        MOVIELENS_URL=zip_path.as_uri(),
        MONGODB_URI=uri,
        MONGODB_DATABASE=database,
        INTERACTIONS_CHUNK_ROWS=str(CHUNK_ROWS),
        INTERACTIONS_MAX_UNKNOWN_FRACTION="0.2",
    )
    return LocalBucket(Path(values["LOCAL_BUCKET_DIR"])), pymongo.MongoClient(uri)[database].interactions


def chunk_markers(bucket: LocalBucket) -> list[str]:
    return sorted(path.name for path in (bucket.root / MARKERS / "interactions").rglob("part-*.json"))


def test_two_workers_load_the_chunks_and_a_rerun_loads_only_missing_ones(chunked_env) -> None:
    bucket, interactions = chunked_env
    # The stages before run in this process: forked workers must not inherit a running torch.
    build(LoadMovies())
    summary = build(LoadInteractions(), workers=2)
    assert families(summary["completed"]).count("InteractionsChunk") == KNOWN // CHUNK_ROWS
    assert chunk_markers(bucket) == ["part-00000.json", "part-00001.json", "part-00002.json"]
    assert interactions.count_documents({}) == KNOWN
    assert len({(d["userId"], d["movieId"], d["timestamp"]) for d in interactions.find()}) == KNOWN
    marker = bucket.read_json(f"{MARKERS}/load_interactions.json")
    assert (marker["rows"], marker["inserted"], marker["skipped_unknown_movie"], marker["chunks"]) == (10, 9, 1, 3)

    # A crash after chunks 0 and 2: only chunk 1 runs again, and re-sends what it had stored.
    next((bucket.root / MARKERS / "interactions").rglob("part-00001.json")).unlink()
    (bucket.root / MARKERS / "load_interactions.json").unlink()
    summary = build(LoadInteractions())
    assert [t.index for t in summary["completed"] if t.task_family == "InteractionsChunk"] == [1]
    marker = bucket.read_json(f"{MARKERS}/load_interactions.json")
    assert (marker["inserted"], marker["already_present"], marker["stored"]) == (6, 3, 9)
    assert interactions.count_documents({}) == KNOWN


def test_interactions_deleted_after_a_load_are_noticed_and_their_chunk_reloaded(chunked_env) -> None:
    bucket, interactions = chunked_env
    build(LoadInteractions())
    interactions.delete_many({"userId": "1"})  # user 1's three ratings: all in part 0
    # Each chunk counts its own part's documents: only part 0 runs again, in the same run.
    summary = build(LoadInteractions())
    assert [t.index for t in summary["completed"] if t.task_family == "InteractionsChunk"] == [0]
    assert interactions.count_documents({}) == KNOWN
    marker = bucket.read_json(f"{MARKERS}/load_interactions.json")
    assert marker["stored"] == KNOWN


def test_mongomock_is_refused_in_a_forked_worker() -> None:
    mongo.forget_clients()
    mongo.connect("mongomock://localhost")
    child = os.fork()
    if child == 0:  # a Luigi worker process of --workers N
        try:
            mongo.connect("mongomock://localhost")
        except SettingsError as error:
            os._exit(0 if "--workers 1" in str(error) else 2)
        os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    mongo.forget_clients()


class _Commands(pymongo.monitoring.CommandListener):
    """Records every command a client sends."""

    def __init__(self) -> None:
        self.commands: list[dict] = []
        self.active = True  # pymongo cannot unregister a listener: it goes quiet after its test

    def started(self, event) -> None:
        if self.active:
            self.commands.append(dict(event.command))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def test_writes_carry_the_uris_write_concern(wire_mongo: tuple[str, str]) -> None:
    uri, database = wire_mongo
    listener = _Commands()
    pymongo.monitoring.register(listener)  # applies to the clients made from now on
    try:
        mongo.forget_clients()
        separator = "&" if "?" in uri else "?"
        collection = mongo.connect(f"{uri}{separator}w=majority&wtimeoutMS=5000")[database]["interactions"]
        frame = pd.DataFrame({"userId": [1, 2], "movieId": [1, 1], "rating": [4.0, 3.0], "timestamp": [9, 10]})
        records = movielens.rating_records(frame)
        ids = MovieIds({1: "0123456789abcdef01234567"})
        first = mongo.insert_interactions(collection, records, ids, "r1-p00000", 10)
        again = mongo.insert_interactions(collection, records, ids, "r2-p00000", 10)  # a new release: re-tagged
        sent = len(listener.commands)
        rerun = mongo.insert_interactions(collection, records, ids, "r2-p00000", 10)  # a rerun: nothing to change
        rerun_commands = [next(iter(c)) for c in listener.commands[sent:]]
    finally:
        listener.active = False
        mongo.forget_clients()
    assert (first.inserted, again.updated, again.retagged, rerun.already_present) == (2, 0, 2, 2)
    assert "update" not in rerun_commands and rerun_commands.count("insert") == 1
    writes = [c for c in listener.commands if {"insert", "update"} & set(c)]
    assert {next(iter(c)) for c in writes} == {"insert", "update"}
    assert all(c.get("writeConcern", {}).get("w") == "majority" for c in writes), writes
