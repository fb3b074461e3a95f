"""The probe and the report as an operator types them: every answer that is not the report is one line.

`python -m mlrec_luigi.report --check` against a run report and records written as the stages write
them, with Redis or MongoDB unreachable, a report that says it finished in the future, and a healthy one.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from mlrec_luigi import published
from mlrec_luigi.storage import LocalBucket
from tests.support.env import subprocess_env
from tests.support.processes import free_port

DS = "datasets/ml-latest-small"
KEYS = ["rec:user:1", "rec:user:2"]
LISTS = [["a", "b"], ["c"]]


def write_run(folder: Path, finished: dt.datetime) -> None:
    """A run report whose user lists were published, with the record of every key (fingerprints included)."""
    bucket = LocalBucket(folder / "bucket")
    record = published.write_record(bucket, f"{DS}/user_recs/published/2026-11-24.npy", KEYS, LISTS,
                                    {published.FINGERPRINT: np.zeros(2, np.uint64)})  # fmt: skip
    stage = {"redis": "published", **record, "users": 2, "published": 2}
    manifest = {"finished": finished.isoformat(timespec="seconds"), "date": "2026-11-24",
                "source": {"uri": "x", "md5": "y"}, "embedding_model": "m", "stages": {"user_recs": stage}}  # fmt: skip
    bucket.write_json(f"{DS}/runs/latest.json", manifest)


def probe(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlrec_luigi.report", "--check"], cwd=folder,
        env=subprocess_env(folder, **env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


NOW = dt.datetime.now(dt.UTC)


def test_a_healthy_run_is_ok_and_a_lost_key_is_missing(tmp_path: Path, redis_url: str) -> None:
    write_run(tmp_path, NOW)
    client = redis.Redis.from_url(redis_url)
    for key, values in zip(KEYS, LISTS, strict=True):
        client.set(key, json.dumps(values, separators=(",", ":")))
    result = probe(tmp_path, REDIS_URL=redis_url)
    assert result.returncode == 0 and result.stdout.startswith("ok: the DailyRun of 2026-11-24"), result.stdout
    client.delete("rec:user:2")  # evicted: the API's MongoDB (the try-out store) says user 2 did not interact
    line = one_line(probe(tmp_path, REDIS_URL=redis_url))
    assert line.startswith("missing: 1 of the 2 key(s) user_recs of 2026-11-24 published") and "rec:user:2" in line


@pytest.mark.parametrize("service", ["Redis", "MongoDB"])
def test_an_unreachable_service_is_one_line_with_the_password_masked(
    tmp_path: Path, redis_url: str, service: str
) -> None:
    write_run(tmp_path, NOW)
    dead = free_port()
    if service == "Redis":
        env = {"REDIS_URL": f"redis://:hunter2@127.0.0.1:{dead}/0"}
        expected = f"unavailable: RedisUnavailable: REDIS_URL redis://:***@127.0.0.1:{dead}/0"
    else:  # the keys differ, so the probe asks MongoDB whether their users interacted since
        env = {"REDIS_URL": redis_url, "MONGODB_URI": f"mongodb://app:hunter2@127.0.0.1:{dead}/db"}
        expected = f"unavailable: MongoUnavailable: MONGODB_URI mongodb://app:***@127.0.0.1:{dead}/db"
    result = probe(tmp_path, **env)
    line = one_line(result)
    assert line.startswith(expected), line
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("finished", ["future", "not-a-time"])
def test_a_run_report_that_cannot_be_believed_is_damaged(tmp_path: Path, redis_url: str, finished: str) -> None:
    write_run(tmp_path, NOW + dt.timedelta(days=3))
    if finished == "not-a-time":
        latest = tmp_path / f"bucket/{DS}/runs/latest.json"
        latest.write_text(latest.read_text().replace('"finished": "', '"finished": "soon'))
    line = one_line(probe(tmp_path, REDIS_URL=redis_url))
    assert line.startswith("damaged: the last run report says it finished"), line


def test_the_page_says_when_the_popular_window_holds_few_ratings() -> None:
    from mlrec_luigi.report_chart import popular_title

    few = {"movies": 21, "min_rating": 4.0, "recent_days": 7, "ratings_counted": 21,
           "window_start": "2018-09-17T14:27:30+00:00", "window_end": "2018-09-24T14:27:30+00:00"}  # fmt: skip
    title, note = popular_title(few)
    assert "top 21 by ratings >= 4.0 in the 7 days 2018-09-17 .. 2018-09-24 (21 ratings)" in title
    assert note is not None and "holds only 21" in note
    assert popular_title({**few, "ratings_counted": 5_000})[1] is None


def test_a_worker_whose_share_another_ran_counts_the_dag_done_only_when_it_is(monkeypatch) -> None:
    from types import SimpleNamespace

    from mlrec_luigi.tasks import exit_codes
    from mlrec_luigi.tasks.exit_codes import done_elsewhere

    monkeypatch.setattr(exit_codes, "ROOT_WAIT_S", 1.2)

    class Root:
        def __init__(self, done: bool | int) -> None:
            self.done = done  # an int: complete at that check (another machine finishing the root meanwhile)

        def complete(self) -> bool:
            if isinstance(self.done, bool):
                return self.done
            self.done -= 1
            return self.done <= 0

    def summary_of(root: Root, **sets: set) -> dict[str, set]:
        base = {name: set() for name in ("already_done", "completed", "failed", "scheduling_error",
                                          "still_pending_ext", "run_by_other_worker", "not_run")}  # fmt: skip
        return {**base, **sets}

    cases = [(True, set(), True), (False, set(), False), (True, {"x"}, False), (2, set(), True), (9, set(), False)]
    for root_done, failed, expect_zero in cases:
        root = Root(root_done)
        worker = SimpleNamespace(_add_task_history=[(root, "PENDING", True)])
        sets = done_elsewhere(lambda w, r=root, f=failed: summary_of(r, run_by_other_worker={"chunk"}, failed=f))(
            worker
        )
        assert (not sets["run_by_other_worker"] and root in sets["already_done"]) == expect_zero
