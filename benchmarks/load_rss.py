"""Peak RSS of the interactions load path for one zip (run as its own process by run_all.py).

    .venv/bin/python benchmarks/load_rss.py var/bench/ml-synth-10000000.zip

Streams ratings.csv in chunks, validates, builds the interaction documents and hands them to
a sink that counts and drops them, so the figure is the pipeline's own memory, not a database's.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from bson import ObjectId

from mlrec_luigi import documents, movielens

CHUNK_ROWS = 100_000


def main(zip_path: Path) -> None:
    movies = movielens.read_movies(zip_path, 10**10)
    id_map = {m: str(ObjectId()) for m in movies["movieId"].tolist()}
    started, rows = time.perf_counter(), 0
    for chunk in movielens.iter_ratings(zip_path, CHUNK_ROWS, 10**10):
        docs, _ = documents.interaction_documents(chunk.frame, id_map)
        rows += len(chunk.frame)
        del docs
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ratings": rows, "peak_rss_mb": peak_mb, "seconds": seconds, "rows_per_s": rows / seconds}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
