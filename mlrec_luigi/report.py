"""The run report: a JSON manifest per run in the bucket, a human summary, a PNG chart.

    python -m mlrec_luigi.report               print a summary of the last run
    python -m mlrec_luigi.report --png         also draw the popular movies and the ratings over time (var/report.png)
    python -m mlrec_luigi.report --check       exit 0 when the last DailyRun finished within --max-age-hours (26)
                                               and every list it published is still in Redis; else 1, one line

The manifest (``<ds>/runs/<finished>-<date>.json`` and ``<ds>/runs/latest.json``) is written
by ``DailyRun`` at the end of each run: the source zip's checksum and the marker of every
stage, each with the counts and duration of the stage's last run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlrec_luigi import movielens

DEFAULT_PNG = Path("var/report.png")
SHOWN_POPULAR = 10
SHOWN_SIMILAR = 3


def summarize(manifest: Mapping[str, Any]) -> str:
    """A few lines an operator reads: what ran, how much, how long."""
    stages = manifest["stages"]
    movies = stages.get("load_movies") or {}
    interactions = stages.get("load_interactions") or {}
    popular = stages.get("popular") or {}
    similar = stages.get("similar_movies") or {}
    users = stages.get("user_recs") or {}
    backfill = (
        " (a backfill: its popular list is computed, not the live one)" if popular.get("redis") == "not_live" else ""
    )
    lines = [
        f"run finished {manifest['finished']} for date {manifest['date']}{backfill}",
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
        f"users   {users.get('users', '?')} users, {users.get('published', '?')} lists published "
        f"({users.get('recomputed', '?')} recomputed, {users.get('reused', '?')} unchanged), "
        f"redis: {users.get('redis')}",
    ]
    checks = [(name, check) for name, marker in stages.items() for check in (marker or {}).get("checks") or []]
    if checks:
        lines.append("checks before publishing:")
        for name, check in checks:
            numbers = ", ".join(f"{k}={v}" for k, v in check.items() if k not in ("name", "passed"))
            verdict = "passed" if check.get("passed") else "FAILED"
            lines.append(f"  {verdict:<6} {name}: {check.get('name')} ({numbers})")
    lines.append("stages (last run of each):")
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
    """The report command (and the freshness probe)."""
    from mlrec_luigi import layout
    from mlrec_luigi.settings import SettingsError, get_settings
    from mlrec_luigi.storage import open_bucket

    parser = argparse.ArgumentParser(prog="python -m mlrec_luigi.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--png", type=Path, nargs="?", const=DEFAULT_PNG, help=f"also render the chart (default path: {DEFAULT_PNG})"
    )
    parser.add_argument("--check", action="store_true", help="exit 1, in one line, when the last run is stale")
    parser.add_argument("--max-age-hours", type=float, default=26.0, help="with --check (default: 26)")
    options = parser.parse_args(argv)

    try:
        settings = get_settings()
        bucket = open_bucket(settings)
        manifest = bucket.read_json(layout.run_key(settings))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError:
        print(f"missing: no DailyRun has finished for {bucket.uri(layout.run_key(settings))}: run the pipeline first")
        return 1
    except ValueError as error:
        print(f"damaged: {bucket.uri(layout.run_key(settings))} is not a run report ({error})")
        return 1
    if options.check:
        problem = freshness_problem(manifest, options.max_age_hours)
        print(problem or f"ok: the DailyRun of {manifest.get('date')} finished {manifest.get('finished')}")
        return 1 if problem else 0
    print(summarize(manifest))
    from mlrec_luigi.damage import DamagedObject
    from mlrec_luigi.readers import read_movie_map  # the one checked reader of the map

    zip_path = bucket.local_copy(layout.zip_key(settings), settings.cache_dir)
    try:
        movies = movielens.read_movies(zip_path, settings.max_member_bytes)
        id_map = read_movie_map(bucket, settings)
    except (DamagedObject, movielens.DatasetError) as error:
        print(f"damaged: {error}")
        return 1
    title_of = {id_map[m]: t for m, t in zip(movies["movieId"], movies["title"], strict=True) if m in id_map}
    popular = manifest["stages"].get("popular") or {}
    print(titles(popular, title_of, settings.redis_url))
    if options.png:
        pairs = [
            (title_of.get(i, i), n)
            for i, n in zip(popular.get("movie_ids", []), popular.get("counts", []), strict=True)
        ]
        chunks = movielens.iter_ratings(zip_path, settings.interactions_chunk_rows, settings.max_member_bytes)
        render_chart(pairs, ratings_per_month(chunks), options.png)
        print(f"chart   {options.png}")
    return 0


def titles(popular: Mapping[str, Any], title_of: Mapping[str, str], redis_url: str | None) -> str:
    """What a person wants to see: the popular titles, and the similar movies of the first few."""
    from mlrec_luigi import cache
    from mlrec_luigi.settings import SIMILAR_REDIS_PREFIX

    ids, counts = popular.get("movie_ids") or [], popular.get("counts") or []
    lines = [f"popular movies (top {min(SHOWN_POPULAR, len(ids))} of {len(ids)}):"]
    for rank, (movie, count) in enumerate(zip(ids[:SHOWN_POPULAR], counts, strict=False), 1):
        lines.append(f"  {rank:>2}. {title_of.get(movie, movie)} ({count} ratings)")
    if redis_url is None:
        lines.append("similar movies: REDIS_URL is not set (the lists are kept in the bucket)")
        return "\n".join(lines)
    lines.append("similar movies (as the API serves them):")
    shown = ids[:SHOWN_SIMILAR]
    for movie, similar in zip(
        shown, cache.read_lists(redis_url, [f"{SIMILAR_REDIS_PREFIX}{m}" for m in shown]), strict=True
    ):
        names = ", ".join(title_of.get(i, i) for i in similar[:5]) if similar else "(no list in Redis)"
        lines.append(f"  {title_of.get(movie, movie)}: {names}")
    return "\n".join(lines)


def freshness_problem(manifest: Mapping[str, Any], max_age_hours: float) -> str | None:
    """What is stale or missing about the last run, in one line; None when it is fresh and its lists are there."""
    from mlrec_luigi.tasks.daily import DailyRun  # the tasks: only for the probe

    finished = dt.datetime.fromisoformat(str(manifest.get("finished")))
    age_hours = (dt.datetime.now(dt.UTC) - finished).total_seconds() / 3600
    if age_hours > max_age_hours:
        return (
            f"stale: the last DailyRun (date {manifest.get('date')}) finished {finished.isoformat()}, "
            f"{age_hours:.1f} h ago (more than --max-age-hours {max_age_hours:g})"
        )
    daily = DailyRun(date=dt.date.fromisoformat(str(manifest.get("date"))))
    for stage in daily.upstream():
        if not stage.complete():
            return (
                f"missing: {stage.task_family} of {manifest.get('date')} no longer holds: what it published is gone "
                "from Redis or its inputs changed; run the daily command again"
            )
    return None


if __name__ == "__main__":
    raise SystemExit(main())
