"""The user lists in partitions (issue 22): memory per task, one worker and two against today's single task,
a day with 1,000 changed users.

    .venv/bin/python benchmarks/partitions.py                       ml-32m's shape, then 5x (a few tasks)
    .venv/bin/python benchmarks/partitions.py --only 32m            ml-32m's shape alone

Every task runs as its own process (``--task``), as a Luigi worker runs it, on files in a scratch folder
standing in for the bucket, with the stage's own functions (``partitions.split_ratings``,
``user_recs.gather``/``user_lists``, the changed-users path of ``UserRecsPartition``); each reports its
wall time and peak RSS (VmHWM). Synthetic data of the given shape (``benchmarks/user_recs.py``'s
generator, written part by part: 5,000,000 ratings each, as PrepareRatings writes them).

- *today*: one process gathers every rating and scores every user (the stage before partitions);
- *one worker*: the shuffle (one task per part) then every partition, one after the other;
- *two workers*: the same tasks, two at a time (``--workers 2`` on these 2 cores): the partitions' wall time;
- *a day*: 1,000 API users changed (20 interactions each, half of them likes) among every user, each
  partition computing only its changed users from its state;
- *5x* (1,000,000 users, 160,000,000 ratings): the shuffle of every part and two partitions; peak RSS only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bson import ObjectId

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import WORK, peak_rss_mb, reset_peak_rss  # noqa: E402
from benchmarks.user_recs import DIMENSION, TOP_N  # noqa: E402
from mlrec_luigi import partitions, user_recs  # noqa: E402
from mlrec_luigi.movielens import RATING_RECORD  # noqa: E402

PART_ROWS = 5_000_000


def prepare(folder: Path, users: int, movies: int, ratings: int, seed: int = 22) -> int:
    """Vectors, ids and ratings parts in ``folder`` (kept between runs of the same shape); the parts' count."""
    done = folder / "prepared.json"
    if done.exists():
        return int(json.loads(done.read_text())["parts"])
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(movies, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(folder / "vectors.npy", vectors)
    np.save(folder / "ids.npy", np.array(sorted(str(ObjectId()) for _ in range(movies))))
    count = 0
    for start in range(0, ratings, PART_ROWS):
        size = min(PART_ROWS, ratings - start)
        part = np.empty(size, RATING_RECORD)
        part["userId"] = rng.integers(1, users + 1, size)
        part["movieId"] = rng.zipf(1.3, size) % movies + 1
        part["rating"] = rng.integers(1, 11, size) / 2
        part["timestamp"] = rng.integers(800_000_000, 1_700_000_000, size)
        np.save(folder / f"part-{count:05d}.npy", part)
        count += 1
    done.write_text(json.dumps({"parts": count}))
    return count


def movie_map(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    ids = np.load(folder / "ids.npy")
    return np.load(folder / "vectors.npy"), ids, {i + 1: hex_id for i, hex_id in enumerate(ids.tolist())}


def no_api() -> np.ndarray:
    return partitions.api_records([])


def task_today(folder: Path, parts: int) -> None:
    vectors, ids, mapping = movie_map(folder)
    loaded = [np.load(folder / f"part-{i:05d}.npy") for i in range(parts)]
    gathered = user_recs.gather(loaded, mapping, ids, no_api())
    del loaded
    user_recs.user_lists(gathered, np.arange(len(gathered.users)), vectors, TOP_N)


def task_shuffle(folder: Path, index: int, count: int) -> None:
    part = np.load(folder / f"part-{index:05d}.npy")
    out = folder / f"P{count}"
    out.mkdir(exist_ok=True)
    for partition, piece in enumerate(partitions.split_ratings(part, count)):
        np.save(out / f"part-{index:05d}-p-{partition:05d}.npy", piece)


def api_piece(folder: Path, count: int, partition: int) -> np.ndarray:
    path = folder / f"P{count}" / f"api-p-{partition:05d}.npy"
    return np.load(path) if path.exists() else no_api()


def task_partition(folder: Path, partition: int, count: int, parts: int) -> None:
    """One partition's content lists: all of them without a state, else only the changed users'."""
    vectors, ids, mapping = movie_map(folder)
    out = folder / f"P{count}"
    state_path = out / f"state-{partition:05d}.npy"
    piece = api_piece(folder, count, partition)
    if not state_path.exists():
        movielens = [np.load(out / f"part-{i:05d}-p-{partition:05d}.npy") for i in range(parts)]
        gathered = user_recs.gather(movielens, mapping, ids, piece)
        del movielens
        rows = user_recs.user_lists(gathered, np.arange(len(gathered.users)), vectors, TOP_N)
        records = user_recs.partition_records(gathered, rows, np.zeros(len(gathered.users), bool))
    else:
        state = np.load(state_path)
        changed = user_recs.changed_users(state, user_recs.api_fingerprints(piece))
        names = np.array(sorted(changed))
        numeric = np.array([int(u) for u in names.tolist() if u.isdigit()], dtype=np.int64)
        movielens = [
            (rows := np.load(out / f"part-{i:05d}-p-{partition:05d}.npy"))[np.isin(rows["userId"], numeric)]
            for i in range(parts)
        ]
        mine = piece[np.isin(np.char.decode(piece["user"]), names)] if len(piece) else piece
        gathered = user_recs.gather(movielens, mapping, ids, mine)
        rows = user_recs.user_lists(gathered, np.arange(len(gathered.users)), vectors, TOP_N)
        computed = user_recs.partition_records(gathered, rows, np.zeros(len(gathered.users), bool))
        records = user_recs.with_changes(state, changed, computed)
    np.save(state_path, records)


def changed_day(folder: Path, count: int, users: int, movies: int, changed: int = 1_000) -> int:
    """API documents of ``changed`` users (half MovieLens users, half new ones), written as the day's pieces."""
    _, ids, _ = movie_map(folder)
    rng = np.random.default_rng(7)
    docs = []
    for n in range(changed):
        user = str(int(rng.integers(1, users + 1))) if n % 2 else f"api-{n}"
        for _ in range(20):
            docs.append({"_id": ObjectId(), "userId": user, "movieId": str(ids[int(rng.integers(0, movies))]),
                         "type": "rate", "value": float(rng.choice([3.0, 5.0])), "timestamp": None})  # fmt: skip
    for partition, piece in enumerate(partitions.split_api(partitions.api_records(docs), count)):
        np.save(folder / f"P{count}" / f"api-p-{partition:05d}.npy", piece)
    return len(docs)


def run_task(*args: str) -> dict:
    """One task in its own process: its wall time and peak RSS."""
    result = subprocess.run([sys.executable, __file__, "--task", *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_all(tasks: list[list[str]], workers: int) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda args: run_task(*args), tasks))
    return time.perf_counter() - started, results


def shape(folder: Path, users: int, movies: int, ratings: int, full: bool) -> dict:
    parts = prepare(folder, users, movies, ratings)
    count = max(1, -(-ratings // PART_ROWS))  # USER_RECS_PARTITIONS=0: one per 5,000,000 ratings
    shutil.rmtree(folder / f"P{count}", ignore_errors=True)
    report: dict = {"shape": {"users": users, "movies": movies, "ratings": ratings}, "partitions": count}
    shuffle = [["shuffle", str(folder), str(i), str(count)] for i in range(parts)]
    every = [["partition", str(folder), str(p), str(count), str(parts)] for p in range(count)]
    if not full:  # 5x: the shuffle of every part, then two partitions
        took, shuffled = run_all(shuffle, 1)
        _, computed = run_all(every[:2], 1)
        report.update(shuffle_s=round(took, 1), shuffle_peak_rss_mb=max(r["peak_rss_mb"] for r in shuffled),
                      partition_s=[r["s"] for r in computed],
                      partition_peak_rss_mb=max(r["peak_rss_mb"] for r in computed))  # fmt: skip
        return report
    today = run_task("today", str(folder), str(parts))
    one_shuffle, shuffled = run_all(shuffle, 1)
    one_partitions, computed = run_all(every, 1)
    for p in range(count):
        (folder / f"P{count}" / f"state-{p:05d}.npy").unlink()
    two_partitions, _ = run_all(every, 2)
    documents = changed_day(folder, count, users, movies)
    day_s, _ = run_all(every, 1)
    one = one_shuffle + one_partitions
    report.update(
        today_s=today["s"], today_peak_rss_mb=today["peak_rss_mb"],
        one_worker_s=round(one, 1), shuffle_s=round(one_shuffle, 1), partitions_s=round(one_partitions, 1),
        one_worker_ratio=round(one / today["s"], 3),
        shuffle_peak_rss_mb=max(r["peak_rss_mb"] for r in shuffled),
        partition_peak_rss_mb=max(r["peak_rss_mb"] for r in computed),
        two_workers_partitions_s=round(two_partitions, 1),
        two_workers_speedup=round(one_partitions / two_partitions, 2),
        changed_day_s=round(day_s, 1), changed_day_ratio=round(day_s / one, 3), changed_day_api_documents=documents,
    )  # fmt: skip
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", nargs="+")
    parser.add_argument("--only", choices=("32m", "5x"))
    options = parser.parse_args()
    if options.task:
        kind, folder, *rest = options.task
        reset_peak_rss()
        started = time.perf_counter()
        if kind == "today":
            task_today(Path(folder), int(rest[0]))
        elif kind == "shuffle":
            task_shuffle(Path(folder), int(rest[0]), int(rest[1]))
        else:
            task_partition(Path(folder), int(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps({"s": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_rss_mb())}))
        return
    results = {}
    if options.only in (None, "32m"):
        results["ml_32m"] = shape(WORK / "partitions-32m", 200_948, 87_585, 32_000_000, full=True)
        print(json.dumps(results["ml_32m"]), flush=True)
    if options.only in (None, "5x"):
        results["five_x"] = shape(WORK / "partitions-5x", 1_004_740, 87_585, 160_000_000, full=False)
        print(json.dumps(results["five_x"]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
