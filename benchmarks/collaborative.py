"""The collaborative user lists (issue 24): their cost against the content lists, and ALS against EASE.

    .venv/bin/python benchmarks/collaborative.py [--users 200948 --movies 87585 --ratings 32000000] [--repeats 1]
    .venv/bin/python benchmarks/collaborative.py --small-only     the ml-latest-small comparison alone

Two parts, each printed as one JSON object:

- *cost* at a synthetic shape (default ml-32m's, ``benchmarks/user_recs.py``'s generator), each figure a
  median of ``--repeats`` runs in this process: ``user_recs.gather`` then the content lists of every user
  (what ``UpdateUserRecommendations`` computes today with ``USER_RECS_METHOD=content``), and the same
  gather then ``collaborative.lists`` (training implicit's ALS with ``collaborative.DEFAULT`` and scoring
  every user); the ratio collaborative / content (goal: <= 1.0) and each one's peak RSS (goal: <= 2 GB);
- *quality* on the real ml-latest-small (``../shared/data/movielens``), the quality stage's own holdout:
  hit rate@10 and NDCG@10 of the popular list (the content lists' need the model: the quality stage's
  figure), the tuned ALS (``methods``) and EASE
  (lambda chosen on the same tuning split), with EASE's time and the memory of its movies x movies matrix:
  why the pipeline trains ALS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.support import peak_rss_mb, reset_peak_rss, shape_arguments  # noqa: E402
from benchmarks.user_recs import TOP_N, synthetic  # noqa: E402
from mlrec_luigi import collaborative, methods, partitions, quality, user_recs  # noqa: E402
from mlrec_luigi.movielens import RATING_RECORD  # noqa: E402
from mlrec_luigi.similar import select_top_k  # noqa: E402

SMALL_ZIP = ROOT.parent / "shared/data/movielens/ml-latest-small.zip"
EASE_LAMBDAS = (50.0, 200.0, 500.0, 1000.0)


def cost(users: int, movies: int, ratings: int, repeats: int) -> dict:
    vectors, ids, movie_map, parts = synthetic(users, movies, ratings)
    content_s, collaborative_s, content_mb, collaborative_mb = [], [], [], []
    for _ in range(repeats):
        reset_peak_rss()
        started = time.perf_counter()
        gathered = user_recs.gather(parts, movie_map, ids, partitions.api_records([]))
        user_recs.user_lists(gathered, np.arange(len(gathered.users)), vectors, TOP_N)
        content_s.append(time.perf_counter() - started)
        content_mb.append(peak_rss_mb())
        del gathered
        reset_peak_rss()
        started = time.perf_counter()
        gathered = user_recs.gather(parts, movie_map, ids, partitions.api_records([]))
        collaborative.lists(gathered.interactions, len(gathered.users), len(ids), collaborative.DEFAULT, TOP_N)
        collaborative_s.append(time.perf_counter() - started)
        collaborative_mb.append(peak_rss_mb())
        del gathered
    content, ours = float(np.median(content_s)), float(np.median(collaborative_s))
    return {
        "shape": {"users": users, "movies": movies, "ratings": ratings},
        "params": collaborative.DEFAULT.as_dict(),
        "content_s": round(content, 1), "collaborative_s": round(ours, 1), "ratio": round(ours / content, 3),
        "content_peak_rss_mb": round(float(np.median(content_mb))),
        "collaborative_peak_rss_mb": round(float(np.median(collaborative_mb))),
        "runs_content_s": [round(t, 1) for t in content_s],
        "runs_collaborative_s": [round(t, 1) for t in collaborative_s],
        "repeats": repeats,
    }  # fmt: skip


def small_holdout() -> tuple[quality.Holdout, int]:
    with zipfile.ZipFile(SMALL_ZIP) as archive:
        ratings = pd.read_csv(archive.open("ml-latest-small/ratings.csv"))
        movies = pd.read_csv(archive.open("ml-latest-small/movies.csv"))
    part = np.empty(len(ratings), RATING_RECORD)
    for column in ("timestamp", "userId", "movieId", "rating"):
        part[column] = ratings[column].to_numpy()
    ids = np.sort(movies["movieId"].to_numpy())
    movie_row = np.full(int(ids.max()) + 1, -1, np.int32)
    movie_row[ids] = np.arange(len(ids), dtype=np.int32)
    return quality.build_holdout([part], movie_row, 1_000_000), len(ids)


def ease_lists(history: np.ndarray, users: int, movies: int, lam: float) -> np.ndarray:
    """EASE (Steck 2019): B = I - P / diag(P), P = (X'X + lam I)^-1, over the liked movies; seen masked."""
    like_users, like_rows = collaborative.like_pairs(history)
    liked_movies = np.unique(like_rows)
    x = np.zeros((users, len(liked_movies)), np.float32)
    x[like_users, np.searchsorted(liked_movies, like_rows)] = 1.0
    gram = (x.T @ x).astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    inverse = np.linalg.inv(gram)
    weights = inverse / -np.diag(inverse)
    weights[np.diag_indices_from(weights)] = 0.0
    scores = np.full((users, movies), -np.inf, np.float32)
    scores[:, liked_movies] = x @ weights.astype(np.float32)
    user_recs.mask_seen(scores, np.arange(users), collaborative.seen_pairs(history))
    picked, best = select_top_k(scores, quality.K)
    picked[best == -np.inf] = -1
    return picked


def small() -> dict:
    holdout, movies = small_holdout()
    users = len(holdout.users)
    started = time.perf_counter()
    als = methods.measure_collaborative(holdout, movies)
    als_s = time.perf_counter() - started
    train, target = methods.tuning_split(holdout.history, users)
    measured = np.flatnonzero(target >= 0)
    tuned = {lam: quality.measures(ease_lists(train, users, movies, lam)[measured], target[measured]).hit_rate
             for lam in EASE_LAMBDAS}  # fmt: skip
    lam = max(EASE_LAMBDAS, key=lambda value: (tuned[value], -value))
    reset_peak_rss()
    started = time.perf_counter()
    ease = quality.measures(ease_lists(holdout.history, users, movies, lam), holdout.held)
    ease_s, ease_mb = time.perf_counter() - started, peak_rss_mb()
    popular = quality.measures(quality.popular_fallback(holdout, 7, 4.0, 50), holdout.held)
    return {
        "users": users, "movies": movies,
        "popular": popular.as_dict(), "als": als["collaborative"], "als_tuning": als["tuning"],
        "als_s_tuning_and_measure": round(als_s, 2),
        "ease": {**ease.as_dict(), "lambda": lam}, "ease_tuning": {str(k): round(v, 6) for k, v in tuned.items()},
        "ease_s": round(ease_s, 2), "ease_peak_rss_mb": round(ease_mb),
        "ease_matrix_mb_at_ml_32m": round(87_585**2 * 8 / 1e6),
    }  # fmt: skip


def main() -> None:
    parser = shape_arguments(argparse.ArgumentParser())
    parser.add_argument("--small-only", action="store_true")
    options = parser.parse_args()
    print(json.dumps({"small": small()}, indent=1), flush=True)
    if not options.small_only:
        print(json.dumps({"cost": cost(options.users, options.movies, options.ratings, options.repeats)}, indent=1))


if __name__ == "__main__":
    main()
