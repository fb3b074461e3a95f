"""The run report: a JSON manifest per run in the bucket, a human summary, a PNG chart.

    python -m mlrec_luigi.report               print a summary of the last run
    python -m mlrec_luigi.report --png r.png   also draw the popular movies and the ratings over time

The manifest (``<ds>/runs/<finished>-<date>.json`` and ``<ds>/runs/latest.json``) is written
by ``DailyRun`` at the end of each run: the source zip's checksum and the marker of every
stage, each with the counts and duration of the stage's last run.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlrec_luigi import movielens


def build_manifest(
    *,
    date: dt.date,
    source: Mapping[str, Any],
    model: str,
    stages: Mapping[str, Any],
) -> dict[str, Any]:
    """The run manifest as plain JSON values."""
    finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {
        "finished": finished,
        "date": date.isoformat(),
        "source": dict(source),
        "embedding_model": model,
        "stages": dict(stages),
    }


def summarize(manifest: Mapping[str, Any]) -> str:
    """A few lines an operator reads: what ran, how much, how long."""
    stages = manifest["stages"]
    movies = stages.get("load_movies") or {}
    interactions = stages.get("load_interactions") or {}
    popular = stages.get("popular") or {}
    similar = stages.get("similar_movies") or {}
    lines = [
        f"run finished {manifest['finished']} for date {manifest['date']}",
        f"source  {manifest['source'].get('uri')} md5 {manifest['source'].get('md5')}",
        f"model   {manifest['embedding_model']}",
        f"movies  {movies.get('movies', '?')} (inserted {movies.get('inserted', '?')}, "
        f"updated {movies.get('updated', '?')}, unchanged {movies.get('unchanged', '?')})",
        f"ratings {interactions.get('rows', '?')} read, {interactions.get('inserted', '?')} inserted, "
        f"{interactions.get('already_present', '?')} already present, "
        f"{interactions.get('skipped_unknown_movie', '?')} unknown movie, {interactions.get('rejected', '?')} rejected",
        f"popular {popular.get('movies', '?')} movies, window {popular.get('window_start')} .. "
        f"{popular.get('window_end')}, redis: {popular.get('redis')}",
        f"similar {similar.get('movies', '?')} movies x {similar.get('neighbours', '?')} neighbours, "
        f"redis: {similar.get('redis')}",
        "stages (last run of each):",
    ]
    for name, marker in stages.items():
        run = (marker or {}).get("run") or {}
        duration = run.get("duration_s")
        took = f"{duration:>8.2f} s" if isinstance(duration, int | float) else "       ? s"
        lines.append(f"  {name:<18} {run.get('finished', '?'):<26} {took}  {_counts(run.get('counts', {}))}")
    return "\n".join(lines)


def _counts(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if isinstance(v, int | float) and not isinstance(v, bool))


def ratings_per_month(chunks: Iterable[movielens.RatingsChunk]) -> pd.Series:
    """Number of ratings per calendar month (UTC), computed chunk by chunk."""
    total: pd.Series | None = None
    for chunk in chunks:
        months = pd.to_datetime(chunk.frame["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m")
        counts = months.value_counts()
        total = counts if total is None else total.add(counts, fill_value=0)
    return (total if total is not None else pd.Series(dtype="int64")).sort_index().astype("int64")


def render_chart(popular: Sequence[tuple[str, int]], monthly: pd.Series, path: Path) -> None:
    """Draw the popular movies (title, count) and the ratings per month into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, timeline) = plt.subplots(2, 1, figsize=(11, 10), gridspec_kw={"height_ratios": [3, 2]})
    titles = [title[:50] for title, _ in popular][::-1]
    top.barh(titles, [count for _, count in popular][::-1], color="#3b6ea5")
    top.set_title(f"Recently popular movies (top {len(popular)})")
    top.set_xlabel("ratings >= threshold in the window")
    top.tick_params(axis="y", labelsize=7)
    timeline.plot(pd.to_datetime(monthly.index), monthly.to_numpy(), color="#a53b3b")
    timeline.set_title("Ratings per month")
    timeline.set_ylabel("ratings")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """The report command."""
    from mlrec_luigi import layout
    from mlrec_luigi.settings import get_settings
    from mlrec_luigi.storage import open_bucket

    parser = argparse.ArgumentParser(prog="python -m mlrec_luigi.report", description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, help="also render the chart into this PNG file")
    options = parser.parse_args(argv)

    settings = get_settings()
    bucket = open_bucket(settings)
    try:
        manifest = bucket.read_json(layout.run_key(settings))
    except FileNotFoundError:
        print(f"no run report at {bucket.uri(layout.run_key(settings))}: run the pipeline first")
        return 1
    print(summarize(manifest))
    if options.png:
        zip_path = bucket.local_copy(layout.zip_key(settings), settings.cache_dir)
        movies = movielens.read_movies(zip_path, settings.max_member_bytes)
        id_map = bucket.read_json(layout.movie_id_map_key(settings))
        title_of = {
            id_map[str(m)]: t for m, t in zip(movies["movieId"], movies["title"], strict=True) if str(m) in id_map
        }
        popular = manifest["stages"].get("popular") or {}
        pairs = [
            (title_of.get(i, i), n)
            for i, n in zip(popular.get("movie_ids", []), popular.get("counts", []), strict=True)
        ]
        chunks = movielens.iter_ratings(zip_path, settings.interactions_chunk_rows, settings.max_member_bytes)
        render_chart(pairs, ratings_per_month(chunks), options.png)
        print(f"chart   {options.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
