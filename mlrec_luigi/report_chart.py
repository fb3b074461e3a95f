"""The run report as one PNG page an operator reads in ten seconds.

What ran (date, dataset, model, when it finished), the popular list with its window and counts
(saying so when the window holds few ratings), how long each stage took (its own run and its
chunks), what the similar and user lists cover, and the ratings over time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlrec_luigi.report import stage_seconds

FEW_RATINGS = 100  # a window holding fewer ratings than this is said to hold few


def _share(part: object, whole: object) -> str:
    if not isinstance(part, int) or not isinstance(whole, int) or whole <= 0:
        return "?"
    return f"{part:,} of {whole:,} ({100 * part / whole:.0f} %)"


def coverage_lines(stages: Mapping[str, Any]) -> list[str]:
    """What the published lists cover, in words."""
    movies = (stages.get("load_movies") or {}).get("movies")
    users = stages.get("user_recs") or {}
    similar = stages.get("similar_movies") or {}
    return [
        f"users with a personal list: {_share(users.get('with_list'), users.get('users'))}; "
        f"published: {users.get('published', '?'):,}" if isinstance(users.get("published"), int) else
        f"users with a personal list: {_share(users.get('with_list'), users.get('users'))}",
        f"movies recommended to some user: {_share(users.get('movies_recommended'), movies)}",
        f"movies with a similar-movies list: {_share(similar.get('movies'), movies)}; "
        f"movies appearing as someone's similar movie: {_share(similar.get('movies_recommended'), movies)}",
    ]  # fmt: skip


def popular_title(popular: Mapping[str, Any]) -> tuple[str, str | None]:
    """The popular panel's title and, when the window holds few ratings, the note that says so."""
    start, end = str(popular.get("window_start", "?"))[:10], str(popular.get("window_end", "?"))[:10]
    counted = popular.get("ratings_counted")
    counted_text = f"{counted:,}" if isinstance(counted, int) else "?"
    title = (
        f"Recently popular: top {popular.get('movies', '?')} by ratings >= {popular.get('min_rating', '?')} "
        f"in the {popular.get('recent_days', '?')} days {start} .. {end} ({counted_text} ratings)"
    )
    note = None
    if isinstance(counted, int) and counted < FEW_RATINGS:
        note = (
            f"Few ratings: the window (it ends at the newest rating) holds only {counted}; "
            "small counts and ties broken by _id are true of the data, not a fault."
        )
    return title, note


