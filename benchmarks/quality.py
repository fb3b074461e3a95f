"""The quality stage's cost (issue 23) against the user-lists stage, measured in the same run.

    .venv/bin/python benchmarks/quality.py [--users 200948 --movies 87585 --ratings 32000000] [--repeats 1]

Synthetic data of the given shape (default: ml-32m's, ``benchmarks/user_recs.py``'s generator). Figures,
each a median of ``--repeats`` runs in this process:

- user lists: ``user_recs.gather`` then ``user_lists`` for every user (what ``UpdateUserRecommendations``
  computes on a full run);
- quality: ``quality.build_holdout`` (a stable sample of ``--sample-users`` users, their ratings only)
  then ``quality.evaluate`` (the content lists from each history, the popular and all-time popular
  baselines, the API's method over 3 seeds, the similar movies of 2,000 users' previous like) and
  ``methods.measure_collaborative`` (the ALS grid on the tuning split, then the chosen point measured);
- the ratio quality / user lists (goal: <= 0.5), and the peak RSS of the quality computation;
- the sample's margin: the 95 % half-width of a rate over the users measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import peak_rss_mb, reset_peak_rss, shape_arguments  # noqa: E402
from benchmarks.user_recs import TOP_N, synthetic  # noqa: E402
from mlrec_luigi import methods, partitions, quality, user_recs  # noqa: E402


def main() -> None:
    parser = shape_arguments(argparse.ArgumentParser())
    parser.add_argument("--sample-users", type=int, default=20_000)
    options = parser.parse_args()
    vectors, ids, movie_map, parts = synthetic(options.users, options.movies, options.ratings)
    movie_row = np.full(options.movies + 2, -1, np.int32)
    movie_row[1 : options.movies + 1] = np.arange(options.movies, dtype=np.int32)  # movieId i+1 is row i

    stage_times, quality_times, peaks = [], [], []
    figures: dict = {}
    for _ in range(options.repeats):
        started = time.perf_counter()
        gathered = user_recs.gather(parts, movie_map, ids, partitions.api_records([]))
        user_recs.user_lists(gathered, np.arange(len(gathered.users)), vectors, TOP_N)
        stage_times.append(time.perf_counter() - started)
        del gathered
        reset_peak_rss()
        started = time.perf_counter()
        holdout = quality.build_holdout(parts, movie_row, options.sample_users)
        figures = quality.evaluate(holdout, vectors, 7, 4.0, 50)
        figures.update(methods.measure_collaborative(holdout, len(vectors)))  # as MeasureQuality does
        quality_times.append(time.perf_counter() - started)
        peaks.append(peak_rss_mb())
        del holdout
    stage, cost = float(np.median(stage_times)), float(np.median(quality_times))
    print(json.dumps({
        "shape": {"users": options.users, "movies": options.movies, "ratings": options.ratings},
        "sample_users": options.sample_users, "users_measured": figures.get("users"),
        "user_lists_s": round(stage, 1), "quality_s": round(cost, 1), "ratio": round(cost / stage, 3),
        "quality_peak_rss_mb": round(float(np.median(peaks))), "error_95": figures.get("error_95"),
        "repeats": options.repeats,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
