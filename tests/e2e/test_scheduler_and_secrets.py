"""The DAG under a real central scheduler (`luigid`), and secrets that never leak.

Runs the real `luigi` command against a real `luigid` on loopback, then reads the
scheduler's HTTP API (what the dashboard shows): every task DONE, progress reported while
running, and no password from MONGODB_URI or REDIS_URL in any log line, task parameter
or error text.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import redis_command, subprocess_env
from tests.support.processes import PROJECT, background, free_port, wait_until
from tests.support.runs import all_tasks, luigi_command, scheduled_dag_command
from tests.support.zips import real_slice

MONGO_PASSWORD = "m0ngo-S3cret-pw"
REDIS_PASSWORD = "r3dis-S3cret-pw"


@pytest.fixture
def luigid(tmp_path: Path) -> Iterator[str]:
    """A real luigid on loopback; yields its base URL."""
    port = free_port()
    command = [
        str(Path(luigi_command()[0]).with_name("luigid")),
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-path",
        str(tmp_path / "state.pickle"),
        "--logdir",
        str(tmp_path),
    ]
    with background(command, tmp_path / "luigid.out"):
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: urllib.request.urlopen(f"{url}/api/task_list?data={{}}", timeout=1).status == 200, "luigid")
        yield url


def scheduler_api(url: str, method: str, **data: Any) -> Any:
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    with urllib.request.urlopen(f"{url}/api/{method}?{query}", timeout=10) as response:
        return json.loads(response.read())["response"]


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = redis_command(port, tmp_path, "--requirepass", REDIS_PASSWORD)
    with background(command, tmp_path / "redis.log"):
        import redis

        wait_until(lambda: redis.Redis(port=port, password=REDIS_PASSWORD).ping(), "redis-server")
        yield f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"


@pytest.fixture
def env(tmp_path: Path, protected_redis: str) -> dict[str, str]:
    zip_path = real_slice(PROJECT.parent / "shared/data/movielens/ml-latest-small.zip", tmp_path / "ml.zip", 60, 600)
    return subprocess_env(
        tmp_path,
        MOVIELENS_URL=zip_path.as_uri(),
        # mongomock keeps the password only in the URI: the point is where that URI's text may surface.
        MONGODB_URI=f"mongomock://app:{MONGO_PASSWORD}@localhost/mlrec",
        REDIS_URL=protected_redis,
        EMBEDDING_CHUNK_SIZE="20",
        INTERACTIONS_CHUNK_ROWS="100",
    )


def run_under_scheduler(url: str, env: dict[str, str], *extra: str) -> tuple[subprocess.CompletedProcess[str], list]:
    """Run the DAG against luigid while polling the API for running tasks' progress."""
    port = urllib.parse.urlsplit(url).port
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                seen.extend(scheduler_api(url, "task_list", status="RUNNING", upstream_status="").values())
            done.wait(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        command = scheduled_dag_command(port, *extra)
        result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:
        done.set()
        poller.join()
    return result, seen


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert MONGO_PASSWORD not in text and REDIS_PASSWORD not in text


def test_dag_under_luigid_ends_done_reports_progress_and_leaks_no_secret(luigid: str, env: dict[str, str]) -> None:
    result, running = run_under_scheduler(luigid, env)
    assert result.returncode == 0, result.stderr[-3000:]

    done = scheduler_api(luigid, "task_list", status="DONE", upstream_status="")
    families = sorted(task["name"] for task in done.values())
    model = families.count("TrainCollaborative")  # whichever method "best" measured better on this slice
    assert model in (0, 1)
    assert families == all_tasks(EmbeddingChunk=3, InteractionsChunk=6, ShuffleRatingsPart=6, TrainCollaborative=model)
    assert all(task["params"]["dataset"].endswith("/datasets/ml") for task in done.values())
    for status in ("PENDING", "RUNNING", "FAILED"):
        assert scheduler_api(luigid, "task_list", status=status, upstream_status="") == {}

    # Long tasks report progress while they run (what the dashboard shows).
    reported = {(t["name"], bool(t.get("status_message")), t.get("progress_percentage") is not None) for t in running}
    assert any(name == "EmbeddingChunk" and has_message for name, has_message, _ in reported), reported
    # The scheduler keeps each task's last report: a finished task is at 100 % and says what it did.
    chunks = [task for task in done.values() if task["name"] == "InteractionsChunk"]
    assert all(t["progress_percentage"] == 100 and "records 100, inserted 100" in t["status_message"] for t in chunks)
    (prepare,) = [task for task in done.values() if task["name"] == "PrepareRatings"]
    assert prepare["status_message"].startswith("done: rows 600,") and "parts 6" in prepare["status_message"]
    assert all(t["progress_percentage"] == 100 and t["status_message"].startswith("done") for t in done.values())

    # Every stderr line is a JSON event; none shows a secret; nor does anything the scheduler holds.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    not_json = [line for line in lines if not _is_json_object(line)]
    assert not_json == []
    assert_no_secret(result.stderr, result.stdout, json.dumps(done))


def test_a_failure_shows_no_secret_in_logs_or_on_the_dashboard(luigid: str, env: dict[str, str]) -> None:
    wrong = env["REDIS_URL"].replace(REDIS_PASSWORD, REDIS_PASSWORD + "-wrong")
    result, _ = run_under_scheduler(luigid, {**env, "REDIS_URL": wrong})
    assert result.returncode == 30  # [retcode] task_failed
    failed = scheduler_api(luigid, "task_list", status="FAILED", upstream_status="")
    assert sorted(task["name"] for task in failed.values()) == [
        "UpdatePopular",
        "UpdateSimilarMovies",
        "UpdateUserRecommendations",
    ]
    (task_id,) = [task_id for task_id, task in failed.items() if task["name"] == "UpdatePopular"]
    error = scheduler_api(luigid, "fetch_error", task_id=task_id)["error"]
    assert "REDIS_URL redis://:***@127.0.0.1" in error and "cannot publish rec:fallback:popular" in error
    assert "RedisUnavailable" in result.stderr
    # The dashboard shows each failed task's cause, not its last progress message ("publishing ...").
    for task in failed.values():
        assert task["status_message"].startswith(f"failed: {task['name']}: RedisUnavailable: REDIS_URL"), task
    assert_no_secret(result.stderr, result.stdout, error, json.dumps(failed))
