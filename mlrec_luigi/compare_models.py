"""Compare an embedding model with the live one without publishing anything.

    python -m mlrec_luigi.compare_models --model PATH_OR_NAME

Embeds every movie of the dataset in the bucket with the given model (a local folder, or a name that
resolves to a local copy), measures its lists on the quality stage's holdout (``quality.py``) and
prints its figures beside the live ones (``quality/live.json``, the model the gate last let through).
Writes nothing to the bucket, MongoDB or Redis. Needs a run that prepared the ratings (PrepareRatings).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlrec_luigi import embedding, layout, movielens, quality
from mlrec_luigi.damage import json_decoder, read_checked
from mlrec_luigi.errors import Damaged, Expected, one_line
from mlrec_luigi.logs import scrub
from mlrec_luigi.readers import read_ratings_part
from mlrec_luigi.settings import Settings, SettingsError, get_settings
from mlrec_luigi.storage import Bucket, open_bucket


def figures_of(model_name: str, settings: Settings, bucket: Bucket) -> dict[str, Any]:
    """The quality figures of ``model_name``'s lists on the holdout of the dataset in the bucket."""
    md5 = bucket.md5_hex(layout.zip_key(settings))
    if md5 is None:
        raise SettingsError(f"{bucket.uri(layout.zip_key(settings))} is missing: run the pipeline first")
    manifest_key = layout.ratings_manifest_key(settings, md5, settings.interactions_chunk_rows)
    try:
        manifest = read_checked(bucket, manifest_key, json_decoder(lambda v: isinstance(v, dict) and "parts" in v),
                                "the next run prepares the ratings again")  # fmt: skip
    except FileNotFoundError:
        raise SettingsError(f"{bucket.uri(manifest_key)} is missing: run PrepareRatings first") from None
    movies = movielens.read_movies(bucket.local_copy(layout.zip_key(settings), settings.cache_dir),
                                   settings.max_member_bytes)  # fmt: skip
    model = embedding.load_model(model_name, settings.hf_device, settings.embedding_precision, settings.hf_hub_offline)
    vectors = embedding.encode(model, movies["text"].tolist(), settings.embedding_batch_size)
    order = np.argsort(movies["movieId"].to_numpy(), kind="stable")
    movie_ids = movies["movieId"].to_numpy()[order]
    movie_row = np.full(int(movie_ids.max(initial=0)) + 1, -1, np.int32)
    movie_row[movie_ids] = np.arange(len(movie_ids), dtype=np.int32)
    parts = [read_ratings_part(bucket, settings, md5, settings.interactions_chunk_rows, i)
             for i in range(len(manifest["parts"]))]  # fmt: skip
    holdout = quality.build_holdout(parts, movie_row, settings.quality_sample_users)
    return quality.evaluate(holdout, vectors[order].astype(np.float32), settings.popularity_recent_days,
                            settings.popularity_min_rating, settings.popularity_top_n)  # fmt: skip


def table(model_name: str, figures: dict[str, Any], live: dict[str, Any] | None) -> str:
    """The figures as lines a person compares."""
    lines = [f"users measured: {figures['users']:,} (95 % margin of a rate: at most +/-{figures['error_95']:.4f})",
             f"{'method':<34} {'hit rate@10':>12} {'NDCG@10':>9}"]  # fmt: skip
    if live is not None:
        lines.insert(0, f"live model: {live.get('model')}")
        lines.append(f"{'the live model':<34} {live['hit_rate']:>12.4f} {live.get('ndcg', 0):>9.4f}")
    lines.insert(0, f"this model: {model_name}")
    for name, label in [("content", "this model"), ("popular", "popular fallback"),
                        ("popular_all_time", "all-time popular (unseen)"), ("api_method", "API's 500 random"),
                        ("similar", "similar movies of the last like")]:  # fmt: skip
        lines.append(f"{label[:34]:<34} {figures[name]['hit_rate']:>12.4f} {figures[name]['ndcg']:>9.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlrec_luigi.compare_models", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local model folder, or a name with a local copy")
    options = parser.parse_args(argv)
    try:
        settings = get_settings()
        bucket = open_bucket(settings)
        figures = figures_of(options.model, settings, bucket)
        live = quality.read_live_figures(bucket, layout.quality_live_key(settings))
    except SettingsError as error:
        print(scrub(f"error: {error}"), file=sys.stderr)
        return 2
    except (Damaged, Expected) as error:
        print(scrub(f"error: {one_line(error)}"), file=sys.stderr)
        return 1
    print(table(options.model, figures, live))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
