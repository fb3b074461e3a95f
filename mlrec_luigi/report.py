"""The run report: a JSON manifest per run in the bucket, a human summary, a PNG chart.

    python -m mlrec_luigi.report               print a summary of the last run
    python -m mlrec_luigi.report --png         also draw the run on one page (var/report.png, under the current folder)
    python -m mlrec_luigi.report --check       exit 0 when the last DailyRun finished within --max-age-hours (26)
                                               and every list it published is still in Redis; else 1, one line
                                               (a service down or a damaged object: 1, one line; a setting: 2)

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
CLOCK_SKEW_HOURS = 0.25


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
        *method_lines(users.get("method")),
    ]
    lines.extend(quality_lines(stages.get("quality") or {}))
    checks = [(name, check) for name, marker in stages.items() for check in (marker or {}).get("checks") or []]
    if checks:
        lines.append("checks before publishing:")
        for name, check in checks:
            numbers = ", ".join(f"{k}={v}" for k, v in check.items() if k not in ("name", "passed"))
            verdict = "passed" if check.get("passed") else "FAILED"
            lines.append(f"  {verdict:<6} {name}: {check.get('name')} ({numbers})")
    lines.append("stages (last run of each; a stage's time includes its chunk tasks):")
    for name, marker in stages.items():
        run = (marker or {}).get("run") or {}
        own, chunks = stage_seconds(marker or {})
        took = f"{own + chunks:>8.2f} s" if run.get("duration_s") is not None else "       ? s"
        split = f" (chunks {chunks:.2f} s, own {own:.2f} s)" if run.get("chunks_s") is not None else ""
        lines.append(f"  {name:<18} {run.get('finished', '?'):<26} {took}{split}  {_counts(run.get('counts', {}))}")
    return "\n".join(lines)


def method_lines(method: Mapping[str, Any] | None) -> list[str]:
    """Which method computed the published user lists, with its hyper-parameters and why."""
    if not method:
        return []
    params = ", ".join(f"{k}={v}" for k, v in (method.get("params") or {}).items())
    return [f"        method {method.get('method')}{f' ({params})' if params else ''}, "
            f"USER_RECS_METHOD={method.get('setting')}: {method.get('why')}"]  # fmt: skip


def quality_lines(quality: Mapping[str, Any]) -> list[str]:
    """The quality stage's figures in two lines: the lists against their baselines, and the gate."""
    figures = quality.get("figures") or {}
    if not figures:
        return []

    def rate(name: str) -> str:
        found = figures.get(name) or {}
        return f"{found.get('hit_rate', 0):.4f}/{found.get('ndcg', 0):.4f}"

    gate = quality.get("gate") or {}
    verdict = "passed" if gate.get("passed") else ("confirmed despite a drop" if gate.get("confirmed") else "?")
    return [
        f"quality hit rate@10/NDCG@10 over {figures.get('users', '?')} users: content lists {rate('content')}, "
        f"collaborative {rate('collaborative')}, "
        f"popular {rate('popular')}, all-time popular {rate('popular_all_time')}, API's method {rate('api_method')}; "
        f"similar movies {rate('similar')}; catalogue covered {figures.get('coverage', 0):.1%}",
        f"        gate: {verdict} (live hit rate {gate.get('live_hit_rate')}, QUALITY_MAX_DROP {gate.get('max_drop')})",
    ]


def quality_history(bucket: Any, settings: Any, limit: int = 30) -> list[tuple[str, dict[str, Any]]]:
    """(date, quality figures) of the last ``limit`` runs' manifests, oldest first (unreadable ones skipped)."""
    from mlrec_luigi import layout

    keys = [key for key in bucket.list(layout.run_key(settings, "")) if not key.endswith("/latest.json")]
    history = []
    for key in sorted(keys)[-limit:]:
        try:
            manifest = bucket.read_json(key)
        except (FileNotFoundError, ValueError):
            continue
        figures = (
            ((manifest.get("stages") or {}).get("quality") or {}).get("figures") if isinstance(manifest, dict) else None
        )
        if isinstance(figures, dict):
            history.append((str(manifest.get("finished", "?"))[:16], figures))
    return history


def stage_seconds(marker: Mapping[str, Any]) -> tuple[float, float]:
    """(the stage's own run, its chunk tasks) in seconds, from its marker."""
    run = marker.get("run") or {}
    own, chunks = run.get("duration_s"), run.get("chunks_s")
    number = (int, float)
    return (float(own) if isinstance(own, number) else 0.0, float(chunks) if isinstance(chunks, number) else 0.0)


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


def main(argv: Sequence[str] | None = None) -> int:
    """The report command (and the freshness probe): every answer that is not the report is one line."""
    from mlrec_luigi.errors import Damaged, Expected, one_line
    from mlrec_luigi.logs import scrub
    from mlrec_luigi.settings import SettingsError

    parser = argparse.ArgumentParser(prog="python -m mlrec_luigi.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--png", type=Path, nargs="?", const=DEFAULT_PNG, help=f"also render the page (default path: {DEFAULT_PNG})"
    )
    parser.add_argument("--check", action="store_true", help="exit 1, in one line, when the last run is stale")
    parser.add_argument("--max-age-hours", type=float, default=26.0, help="with --check (default: 26)")
    options = parser.parse_args(argv)
    try:
        return _report(options)
    except SettingsError as error:
        print(scrub(f"error: {error}"), file=sys.stderr)
        return 2
    except Damaged as error:
        print(scrub(f"damaged: {error}"))
        return 1
    except Expected as error:  # a service down (MongoDB, Redis): the probe's answer, in one line
        print(scrub(f"unavailable: {one_line(error)}"))
        return 1