def render_page(
    manifest: Mapping[str, Any],
    popular: Sequence[tuple[str, int]],
    monthly: pd.Series,
    path: Path,
    quality_history: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> None:
    """Draw the run report page into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    stages = manifest.get("stages") or {}
    figure = plt.figure(figsize=(13, 18))
    grid = figure.add_gridspec(5, 2, height_ratios=[0.35, 4, 2.2, 2.2, 1.8], hspace=0.5, wspace=0.45)
    source = Path(str((manifest.get("source") or {}).get("uri", "?"))).name
    figure.suptitle(
        f"mlrec-luigi daily run {manifest.get('date')} - {source} - model {manifest.get('embedding_model')}\n"
        f"finished {manifest.get('finished')} (UTC)",
        fontsize=14,
        fontweight="bold",
    )

    text = figure.add_subplot(grid[0, :])
    text.axis("off")
    text.text(0.0, 0.5, "\n".join(coverage_lines(stages)), fontsize=11, va="center", family="monospace")

    top = figure.add_subplot(grid[1, :])
    title, note = popular_title(stages.get("popular") or {})
    titles = [name[:60] for name, _ in popular][::-1]
    counts = [count for _, count in popular][::-1]
    top.barh(titles, counts, color="#3b6ea5")
    for y, count in enumerate(counts):
        top.text(count, y, f" {count}", va="center", fontsize=7)
    top.set_title(f"{title}\n{note}" if note else title, fontsize=10, color="#000000")
    top.set_xlabel("ratings in the window (whole counts)")
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.tick_params(axis="y", labelsize=7)
    top.set_xlim(0, max(counts, default=1) * 1.08)  # room for the count beside each bar

    times = figure.add_subplot(grid[2, 0])
    names = list(stages)
    own = [stage_seconds(stages[name])[0] for name in names]
    chunks = [stage_seconds(stages[name])[1] for name in names]
    times.barh(names, own, color="#3b6ea5", label="the stage's own run")
    times.barh(names, chunks, left=own, color="#e0a030", label="its chunk tasks")
    for y, (a, b) in enumerate(zip(own, chunks, strict=True)):
        times.text(a + b, y, f" {a + b:.1f} s", va="center", fontsize=8)
    times.set_title("How long each stage took (its last run)", fontsize=11)
    times.set_xlabel("seconds")
    times.invert_yaxis()
    times.legend(fontsize=8, loc="lower right")

    counts_axis = figure.add_subplot(grid[2, 1])
    rows = [
        ("movies", (stages.get("load_movies") or {}).get("movies")),
        ("ratings stored", (stages.get("load_interactions") or {}).get("stored")),
        ("users", (stages.get("user_recs") or {}).get("users")),
        ("user lists", (stages.get("user_recs") or {}).get("published")),
        ("similar lists", (stages.get("similar_movies") or {}).get("movies")),
    ]
    shown = [(label, value) for label, value in rows if isinstance(value, int)]
    counts_axis.barh([label for label, _ in shown], [value for _, value in shown], color="#5a9e6f")
    for y, (_, value) in enumerate(shown):
        counts_axis.text(value, y, f" {value:,}", va="center", fontsize=8)
    counts_axis.set_xscale("log")
    counts_axis.set_title("What the run holds (log scale)", fontsize=11)
    counts_axis.invert_yaxis()

    draw_quality(figure.add_subplot(grid[3, 0]), figure.add_subplot(grid[3, 1]), stages, quality_history)

    timeline = figure.add_subplot(grid[4, :])
    timeline.plot(pd.to_datetime(monthly.index), monthly.to_numpy(), color="#a53b3b")
    timeline.set_title("MovieLens ratings per month", fontsize=11)
    timeline.set_ylabel("ratings")
    timeline.yaxis.set_major_locator(MaxNLocator(integer=True))

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)


METHODS = [
    ("collaborative", "personal lists (collaborative)", "#7b4fa5"),
    ("content", "personal lists (content)", "#3b6ea5"),
    ("popular", "popular fallback", "#e0a030"),
    ("popular_all_time", "all-time popular", "#5a9e6f"),
    ("api_method", "API's 500 random", "#a53b3b"),
]


def hit_rate(figures: Mapping[str, Any], method: str) -> float:
    """A method's hit rate@10 in a run's figures; NaN (no point drawn) where that run did not measure it."""
    return float((figures.get(method) or {}).get("hit_rate", float("nan")))


def draw_quality(bars: Any, lines: Any, stages: Mapping[str, Any], history: Sequence[tuple[str, Any]]) -> None:
    """This run's hit rate@10 per method beside its baselines, and the personal lists' over runs."""
    figures = (stages.get("quality") or {}).get("figures") or {}
    if not figures:
        for axis in (bars, lines):
            axis.axis("off")
        bars.text(0, 0.5, "no quality figures in this run (MeasureQuality)", fontsize=10)
        return
    names = [label for key, label, _ in METHODS] + ["similar movies"]
    rates = [hit_rate(figures, key) for key, _, _ in METHODS] + [hit_rate(figures, "similar")]
    colours = [colour for _, _, colour in METHODS] + ["#777777"]
    bars.barh(names, rates, color=colours)
    for y, value in enumerate(rates):
        bars.text(value, y, f" {value:.4f}", va="center", fontsize=8)
    gate = (stages.get("quality") or {}).get("gate") or {}
    bars.set_title(f"Hit rate@10 on the holdout ({figures.get('users', '?'):,} users, "
                   f"+/-{figures.get('error_95', 0):.3f}); gate: {'passed' if gate.get('passed') else 'confirmed'}",
                   fontsize=10)  # fmt: skip
    bars.invert_yaxis()
    whens = [when for when, _ in history] or ["this run"]
    series = history or [("this run", figures)]
    for key, label, colour in METHODS:
        lines.plot(range(len(series)), [hit_rate(f, key) for _, f in series], marker="o", label=label, color=colour)
    lines.set_xticks(range(len(whens)), [when[5:] for when in whens], rotation=45, fontsize=7)
    lines.set_title("Hit rate@10 over runs (a drop is a new model or release)", fontsize=10)
    lines.legend(fontsize=7)
