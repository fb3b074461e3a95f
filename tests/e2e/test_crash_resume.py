"""Fault injection: SIGKILL a real `luigi` process inside every stage, rerun, compare.

Each case starts the whole DAG as a `luigi` subprocess on a slice of the real data, waits
for a seeded random stage to start (its "running" log line), sleeps a seeded random part
of that stage's duration in a clean run, and SIGKILLs the process. It then reruns the
DAG to completion and checks that the final state equals a clean run's: the movies (by
``movieId_ml``, one document each, ``_id``s kept), the interactions (none duplicated, none
missing), ``movie_id_map.json``, the ``.npy`` chunks, and the Redis list.

Services are real and outlive the killed process: fake-gcs-server (bucket), the mongoeco
wire-protocol server (or MLREC_TEST_MONGODB_URI), redis-server; the zip is served over HTTP,
slowly enough that a kill can land mid-download.
"""

from __future__ import annotations

import functools
import http.server
import json
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymongo
import pytest
import redis

from mlrec_luigi.embedding import unpack_chunk
from mlrec_luigi.settings import POPULAR_REDIS_KEY
from mlrec_luigi.storage import GCSBucket
from tests.support.env import subprocess_env
from tests.support.processes import MOVIELENS_ZIP, PROJECT, REAL_MONGODB_URI
from tests.support.runs import luigi_command, run_luigi
from tests.support.zips import real_slice

MOVIES, RATINGS, CHUNK = 120, 1500, 20
STAGES = (
    "DownloadMovieLens",
    "EmbeddingChunk",
    "LoadMovies",
    "PrepareRatings",
    "InteractionsChunk",
    "UpdatePopular",
    "SimilarMoviesBlock",  # mid-compute
    "UpdateSimilarMovies",  # mid-publish
    "ShuffleRatingsPart",  # mid-shuffle: some pieces of a part written
    "UserRecsPartition",  # mid-compute of a partition of users
    "UpdateUserRecommendations",  # mid-publish
)
INTERACTION_CHUNK_ROWS, SIMILAR_BLOCK, USER_PARTITIONS = 300, 40, 3
# Chunk and publish stages twice each, the others three times: 29 kills in all.
CRASHES_PER_STAGE = {stage: 2 if "Similar" in stage or "User" in stage or "Shuffle" in stage else 3 for stage in STAGES}
SEED = 20261124
RUN_DATE = "2026-11-24"


