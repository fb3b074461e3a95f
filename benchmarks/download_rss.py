"""DownloadMovieLens in a process of its own: peak RSS, and its time against a plain copy (run by run_all.py).

    .venv/bin/python benchmarks/download_rss.py http://127.0.0.1:PORT/download-512mb.zip var/bench/download-bucket

First copies the URL to a file with no hashing (the baseline: one pass over the bytes),
then runs the real DownloadMovieLens task (stream to disk with md5 + sha256, verify the zip,
put it in a local bucket). Prints JSON: both times and the process's peak RSS.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import WORK, build, peak_rss_mb, pipeline_env, print_json, reset_peak_rss, rss_mb  # noqa: E402


def main(url: str, bucket: Path) -> None:
    from mlrec_luigi import DownloadMovieLens
    from mlrec_luigi.logs import configure_logging
    from mlrec_luigi.storage import LocalBucket

    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(dir=WORK) as folder:
        started = time.perf_counter()
        with urllib.request.urlopen(url) as response, open(Path(folder) / "copy", "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        copy_s = time.perf_counter() - started
    rss_before = rss_mb()
    reset_peak_rss()
    shutil.rmtree(bucket, ignore_errors=True)
    name = url.rsplit("/", 1)[-1]
    pipeline_env(
        MOVIELENS_URL=url, MOVIELENS_ZIP_FILENAME=name, LOCAL_BUCKET_DIR=str(bucket), CACHE_DIR=str(WORK / "cache")
    )
    started = time.perf_counter()
    build(DownloadMovieLens())
    task_s = time.perf_counter() - started
    stored = LocalBucket(bucket)
    print_json(
        {
            "plain_copy_s": copy_s,
            "task_s": task_s,
            "task_over_copy": task_s / copy_s,
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_task_mb": rss_before,
            "stored_md5": stored.md5_hex(f"datasets/{name}"),
        }
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
