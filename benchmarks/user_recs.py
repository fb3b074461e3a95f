"""Every user's recommendations (issue 14): the stage's functions against the bare blocked computation,
an incremental day, publishing, quality.

    .venv/bin/python benchmarks/user_recs.py [--users 200948 --movies 87585 --ratings 32000000] [--repeats 1]

Synthetic data of the given shape (default: ml-32m's); unit vectors, ratings with random users,
movies, values and times. Figures, each a median of ``--repeats`` runs in this process:

- stage: ``user_recs.gather`` (the MovieLens parts and the API documents into one table) then
  ``user_lists`` for every user (profiles, blocked matmul, seen movies masked, top-k with exact
  ties); bare: the same profiles' blocked matmul + mask + ``argpartition`` alone;
- incremental: the same for 1,000 changed users (the table is gathered again, as a daily run does);
- the peak RSS of the stage (VmHWM reset when it starts, with its input in memory: the ratings parts, the
  vectors); the block of 512 users sets the scores' memory;
- publishing (``--publish-users``, default 100,000 keys): keys/s of ``cache.publish_lists`` against one
  ``SET`` per round trip on a redis-server it starts, and the memory the keys take (``INFO memory``);
- recall@10 against float64 brute force on 300 users, and that of the API's own method (the best
  10 of 500 random candidates) on the same users;
- the completeness check of ``--verify-keys`` published keys (87,585: the similar movies of ml-32m): every
  value compared through one server-side digest per 10,000 keys, the batches pipelined; with one key
  evicted; and the fallback (MGET of every value) for a server that refuses scripts.

Not measured here: the Luigi task around these functions (the bucket reads of the parts and the state,
MongoDB's read of the API documents) and the completeness check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bson import ObjectId

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import median_time, peak_rss_mb, reset_peak_rss, rss_mb, shape_arguments  # noqa: E402
from mlrec_luigi import cache, partitions, user_recs  # noqa: E402
from mlrec_luigi.movielens import RATING_RECORD  # noqa: E402
from tests.support.processes import free_port, wait_until  # noqa: E402

DIMENSION = 384
TOP_N = 10


def synthetic(users: int, movies: int, ratings: int, seed: int = 14):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(movies, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array(sorted(str(ObjectId()) for _ in range(movies)))
    movie_map = {i + 1: hex_id for i, hex_id in enumerate(ids.tolist())}
    parts = []
    for start in range(0, ratings, 5_000_000):  # parts of 5,000,000 ratings, as a bucket would hold them
        size = min(5_000_000, ratings - start)
        part = np.empty(size, RATING_RECORD)
        part["userId"] = rng.integers(1, users + 1, size)
        part["movieId"] = rng.zipf(1.3, size) % movies + 1  # popular movies rated more, as in MovieLens
        part["rating"] = rng.integers(1, 11, size) / 2
        part["timestamp"] = rng.integers(800_000_000, 1_700_000_000, size)
        parts.append(part)
    return vectors, ids, movie_map, parts


def bare(profiles: user_recs.Profiles, unit: np.ndarray, vectors: np.ndarray, k: int) -> None:
    """The computation alone from the same profiles: blocked matmul, the seen movies masked, argpartition."""
    for start in range(0, len(profiles.users), user_recs.BLOCK_USERS):
        users = profiles.users[start : start + user_recs.BLOCK_USERS]
        scores = unit[start : start + user_recs.BLOCK_USERS] @ vectors.T
        user_recs.mask_seen(scores, users, (profiles.seen_users, profiles.seen_rows))
        np.argpartition(-scores, k, axis=1)[:, :k]


def recall(vectors, ids, gathered, rows, sample_users, rng) -> tuple[float, float]:
    """(ours, the API's 500-random method) against float64 brute force, on ``sample_users``."""
    table = gathered.interactions
    ours = api = 0
    total = 0
    for user in sample_users:
        mine = table[table["user"] == user]
        _, liked = user_recs.liked_rows(mine)
        if not len(liked):
            continue
        profile = vectors[liked].astype(np.float64).mean(axis=0)
        scores = vectors.astype(np.float64) @ profile
        scores[mine["row"][mine["row"] >= 0]] = -np.inf
        truth = set(np.argsort(-scores, kind="stable")[:TOP_N].tolist())
        ours += len(truth & set(rows[user][rows[user] >= 0].tolist()))
        sample = rng.choice(len(vectors), 500, replace=False)
        sample = sample[np.isfinite(scores[sample])]
        api += len(truth & set(sample[np.argsort(-scores[sample])[:TOP_N]].tolist()))
        total += len(truth)
    return ours / total, api / total


def publishing(count: int, verify_keys: int = 87_585) -> dict[str, float]:
    binary = shutil.which("redis-server")
    if binary is None:
        return {}
    port = free_port()
    folder = Path(tempfile.mkdtemp())
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        wait_until(client.ping, "redis-server")
        url = f"redis://127.0.0.1:{port}/0"
        ids = [str(ObjectId()) for _ in range(TOP_N * 50)]
        total = max(count, verify_keys)
        lists = [(f"rec:user:{user}", ids[user % 50 * TOP_N : user % 50 * TOP_N + TOP_N]) for user in range(total)]
        verify_lists, lists = lists, lists[:count]
        before = client.info("memory")["used_memory"]
        started = time.perf_counter()
        for _ in cache.publish_lists(url, lists, 90_000):
            pass
        batched = count / (time.perf_counter() - started)
        after = client.info("memory")["used_memory"]
        client.flushall()
        sample = lists[:5_000]
        started = time.perf_counter()
        for key, values in sample:
            client.set(key, cache.encode_list(values), ex=90_000)
        single = len(sample) / (time.perf_counter() - started)
        result = {
            "keys": count,
            "keys_per_s": round(batched),
            "set_per_round_trip_keys_per_s": round(single),
            "ratio": round(batched / single, 1),
            "memory_mb_per_100k_users": round((after - before) / count * 100_000 / 2**20, 1),
        }
        return {**result, **verify_cost(client, url, verify_lists[:verify_keys])}
    finally:
        server.terminate()
        server.wait()


def verify_cost(client, url: str, lists: list[tuple[str, list[str]]]) -> dict[str, float]:
    """The full completeness check of ``len(lists)`` published keys: digests on the server, and the fallback."""
    client.flushall()
    for _ in cache.publish_lists(url, lists, 90_000):
        pass
    keys = [key for key, _ in lists]
    sha1s = [cache.value_sha1(values) for _, values in lists]
    times = []
    for _ in range(5):
        started = time.perf_counter()
        assert cache.differing_keys(url, keys, sha1s) == []
        times.append(time.perf_counter() - started)
    client.delete(keys[len(keys) // 2])  # one key evicted: found, by reading back one batch
    started = time.perf_counter()
    assert cache.differing_keys(url, keys, sha1s) == [keys[len(keys) // 2]]
    one_missing = time.perf_counter() - started
    # The fallback where scripts are refused: every value read back (MGET per batch).
    client.execute_command("ACL", "SETUSER", "noscripts", "on", "nopass", "~*", "+@all", "-@scripting")
    fallback_url = url.replace("redis://", "redis://noscripts@")
    started = time.perf_counter()
    assert len(cache.differing_keys(fallback_url, keys, sha1s)) == 1
    fallback = time.perf_counter() - started
    return {
        "verify_keys": len(keys),
        "verify_script_calls": -(-len(keys) // cache.VERIFY_BATCH),  # all in one pipelined round trip
        "verify_s": round(statistics.median(times), 3),
        "verify_one_missing_s": round(one_missing, 3),
        "verify_fallback_mget_s": round(fallback, 3),
    }


def phase(name: str) -> None:
    """Progress on stderr: the phase reached and the memory so far."""
    print(f"{name}: rss {rss_mb():,.0f} MB, peak {peak_rss_mb():,.0f} MB", file=sys.stderr, flush=True)


def main() -> None:
    parser = shape_arguments(argparse.ArgumentParser())
    parser.add_argument("--publish-users", type=int, default=100_000)
    parser.add_argument("--verify-keys", type=int, default=87_585, help="keys the completeness check reads back")
    options = parser.parse_args()
    vectors, ids, movie_map, parts = synthetic(options.users, options.movies, options.ratings)
    everyone: dict[str, object] = {}

    folder = Path(tempfile.mkdtemp())
    for index, part in enumerate(parts):  # the ratings parts, as the task reads them from the bucket
        np.save(folder / f"part-{index:05d}.npy", part)
    count = len(parts)
    del parts

    def read_parts() -> list[np.ndarray]:
        return [np.load(folder / f"part-{index:05d}.npy") for index in range(count)]

    def stage() -> None:
        gathered = user_recs.gather(
            read_parts(), movie_map, ids, partitions.api_records([])
        )  # the parts are dropped after, as there
        everyone["gathered"] = gathered
        everyone["rows"] = user_recs.user_lists(gathered, np.arange(len(gathered.users)), vectors, TOP_N)

    reset_peak_rss()  # the stage's own peak: the input (parts, vectors) and what it builds from them
    stage_s = median_time(stage, options.repeats)
    stage_peak_mb = peak_rss_mb()
    phase("stage")
    gathered = everyone["gathered"]
    profiles = user_recs.build_profiles(gathered.interactions)
    block = user_recs.BLOCK_USERS
    unit = np.concatenate(
        [profiles.vectors(vectors, start, start + block) for start in range(0, len(profiles.users), block)]
    )
    phase("profiles")
    bare_s = median_time(lambda: bare(profiles, unit, vectors, TOP_N), options.repeats)

    def matmul_only() -> None:
        for start in range(0, len(profiles.users), block):
            unit[start : start + block] @ vectors.T  # each block's scores dropped, as the stage drops them

    matmul_s = median_time(matmul_only, options.repeats)
    phase("bare")
    changed = np.sort(np.random.default_rng(5).choice(len(gathered.users), 1_000, replace=False))

    def incremental() -> None:
        again = user_recs.gather(read_parts(), movie_map, ids, partitions.api_records([]))
        user_recs.user_lists(again, changed, vectors, TOP_N)

    incremental_s = median_time(incremental, options.repeats)
    phase("incremental")
    rng = np.random.default_rng(9)
    ours, api = recall(vectors, ids, gathered, everyone["rows"], rng.choice(len(gathered.users), 300, False), rng)
    result = {
        "shape": {"users": len(gathered.users), "movies": options.movies, "ratings": options.ratings},
        "stage_s": round(stage_s, 1),
        "bare_s": round(bare_s, 1),
        "stage_vs_bare": round(stage_s / bare_s, 3),
        "matmul_only_s": round(matmul_s, 1),
        "bare_vs_matmul": round(bare_s / matmul_s, 2),
        "stage_vs_matmul": round(stage_s / matmul_s, 2),
        "incremental_1000_users_s": round(incremental_s, 1),
        "incremental_vs_full": round(incremental_s / stage_s, 3),
        "peak_rss_mb": round(stage_peak_mb),
        "recall_at_10": round(ours, 4),
        "recall_at_10_api_method": round(api, 4),
        "publishing": publishing(options.publish_users, options.verify_keys),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