class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files at about 256 KiB/s so that a kill can land in the middle of a download."""

    def copyfile(self, source: Any, outputfile: Any) -> None:
        while block := source.read(16 * 1024):
            outputfile.write(block)
            time.sleep(0.06)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_zip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("slow-www")
    real_slice(MOVIELENS_ZIP, folder / "ml-crash.zip", MOVIES, RATINGS, extra_members=("tags.csv", "README.txt"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_SlowHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ml-crash.zip"
    server.shutdown()


@dataclass
class Scenario:
    env: dict[str, str]
    bucket: GCSBucket
    mongo_uri: str
    database: str


@pytest.fixture(scope="module")
def scenario_factory(slow_zip_url: str, gcs_emulator: str, redis_server: str, tmp_path_factory):
    mongo_uri = REAL_MONGODB_URI or None
    created: list[tuple[str, str]] = []

    def make(request: pytest.FixtureRequest) -> Scenario:
        uri = mongo_uri or request.getfixturevalue("mongoeco_server")
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        name = f"crash-{uuid.uuid4().hex[:10]}"
        storage.Client(
            project="t", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_emulator}
        ).create_bucket(name)
        database = f"mlrec_crash_{uuid.uuid4().hex[:10]}"
        created.append((uri, database))
        folder = tmp_path_factory.mktemp("crash")
        env = subprocess_env(
            folder,
            MOVIELENS_URL=slow_zip_url,
            GCS_BUCKET_NAME=name,
            STORAGE_EMULATOR_HOST=gcs_emulator,
            MONGODB_URI=uri,
            MONGODB_DATABASE=database,
            REDIS_URL=redis_server,
            EMBEDDING_CHUNK_SIZE=str(CHUNK),
            INTERACTIONS_CHUNK_ROWS=str(INTERACTION_CHUNK_ROWS),
            SIMILAR_MOVIES_BLOCK_ROWS=str(SIMILAR_BLOCK),
            USER_RECS_PARTITIONS=str(USER_PARTITIONS),
        )
        redis.Redis.from_url(redis_server).flushdb()
        return Scenario(env, GCSBucket(name, gcs_emulator), uri, database)

    yield make
    for uri, database in created:
        with pymongo.MongoClient(uri) as client:
            client.drop_database(database)


def complete_run(scenario: Scenario) -> list[dict[str, Any]]:
    result = run_luigi("DailyRun", "--local-scheduler", "--date", RUN_DATE, env=scenario.env)
    assert result.returncode == 0, result.stderr[-3000:]
    return events(result.stderr)


def events(stderr: str) -> list[dict[str, Any]]:
    parsed = []
    for line in stderr.splitlines():
        try:
            parsed.append(json.loads(line))
        except ValueError:
            continue
    return parsed


def finished(log: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    return [e for e in log if e.get("event") == "task finished" and e.get("task") == family]


def snapshot(scenario: Scenario) -> dict[str, Any]:
    """Everything the pipeline publishes, keyed by MovieLens ids so that two runs compare."""
    with pymongo.MongoClient(scenario.mongo_uri, tz_aware=True) as client:
        db = client[scenario.database]
        movie_docs = list(db.movies.find())
        interactions = list(db.interactions.find())
    ml_of = {str(doc["_id"]): doc["movieId_ml"] for doc in movie_docs}
    prefix = "datasets/ml-crash/"
    id_map = scenario.bucket.read_json(prefix + "movie_id_map.json")
    chunk_keys = scenario.bucket.list(prefix + "embeddings/")
    chunks = {
        key.rsplit("/", 1)[-1]: unpack_chunk(scenario.bucket.read_bytes(key))
        for key in chunk_keys
        if key.endswith(".npy")
    }
    client = redis.Redis.from_url(scenario.env["REDIS_URL"])
    published = json.loads(client.get(POPULAR_REDIS_KEY))
    similar = {key.decode(): json.loads(client.get(key)) for key in client.scan_iter("rec:item:*")}
    users = {key.decode(): json.loads(client.get(key)) for key in client.scan_iter("rec:user:*")}
    return {
        "movie_count": len(movie_docs),
        "movies": {
            doc["movieId_ml"]: {k: v for k, v in doc.items() if k not in ("_id", "embedding")} for doc in movie_docs
        },
        "embeddings": {doc["movieId_ml"]: np.array(doc["embedding"]) for doc in movie_docs},
        "ids": {doc["movieId_ml"]: str(doc["_id"]) for doc in movie_docs},
        "map": id_map,
        "interaction_count": len(interactions),
        "interactions": sorted(
            (d["userId"], ml_of[d["movieId"]], d["type"], d["value"], d["timestamp"].isoformat()) for d in interactions
        ),
        "chunks": chunks,
        "popular": [ml_of[hex_id] for hex_id in published],
        "similar": {ml_of[key[9:]]: [ml_of[i] for i in ids] for key, ids in similar.items()},
        "users": {key: [ml_of[i] for i in ids] for key, ids in users.items()},
    }


def assert_same_state(actual: dict[str, Any], clean: dict[str, Any]) -> None:
    assert actual["movie_count"] == clean["movie_count"] == MOVIES
    assert actual["movies"] == clean["movies"]
    for movie, vector in clean["embeddings"].items():
        np.testing.assert_allclose(actual["embeddings"][movie], vector, atol=1e-5)
    assert actual["map"] == {str(m): i for m, i in actual["ids"].items()}
    assert actual["interaction_count"] == clean["interaction_count"] == RATINGS
    assert actual["interactions"] == clean["interactions"]
    assert actual["chunks"].keys() == clean["chunks"].keys()
    for name, (ids, vectors) in clean["chunks"].items():
        np.testing.assert_array_equal(actual["chunks"][name][0], ids)
        np.testing.assert_allclose(actual["chunks"][name][1], vectors, atol=1e-5)
    assert actual["popular"] == clean["popular"]
    assert len(actual["similar"]) == MOVIES and actual["similar"] == clean["similar"]
    assert len(actual["users"]) > 10 and actual["users"] == clean["users"]


@pytest.fixture(scope="module")
def clean_run(scenario_factory, request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The reference state, and each stage's durations (one per chunk for EmbeddingChunk)."""
    scenario = scenario_factory(request)
    log = complete_run(scenario)
    durations = {family: [e["duration_s"] for e in finished(log, family)] for family in STAGES}
    return snapshot(scenario), durations


def start_dag(scenario: Scenario, *extra: str) -> subprocess.Popen[str]:
    command = luigi_command("DailyRun", "--local-scheduler", "--date", RUN_DATE, *extra)
    return subprocess.Popen(
        command, cwd=PROJECT, env=scenario.env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )


def kill_during(
    scenario: Scenario, stage: str, rng: random.Random, durations: dict[str, list[float]]
) -> dict[str, Any]:
    """Start the DAG, SIGKILL it at a random moment inside ``stage``; return what happened."""
    process = start_dag(scenario)
    # Which start of the stage (the k-th chunk), then a moment inside it (chunk 0 includes the model load).
    occurrence = rng.randrange(len(durations[stage]))
    # Within the first 60 % of what the stage took in the clean run: the kill lands inside it (asserted).
    delay = rng.uniform(0, 0.6 * durations[stage][occurrence])
    pattern = re.compile(rf"running\s+{stage}\(")
    lines: list[str] = []
    seen = 0
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if pattern.search(line):
            if seen == occurrence:
                break
            seen += 1
    else:
        pytest.fail(f"{stage} never started:\n{''.join(lines[-20:])}")
    killer = threading.Timer(delay, lambda: process.send_signal(signal.SIGKILL))
    killer.start()
    rest = process.stderr.read()
    process.wait()
    killer.join()
    log = events("".join(lines) + rest)
    return {"returncode": process.returncode, "delay": delay, "log": log, "occurrence": occurrence}


