"""Operating the pipeline: cron, the run report, two datasets under one luigid (several machines: test_many_machines).

Everything runs the way an operator runs it: `scripts/luigid.sh`, the `luigi` command,
the crontab line (`flock … scripts/run-pipeline.sh`), `python -m mlrec_luigi.report`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import redis

from tests.e2e.test_scheduler_and_secrets import scheduler_api
from tests.support.env import subprocess_env
from tests.support.processes import MOVIELENS_ZIP, PROJECT, background, free_port, wait_until
from tests.support.runs import USER_RUN, all_tasks, finished_events, scheduled_dag_command
from tests.support.zips import real_slice

MOVIES, RATINGS, CHUNK, INTERACTION_CHUNK_ROWS, SIMILAR_BLOCK = 120, 1500, 20, 500, 50


def base_env(tmp_path: Path, mongo: tuple[str, str], redis_url: str, **extra: str) -> dict[str, str]:
    uri, database = mongo
    zip_path = real_slice(MOVIELENS_ZIP, tmp_path / "ml-ops.zip", MOVIES, RATINGS)
    return subprocess_env(
        tmp_path,
        MOVIELENS_URL=zip_path.as_uri(),
        MONGODB_URI=uri,
        MONGODB_DATABASE=database,
        REDIS_URL=redis_url,
        EMBEDDING_CHUNK_SIZE=str(CHUNK),
        INTERACTIONS_CHUNK_ROWS=str(INTERACTION_CHUNK_ROWS),
        SIMILAR_MOVIES_BLOCK_ROWS=str(SIMILAR_BLOCK),
        **extra,
    )


def test_cron_line_for_two_days_then_the_report(tmp_path: Path, wire_mongo, redis_url) -> None:
    env = base_env(tmp_path, wire_mongo, redis_url)
    lock = tmp_path / "pipeline.lock"

    def cron(date: str) -> subprocess.CompletedProcess[str]:
        line = f"flock -n {lock} bash scripts/run-pipeline.sh --date {date}"
        return subprocess.run(["bash", "-c", line], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)

    first = cron("2026-11-23")
    assert first.returncode == 0, first.stderr[-3000:]
    users = json.loads((tmp_path / "bucket/datasets/ml-ops/markers/user_recs/2026-11-23.json").read_text())
    model = ["TrainCollaborative"] if users["method"]["method"] == "collaborative" else []  # as "best" chose
    assert {e["task"] for e in finished_events(first.stderr)} == set(all_tasks(TrainCollaborative=len(model)))
    second = cron("2026-11-24")
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(e["task"] for e in finished_events(second.stderr)) == sorted(
        ["DailyRun", "UpdatePopular", *USER_RUN, *model]
    )  # the popular list, the day's read of the API, the partition (and model), the publishing

    # The report: a human summary of the last run, and a chart.
    png = tmp_path / "report.png"
    report = subprocess.run(
        [sys.executable, "-m", "mlrec_luigi.report", "--png", str(png)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stderr == ""  # no runpy RuntimeWarning, no log noise
    assert "for date 2026-11-24" in report.stdout
    assert f"movies  {MOVIES} (inserted {MOVIES}, updated 0, unchanged 0)" in report.stdout
    assert f"ratings {RATINGS} read" in report.stdout
    assert "redis: published" in report.stdout
    assert f"similar {MOVIES} movies x 10 neighbours, redis: published" in report.stdout
    recomputed = r"\d+" if model else "0"  # the collaborative lists are all computed from the day's model
    assert re.search(rf"users   \d+ users, [1-9]\d* lists published \({recomputed} recomputed, \d+ unchanged\)",
                     report.stdout)  # fmt: skip
    assert "similar_movies" in report.stdout and "load_interactions" in report.stdout
    # What a person wants to see: titles, of the popular list and of a few movies' similar movies.
    shown = re.search(r"popular movies \(top (\d+) of \d+\):\n   1\. .+ \(\d{4}\) \(\d+ ratings\)", report.stdout)
    assert shown, report.stdout
    similar_lines = report.stdout.split("similar movies (as the API serves them):\n")[1].splitlines()
    similar_lines = similar_lines[: min(3, int(shown.group(1)))]
    assert similar_lines and all(
        re.fullmatch(r"  .+ \(\d{4}\): .+ \(\d{4}\)(, .+)*", line) for line in similar_lines
    ), similar_lines
    assert "passed load_movies: embeddings finite and unit length" in report.stdout
    assert "passed load_interactions: a release removes at most RELEASE_MAX_REMOVED_FRACTION" in report.stdout
    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 900 and image.shape[1] >= 1000
    assert np.unique(image.reshape(-1, image.shape[2]), axis=0).shape[0] > 10  # not a blank canvas
    print(report.stdout)

    # The freshness probe, as cron or a Kubernetes probe runs it: exit 0, or 1 with one line.
    def probe(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mlrec_luigi.report", "--check", *extra]
        return subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)

    fresh = probe()
    assert (fresh.returncode, fresh.stderr) == (0, ""), fresh.stdout + fresh.stderr[-2000:]
    old = probe("--max-age-hours", "0")
    assert (
        old.returncode == 1 and len(old.stdout.splitlines()) == 1 and old.stdout.startswith("stale: the last DailyRun")
    )
    redis.Redis.from_url(redis_url).flushall()
    lost = probe()
    assert lost.returncode == 1 and len(lost.stdout.splitlines()) == 1, lost.stdout + lost.stderr[-2000:]
    assert lost.stdout.startswith("missing: ") and "Redis" in lost.stdout
    never = subprocess.run(
        [sys.executable, "-m", "mlrec_luigi.report", "--check"],
        cwd=PROJECT,
        env={**env, "LOCAL_BUCKET_DIR": str(tmp_path / "empty-bucket")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert never.returncode == 1 and never.stdout.startswith("missing: no DailyRun has finished"), never.stdout


def test_two_datasets_under_one_luigid_at_once_stay_apart(
    tmp_path: Path, wire_mongo, redis_server, monkeypatch
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("LUIGID_PORT", str(port))
    monkeypatch.setenv("LUIGID_DIR", str(tmp_path / "luigid"))
    with background(["bash", str(PROJECT / "scripts/luigid.sh")], tmp_path / "luigid.out"):
        wait_until(lambda: scheduler_api(url, "task_list") is not None, "luigid", timeout_s=120)
        uri, database = wire_mongo
        runs = {}
        for name, movies, db_index in (("ml-small-a", 60, 1), ("ml-small-b", 80, 2)):
            zip_path = real_slice(MOVIELENS_ZIP, tmp_path / f"{name}.zip", movies, 500)
            env = subprocess_env(
                tmp_path,  # one bucket folder: the datasets share it, as staging and production share a project
                MOVIELENS_URL=zip_path.as_uri(),
                MONGODB_URI=uri,
                MONGODB_DATABASE=f"{database}_{db_index}",
                REDIS_URL=redis_server.rsplit("/", 1)[0] + f"/{db_index}",
                EMBEDDING_CHUNK_SIZE="20",
            )
            command = scheduled_dag_command(port, "--no-lock")
            runs[name] = (subprocess.Popen(command, cwd=PROJECT, env=env, stderr=subprocess.PIPE, text=True), movies)
        for name, (run, movies) in runs.items():
            log = run.communicate(timeout=600)[1]
            assert run.returncode == 0, log[-3000:]
            marker = json.loads((tmp_path / f"bucket/datasets/{name}/markers/load_movies.json").read_text())
            assert marker["movies"] == movies
        done = scheduler_api(url, "task_list", status="DONE", upstream_status="")
        dailies = sorted(task["params"]["dataset"] for task in done.values() if task["name"] == "DailyRun")
        assert [d.rsplit("/", 1)[-1] for d in dailies] == ["ml-small-a", "ml-small-b"]
        assert all(task["params"].get("dataset") for task in done.values())  # every row names its dataset