def _report(options: argparse.Namespace) -> int:
    from mlrec_luigi import layout
    from mlrec_luigi.damage import DamagedObject, json_decoder, read_checked
    from mlrec_luigi.readers import read_movie_map  # the one checked reader of the map
    from mlrec_luigi.settings import get_settings
    from mlrec_luigi.storage import open_bucket

    settings = get_settings()
    bucket = open_bucket(settings)
    latest = layout.run_key(settings)
    try:
        manifest = read_checked(bucket, latest, json_decoder(_is_manifest), "the next daily run writes it again")
    except FileNotFoundError:
        print(f"missing: no DailyRun has finished for {bucket.uri(latest)}: run the pipeline first")
        return 1
    if options.check:
        problem = freshness_problem(manifest, options.max_age_hours, bucket, settings)
        print(problem or f"ok: the DailyRun of {manifest.get('date')} finished {manifest.get('finished')}")
        return 1 if problem else 0
    print(summarize(manifest))
    history = quality_history(bucket, settings)
    if len(history) > 1:
        print("quality over runs (content hit rate@10): " + ", ".join(
            f"{when} {figures['content']['hit_rate']:.4f}" for when, figures in history[-7:]))  # fmt: skip
    zip_path = bucket.local_copy(layout.zip_key(settings), settings.cache_dir)
    try:
        movies = movielens.read_movies(zip_path, settings.max_member_bytes)
    except movielens.DatasetError as error:
        raise DamagedObject(str(error)) from None
    id_map = read_movie_map(bucket, settings)
    title_of = {id_map[m]: t for m, t in zip(movies["movieId"], movies["title"], strict=True) if m in id_map}
    popular = manifest["stages"].get("popular") or {}
    print(titles(popular, title_of, settings.redis_url))
    if options.png:
        from mlrec_luigi.report_chart import render_page

        pairs = [
            (title_of.get(i, i), n)
            for i, n in zip(popular.get("movie_ids", []), popular.get("counts", []), strict=True)
        ]
        chunks = movielens.iter_ratings(zip_path, settings.interactions_chunk_rows, settings.max_member_bytes)
        render_page(manifest, pairs, ratings_per_month(chunks), options.png, quality_history(bucket, settings))
        print(f"chart   {options.png}")
    return 0


def _is_manifest(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("stages"), dict) and isinstance(value.get("finished"), str)


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


def freshness_problem(manifest: Mapping[str, Any], max_age_hours: float, bucket: Any, settings: Any) -> str | None:
    """What is stale or missing about the last run, in one line; None when it is fresh and its lists are there.

    Read from the manifest and the records of what each stage published (no task is imported): every
    published key is compared with Redis; a user's key the API rewrote after that user interacted is the API's.
    """
    from mlrec_luigi import mongo, published, user_recs

    try:
        finished = dt.datetime.fromisoformat(str(manifest.get("finished")))
    except ValueError:
        return f"damaged: the last run report says it finished {manifest.get('finished')!r}, which is not a time"
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=dt.UTC)
    age_hours = (dt.datetime.now(dt.UTC) - finished).total_seconds() / 3600
    if age_hours < -CLOCK_SKEW_HOURS:  # a stored claim checked before it is believed: no run finishes in the future
        return f"damaged: the last run report says it finished {finished.isoformat()}, in the future: run the pipeline"
    if age_hours > max_age_hours:
        return (
            f"stale: the last DailyRun (date {manifest.get('date')}) finished {finished.isoformat()}, "
            f"{age_hours:.1f} h ago (more than --max-age-hours {max_age_hours:g})"
        )
    for name, stage in (manifest.get("stages") or {}).items():
        if not isinstance(stage, dict) or stage.get("redis") != published.PUBLISHED:
            continue
        if not isinstance(stage.get("record"), str) or settings.redis_url is None:
            return f"missing: {name} published to Redis but its record is not named: run the daily command again"
        record = published.read_record(bucket, stage["record"], "report")
        if record is None:
            return f"missing: the record of what {name} published ({bucket.uri(stage['record'])}) is gone"

        def owners_now(keys: list[str]) -> dict[str, int]:
            collection = mongo.open_mongo(settings)["interactions"]
            return user_recs.api_fingerprints_of_keys(collection, keys)

        gone = published.unpublished_keys(settings.redis_url, record, owners_now)
        if gone:
            return (
                f"missing: {len(gone):,} of the {len(record):,} key(s) {name} of {manifest.get('date')} published "
                f"are gone from Redis or changed (e.g. {gone[0]}): run the daily command again"
            )
    return None


if __name__ == "__main__":
    raise SystemExit(main())
