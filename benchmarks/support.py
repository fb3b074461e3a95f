"""What the benchmarks share: the null wire server, a prepared bucket, a pipeline environment."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var/bench"


@contextlib.contextmanager
def null_mongo() -> Iterator[str]:
    """A running ``benchmarks/null_mongo.py``; yields its URI."""
    folder = Path(tempfile.mkdtemp(dir=WORK))
    address = folder / "address"
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks/null_mongo.py"), str(address)])
    try:
        deadline = time.monotonic() + 20
        while not address.exists() or not address.read_text():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("benchmarks/null_mongo.py did not start")
            time.sleep(0.05)
        yield address.read_text()
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def mongoeco_server() -> Iterator[str]:
    """A MongoDB wire-protocol server that outlives the pipeline's processes (tests/support/mongoeco_server.py)."""
    folder = Path(tempfile.mkdtemp(dir=WORK))
    address = folder / "address"
    command = [str(ROOT / ".venv-mongoeco/bin/python"), str(ROOT / "tests/support/mongoeco_server.py"), str(address)]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while not address.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the mongoeco server did not start (bash scripts/setup.sh --test builds it)")
            time.sleep(0.05)
        yield f"mongodb://{address.read_text()}/?socketTimeoutMS=120000"
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def pipeline_env(**values: str) -> None:
    """Point the pipeline's settings at ``values`` for this process (and forget cached clients)."""
    import luigi

    from mlrec_luigi import mongo, readers, settings

    os.environ.update({"MLREC_ENV_FILE": str(WORK / "no.env"), "HF_HUB_OFFLINE": "1", **values})
    settings.get_settings.cache_clear()
    mongo.forget_clients()
    readers.movies_in.cache_clear()
    luigi.task_register.Register.clear_instance_cache()


def build(*tasks: Any, workers: int = 1) -> None:
    """``luigi.build`` that raises when a task fails."""
    import luigi
    from luigi.execution_summary import LuigiStatusCode

    result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING", workers=workers)
    if result.status not in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        raise RuntimeError(result.summary_text)


def pretend_complete(stage: Any, **content: Any) -> None:
    """Write ``stage``'s marker (and its upstream stages', when incomplete) as if it had run.

    For benchmarks that time one stage alone: its inputs are put in place by the benchmark,
    and the markers record them with the stamps the stage checks.
    """
    for upstream in stage.upstream():
        if not upstream.complete():
            pretend_complete(upstream)
    stage.write_marker(content)


def interactions_bucket(zip_path: Path, bucket: Path, mongodb_uri: str, chunk_rows: int) -> dict[str, str]:
    """A local bucket where the stages before LoadInteractions are done; sets and returns the settings.

    The zip is in place (DownloadMovieLens done) and LoadMovies' marker and map are written
    (random ``_id``s), so LoadInteractions runs alone, as it does in the real DAG.
    """
    from bson import ObjectId

    from mlrec_luigi import LoadMovies, layout, movielens
    from mlrec_luigi.settings import get_settings
    from mlrec_luigi.storage import LocalBucket

    shutil.rmtree(bucket, ignore_errors=True)
    folder = bucket / "datasets"
    folder.mkdir(parents=True)
    shutil.copy(zip_path, folder / zip_path.name)
    values = {
        "MOVIELENS_URL": zip_path.as_uri(),
        "MOVIELENS_ZIP_FILENAME": zip_path.name,
        "LOCAL_BUCKET_DIR": str(bucket),
        "CACHE_DIR": str(bucket.parent / "cache"),
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": "mlrec_bench",
        "INTERACTIONS_CHUNK_ROWS": str(chunk_rows),
    }
    pipeline_env(**values)
    movie_ids = movielens.read_movies(zip_path, 10**10)["movieId"].tolist()
    local = LocalBucket(bucket)
    map_key = layout.movie_id_map_key(get_settings())
    local.write_json(map_key, {str(m): str(ObjectId()) for m in movie_ids})
    pretend_complete(LoadMovies(), movies=0, map_key=map_key, map_md5=local.md5_hex(map_key))
    return values


def forget_loaded_chunks(bucket: Path) -> None:
    """Remove the interaction chunk markers and LoadInteractions' marker, keeping the prepared parts."""
    for marker in bucket.rglob("markers/interactions"):
        shutil.rmtree(marker)
    for marker in bucket.rglob("markers/load_interactions.json"):
        marker.unlink()


def median_time(function: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``function``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB.

    Not ``getrusage``: on Linux its ``ru_maxrss`` survives fork and exec, so a benchmark
    child would report its parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    """Start a new peak (VmHWM) from the current resident memory (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def print_json(value: Any) -> None:
    print(json.dumps(value), flush=True)


def shape_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The synthetic shape (default: ml-32m's) and the repeats every user-lists benchmark takes."""
    parser.add_argument("--users", type=int, default=200_948)
    parser.add_argument("--movies", type=int, default=87_585)
    parser.add_argument("--ratings", type=int, default=32_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    return parser
