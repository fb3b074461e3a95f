"""Similar movies (issue 11): the stage against the bare blocked matmul, memory, publishing, quality.

    .venv/bin/python benchmarks/similar.py [--repeats 3] [--sizes 9742 87585]
    .venv/bin/python benchmarks/similar.py --rss 87585      (one child run: prints its peak RSS)

Prints one JSON object per figure and a Markdown table for BENCHMARKS.md. Each time is the
median of ``--repeats`` runs; ratios compare runs of the same process on the same vectors.
Synthetic unit vectors time the compute (the stage's cost does not depend on what the vectors
mean); the quality figures use the real MiniLM embeddings of ml-latest-small. MongoDB is the null
wire server (benchmarks/null_mongo.py): the stage reads no document, only counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import (  # noqa: E402
    WORK,
    build,
    median_time,
    null_mongo,
    peak_rss_mb,
    pipeline_env,
    pretend_complete,
    print_json,
)
from tests.support.zips import write_zip  # noqa: E402

REAL_ZIP = ROOT.parent / "shared/data/movielens/ml-latest-small.zip"
DIMENSION = 384
TOP_N = 10
API_SAMPLE = 500  # the API's own method: score the movie against a random $sample of 500


def unit_vectors(count: int, seed: int = 11) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, DIMENSION)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def bare_top_k(vectors: np.ndarray, k: int, rows: int = 256) -> None:
    """The baseline: blocked matmul + argpartition + a sort of the k best, nothing else."""
    for start in range(0, len(vectors), rows):
        scores = vectors[start : start + rows] @ vectors.T
        best = np.argpartition(-scores, k, axis=1)[:, : k + 1]
        np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1), axis=1)


def stage_inputs(count: int, vectors: np.ndarray, mongodb_uri: str) -> dict[str, str]:
    """A bucket where LoadMovies is done for ``count`` movies with ``vectors``; sets and returns the settings."""
    from bson import ObjectId

    from mlrec_luigi import Embeddings, LoadMovies, embedding, layout, mongo
    from mlrec_luigi.settings import get_settings
    from mlrec_luigi.storage import LocalBucket

    folder = WORK / f"similar-{count}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    movies = "movieId,title,genres\n" + "".join(f"{i},Movie {i} (2000),Drama\n" for i in range(1, count + 1))
    zip_path = write_zip(
        folder / "ml-similar.zip", {"movies.csv": movies, "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,1\n"}
    )
    bucket = LocalBucket(folder / "bucket")
    bucket.upload_file(zip_path, "datasets/ml-similar.zip")
    values = {
        "MOVIELENS_URL": zip_path.as_uri(),
        "MOVIELENS_ZIP_FILENAME": zip_path.name,
        "LOCAL_BUCKET_DIR": str(folder / "bucket"),
        "CACHE_DIR": str(folder / "cache"),
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": "mlrec_bench",
        "SIMILAR_MOVIES_TOP_N": str(TOP_N),
    }
    pipeline_env(**values)
    settings = get_settings()
    md5 = bucket.md5_hex("datasets/ml-similar.zip")
    chunk_keys = []
    for index, start in enumerate(range(0, count, settings.embedding_chunk_size)):
        stop = min(start + settings.embedding_chunk_size, count)
        key = layout.embedding_chunk_key(settings, settings.hf_model_name, md5, settings.embedding_chunk_size, index)
        bucket.write_bytes(key, embedding.pack_chunk(list(range(start + 1, stop + 1)), vectors[start:stop]))
        chunk_keys.append(key)
    pretend_complete(Embeddings(), movies=count, chunks=chunk_keys)
    map_key = layout.movie_id_map_key(settings)
    bucket.write_json(map_key, {str(i): str(ObjectId()) for i in range(1, count + 1)})
    # The null wire server counts what it received: LoadMovies' completeness check costs a round trip,
    # as an index-served count does on MongoDB (mongomock would scan in Python and dwarf the stage).
    mongo.open_mongo(settings).movies.insert_many([{"movieId_ml": i} for i in range(1, count + 1)])
    pretend_complete(LoadMovies(), movies=count, map_key=map_key, map_md5=bucket.md5_hex(map_key))
    return values


def run_stage(values: dict[str, str]) -> None:
    """UpdateSimilarMovies and its blocks, from nothing computed (REDIS_URL unset: no publishing)."""
    from luigi.task_register import Register

    from mlrec_luigi import UpdateSimilarMovies

    shutil.rmtree(Path(values["LOCAL_BUCKET_DIR"]) / "datasets/ml-similar/similar", ignore_errors=True)
    (Path(values["LOCAL_BUCKET_DIR"]) / "datasets/ml-similar/markers/similar_movies.json").unlink(missing_ok=True)
    Register.clear_instance_cache()
    build(UpdateSimilarMovies())


def bench_stage(count: int, repeats: int) -> dict[str, Any]:
    vectors = unit_vectors(count)
    with null_mongo() as uri:
        values = stage_inputs(count, vectors, uri)
        stage = median_time(lambda: run_stage(values), repeats)
    bare = median_time(lambda: bare_top_k(vectors, TOP_N), repeats)
    return {"figure": "similar_stage", "movies": count, "stage_s": round(stage, 3), "bare_s": round(bare, 3),
            "ratio": round(stage / bare, 3), "goal": "<= 1.2"}  # fmt: skip


def child_rss(count: int) -> None:
    with null_mongo() as uri:
        values = stage_inputs(count, unit_vectors(count), uri)
        run_stage(values)
    print_json({"figure": "similar_rss", "movies": count, "peak_rss_mb": round(peak_rss_mb(), 1)})


def bench_rss(count: int) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--rss", str(count)], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return json.loads(output.strip().splitlines()[-1]) | {"goal": "< 1024 MB"}


def bench_publish(count: int, repeats: int) -> dict[str, Any]:
    import redis

    from mlrec_luigi import cache
    from tests.support.env import redis_command

    folder = WORK / "similar-redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = 6390
    server = subprocess.Popen(redis_command(port, folder), stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        ids = [f"{i:024x}" for i in range(count)]
        lists = [(f"rec:item:{ids[i]}", [ids[(i + j) % count] for j in range(1, TOP_N + 1)]) for i in range(count)]
        pipelined = median_time(lambda: list(cache.publish_lists(url, lists, 90_000)), repeats)
        client = redis.Redis.from_url(url)

        def one_by_one() -> None:
            for key, values in lists:
                client.set(key, cache.encode_list(values), ex=90_000)

        single = median_time(one_by_one, repeats)
    finally:
        server.terminate()
        server.wait()
    return {"figure": "similar_publish", "keys": count, "pipelined_keys_per_s": round(count / pipelined),
            "set_per_round_trip_keys_per_s": round(count / single), "ratio": round(single / pipelined, 1),
            "goal": ">= 20"}  # fmt: skip


def bench_quality(sample_movies: int = 2000, seed: int = 5) -> dict[str, Any]:
    """recall@10 of the stage's lists and of the API's 500-random-candidates method, real embeddings."""
    from mlrec_luigi import embedding, movielens, similar
    from mlrec_luigi.settings import DEFAULT_MODEL_NAME

    texts = movielens.read_movies(REAL_ZIP, 10**10)["text"].tolist()
    model = embedding.load_model(DEFAULT_MODEL_NAME, "cpu", "fp32", True)
    vectors = embedding.encode(model, texts, 64)
    count = len(vectors)
    rows = np.concatenate(
        [similar.compute_block(vectors, s, min(s + 2048, count), TOP_N) for s in range(0, count, 2048)]
    )
    rng = np.random.default_rng(seed)
    ours = api = 0.0
    picked = rng.choice(count, size=sample_movies, replace=False)
    for movie in picked:
        exact = vectors.astype(np.float64) @ vectors[movie].astype(np.float64)
        exact[movie] = -np.inf
        truth = set(np.argsort(-exact, kind="stable")[:TOP_N].tolist())
        ours += len(truth & set(rows["neighbours"][movie].tolist())) / TOP_N
        candidates = rng.choice(np.delete(np.arange(count), movie), size=API_SAMPLE, replace=False)
        api_best = candidates[np.argsort(-exact[candidates])[:TOP_N]]
        api += len(truth & set(api_best.tolist())) / TOP_N
    return {"figure": "similar_quality", "movies": count, "checked": sample_movies,
            "recall_at_10_pipeline": round(ours / sample_movies, 4),
            "recall_at_10_api_sample_500": round(api / sample_movies, 4),
            "goal": "pipeline = 1.0"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[9742, 87_585])
    parser.add_argument("--rss", type=int, help="(internal) run the stage once in this process, print its peak RSS")
    parser.add_argument("--only", nargs="+", default=["stage", "rss", "publish", "quality"])
    options = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if options.rss:
        child_rss(options.rss)
        return
    results = []
    for count in options.sizes:
        if "stage" in options.only:
            results.append(bench_stage(count, options.repeats))
            print_json(results[-1])
        if "rss" in options.only:
            results.append(bench_rss(count))
            print_json(results[-1])
    if "publish" in options.only:
        results.append(bench_publish(max(options.sizes), options.repeats))
        print_json(results[-1])
    if "quality" in options.only:
        results.append(bench_quality())
        print_json(results[-1])
    (WORK / "similar-results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
