"""Which method computes the published user lists: the collaborative model tuned, measured, and chosen.

Plain numpy, no Luigi. On the quality stage's holdout (``quality.py``):

- *tuning split*: inside each measured user's history, their newest like (ties: the smallest
  catalogue row) is hidden again, with everything at or after it; each point of
  ``collaborative.GRID`` is trained on what is left and scored by hit rate@10 on those likes. The
  held-out likes the quality stage reports are never seen by the tuning: they are not in the history.
- *measure*: the chosen hyper-parameters are trained on the whole history and measured on the
  held-out likes, as the content lists are.
- *choice* (``USER_RECS_METHOD``): ``content`` and ``collaborative`` are taken as said; ``best`` takes
  the collaborative lists only when they found more held-out likes than the content lists *and* no
  fewer than the popular list the API shows everyone; otherwise the API's own content definition.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlrec_luigi import collaborative, quality
from mlrec_luigi.collaborative import Params


def tuning_split(history: np.ndarray, users: int) -> tuple[np.ndarray, np.ndarray]:
    """(the history to train on, each user's tuning like: a catalogue row, -1 for none).

    ``history``: ``user_recs.INTERACTION`` rows of users ``0 .. users - 1``. A user's tuning like is their
    newest like (ties: smallest row); their rows at or after its time, and any of its movie, are left out.
    """
    target = np.full(users, -1, np.int32)
    at_time = np.full(users, np.iinfo(np.int64).max, np.int64)
    liked = np.flatnonzero(history["liked"] & (history["row"] >= 0))
    order = liked[np.lexsort((history["row"][liked], -history["time_us"][liked], history["user"][liked]))]
    owners = history["user"][order]
    first = order[np.r_[True, owners[1:] != owners[:-1]]] if len(order) else order
    target[history["user"][first]] = history["row"][first]
    at_time[history["user"][first]] = history["time_us"][first]
    owner = history["user"]
    keep = (history["time_us"] < at_time[owner]) & (history["row"] != target[owner])
    return history[keep], target


def tune(holdout: quality.Holdout, movies: int) -> tuple[Params, list[dict[str, Any]]]:
    """The grid point with the highest hit rate@10 on the tuning split (ties: the earlier), and every point's."""
    users = len(holdout.users)
    train, target = tuning_split(holdout.history, users)
    has_like = np.zeros(users, bool)
    has_like[train["user"][train["liked"] & (train["row"] >= 0)]] = True
    measured = np.flatnonzero((target >= 0) & has_like)
    if not len(measured):
        return collaborative.DEFAULT, []
    points = []
    for params in collaborative.GRID:
        rows = collaborative.lists(train, users, movies, params, quality.K)
        hit_rate = quality.measures(rows[measured], target[measured]).hit_rate
        points.append({**params.as_dict(), "users": len(measured), "hit_rate": round(hit_rate, 6)})
    best = max(range(len(points)), key=lambda i: (points[i]["hit_rate"], -i))
    return collaborative.GRID[best], points


def measure_collaborative(holdout: quality.Holdout, movies: int) -> dict[str, Any]:
    """The collaborative figures of the quality stage: the tuning, then the measure with the chosen point."""
    params, points = tune(holdout, movies)
    rows = collaborative.lists(holdout.history, len(holdout.users), movies, params, quality.K)
    return {
        "collaborative": {**quality.measures(rows, holdout.held).as_dict(), "params": params.as_dict()},
        "tuning": points,
        "collaborative_coverage": quality.coverage(rows, movies),
    }


def choose(setting: str, figures: dict[str, Any] | None) -> dict[str, Any]:
    """The method the user lists are computed with, its hyper-parameters and why, from the quality figures."""
    figures = figures or {}
    measured = figures.get("collaborative") or {}
    params = Params.from_dict(measured["params"]) if measured.get("params") else collaborative.DEFAULT
    chosen: dict[str, Any] = {"setting": setting}
    if setting == "content":
        return {**chosen, "method": "content", "why": "USER_RECS_METHOD=content"}
    collaborative_choice = {**chosen, "method": "collaborative", "params": params.as_dict()}
    if setting == "collaborative":
        return {**collaborative_choice, "why": "USER_RECS_METHOD=collaborative"}
    ours, content, popular = (float((figures.get(name) or {}).get("hit_rate", 0.0))
                              for name in ("collaborative", "content", "popular"))  # fmt: skip
    figures_said = f"hit rate@10: collaborative {ours:.4f}, content {content:.4f}, popular {popular:.4f}"
    if ours > content and ours >= popular:
        return {**collaborative_choice, "why": figures_said}
    return {**chosen, "method": "content", "why": f"{figures_said}: the collaborative model is not better"}