CASES = [(stage, n) for stage in STAGES for n in range(CRASHES_PER_STAGE[stage])]


@pytest.mark.parametrize(("stage", "attempt"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_sigkill_then_rerun_equals_a_clean_run(stage: str, attempt: int, scenario_factory, clean_run, request) -> None:
    clean, durations = clean_run
    rng = random.Random(f"{SEED}-{stage}-{attempt}")
    scenario = scenario_factory(request)
    crash = kill_during(scenario, stage, rng, durations)
    chunks_done_before = len(finished(crash["log"], "EmbeddingChunk"))
    chunk_prefix = "datasets/ml-crash/embeddings/"
    chunks_present = sum(1 for key in scenario.bucket.list(chunk_prefix) if key.endswith(".npy"))
    loaded_present = len(scenario.bucket.list("datasets/ml-crash/markers/interactions/"))
    blocks_present = sum(
        1 for key in scenario.bucket.list("datasets/ml-crash/similar/") if "/block-" in key and key.endswith(".npy")
    )
    user_recs_keys = scenario.bucket.list("datasets/ml-crash/user_recs/")
    shuffled_present = sum(1 for key in user_recs_keys if "/shuffle/" in key and key.endswith("/done.json"))
    partitions_present = sum(1 for key in user_recs_keys if "/partition-" in key and key.endswith(".npy"))
    with pymongo.MongoClient(scenario.mongo_uri) as client:
        ids_after_crash = {
            d["movieId_ml"]: str(d["_id"]) for d in client[scenario.database].movies.find({}, {"movieId_ml": 1})
        }

    rerun = complete_run(scenario)
    state = snapshot(scenario)
    assert_same_state(state, clean)

    # A movie's _id, once made, survives the crash and the rerun.
    assert all(state["ids"][m] == i for m, i in ids_after_crash.items())
    # The rerun recomputes only the chunks that were missing: at most the one in flight is redone.
    chunks_rerun = len(finished(rerun, "EmbeddingChunk"))
    assert chunks_present - chunks_done_before in (0, 1)  # a chunk may be stored just before its log line
    assert chunks_rerun == MOVIES // CHUNK - chunks_present
    # Likewise the interactions: only the chunks without a marker are loaded again.
    assert len(finished(rerun, "InteractionsChunk")) == RATINGS // INTERACTION_CHUNK_ROWS - loaded_present
    # And the similar-movies blocks: only the missing ones are computed again.
    assert len(finished(rerun, "SimilarMoviesBlock")) == -(-MOVIES // SIMILAR_BLOCK) - blocks_present
    # And the user lists' work: only the parts not shuffled and the partitions not written are done again.
    assert len(finished(rerun, "ShuffleRatingsPart")) == RATINGS // INTERACTION_CHUNK_ROWS - shuffled_present
    assert len(finished(rerun, "UserRecsPartition")) == USER_PARTITIONS - partitions_present
    assert crash["returncode"] == -signal.SIGKILL, "the process ended before the kill: no crash was injected"
    # The kill landed inside the stage it names: that run of the stage had not finished.
    assert len(finished(crash["log"], stage)) <= crash["occurrence"], f"{stage} had finished before the kill"
    print(
        json.dumps(
            {
                "stage": stage,
                "attempt": attempt,
                "delay_s": round(crash["delay"], 3),
                "killed": crash["returncode"] == -signal.SIGKILL,
                "chunks_before": chunks_done_before,
                "chunks_rerun": chunks_rerun,
                "interaction_chunks_before": loaded_present,
            }
        )
    )


def test_overlapping_cron_runs_on_one_machine_run_once(scenario_factory, clean_run, request) -> None:
    """The same command started again while the first runs: Luigi's lock makes the second exit 10 (already running).

    The second starts once the first is scheduling (its lock taken), as a cron run started the next day
    would: Luigi's lock reads then writes its pid file, so two starts in the same instant can both pass it
    (the crontab line's `flock -n` covers that case).
    """
    clean, _ = clean_run
    scenario = scenario_factory(request)
    first = start_dag(scenario)
    assert first.stderr is not None
    started = []
    for line in first.stderr:
        started.append(line)
        if "Informed scheduler" in line:
            break
    second = start_dag(scenario)
    outputs = ["".join(started) + first.communicate(timeout=600)[1], second.communicate(timeout=600)[1]]
    assert [first.returncode, second.returncode] == [0, 10], "\n".join(o[-2000:] for o in outputs)
    assert_same_state(snapshot(scenario), clean)


def test_two_runs_at_once_without_the_lock_corrupt_nothing(scenario_factory, clean_run, request) -> None:
    """Two machines (no shared lock) run the whole DAG at the same time against the same stores."""
    clean, _ = clean_run
    scenario = scenario_factory(request)
    runs = [start_dag(scenario, "--no-lock") for _ in range(2)]
    outputs = [run.communicate(timeout=600)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert_same_state(snapshot(scenario), clean)
