"""Peak RSS of loading interactions, the real Luigi stage in one process (run by run_all.py).

    .venv/bin/python benchmarks/load_rss.py var/bench/ml-synth-10000000.zip mongodb://127.0.0.1:PORT/

Runs LoadInteractions (PrepareRatings, every InteractionsChunk, the marker) with one worker
against the given server (run_all.py gives the null wire server, so the figure is the
pipeline's own memory, not a database's) and prints the process's peak RSS as JSON.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import (  # noqa: E402
    WORK,
    build,
    interactions_bucket,
    peak_rss_mb,
    pipeline_env,
    print_json,
    reset_peak_rss,
    rss_mb,
)


def main(zip_path: Path, mongodb_uri: str) -> None:
    from mlrec_luigi import LoadInteractions
    from mlrec_luigi.logs import configure_logging
    from mlrec_luigi.settings import get_settings
    from mlrec_luigi.storage import open_bucket

    configure_logging("WARNING")
    pipeline_env(**interactions_bucket(zip_path, WORK / "rss-bucket", mongodb_uri, 250_000))
    rss_at_start = rss_mb()
    reset_peak_rss()
    started = time.perf_counter()
    build(LoadInteractions())
    seconds = time.perf_counter() - started
    marker = open_bucket(get_settings()).read_json(f"datasets/{zip_path.stem}/markers/load_interactions.json")
    print_json(
        {
            "ratings": marker["rows"],
            "inserted": marker["inserted"],
            "chunks": marker["chunks"],
            "peak_rss_mb": peak_rss_mb(),
            "rss_at_start_mb": rss_at_start,
            "seconds": seconds,
            "rows_per_s": marker["rows"] / seconds,
        }
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
