"""A newcomer's first hour: the README's commands, as typed, on a machine with no MongoDB, Redis or Docker.

`bash scripts/luigi.sh …` and `bash scripts/run-pipeline.sh` with MONGODB_URI unset (the try-out
store), the cron line run as cron runs it (`sh -c`, a minimal environment), the report's --png default.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
from pathlib import Path

from tests.support.env import subprocess_env
from tests.support.processes import MOVIELENS_ZIP, PROJECT
from tests.support.runs import USER_RUN
from tests.support.zips import real_slice


def finished(stderr: str) -> list[str]:
    tasks = []
    for line in stderr.splitlines():
        if line.startswith("{") and '"task finished"' in line:
            tasks.append(json.loads(line)["task"])
    return sorted(tasks)


def newcomer_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No MongoDB, no Redis: what the README's first command meets on a fresh machine."""
    zip_path = real_slice(MOVIELENS_ZIP, tmp_path / "ml.zip", 150, 2000)
    env = subprocess_env(tmp_path, MOVIELENS_URL=zip_path.as_uri(), TRYOUT_STORE=str(tmp_path / "mongomock.bson"))
    env.pop("MONGODB_URI", None)
    env.pop("REDIS_URL", None)
    return {**env, **extra}


def run(
    command: list[str], env: dict[str, str], timeout_s: float = 600, cwd: Path = PROJECT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)


def test_the_try_out_store_keeps_the_data_so_a_rerun_is_the_promised_no_op(tmp_path: Path) -> None:
    env = newcomer_env(tmp_path)
    lock = ["--lock-pid-dir", str(tmp_path)]
    popular = run(["bash", "scripts/luigi.sh", "UpdatePopular", "--date", "2026-11-24", *lock], env)
    assert popular.returncode == 0, popular.stderr[-3000:]
    assert "using the try-out store" in popular.stderr and (tmp_path / "mongomock.bson").exists()
    assert {"LoadMovies", "LoadInteractions", "UpdatePopular"} <= set(finished(popular.stderr))
    daily = run(["bash", "scripts/run-pipeline.sh", "--date", "2026-11-24", *lock], env)
    assert daily.returncode == 0, daily.stderr[-3000:]
    # The movies and ratings came back from the store: only what UpdatePopular did not need runs now.
    assert "LoadMovies" not in finished(daily.stderr) and "LoadInteractions" not in finished(daily.stderr)
    assert {"UpdateSimilarMovies", "UpdateUserRecommendations", "DailyRun"} <= set(finished(daily.stderr))
    again = run(["bash", "scripts/run-pipeline.sh", "--date", "2026-11-24", *lock], env)
    assert again.returncode == 0 and finished(again.stderr) == [], again.stderr[-3000:]
    next_day = run(["bash", "scripts/run-pipeline.sh", "--date", "2026-11-25", *lock], env)
    assert next_day.returncode == 0, next_day.stderr[-3000:]
    # The next day: the popular list, the day's read of the API, the partition (and the model when "best" chose
    # the collaborative lists), the publishing.
    users = json.loads((tmp_path / "bucket/datasets/ml/markers/user_recs/2026-11-25.json").read_text())
    model = ["TrainCollaborative"] if users["method"]["method"] == "collaborative" else []
    assert finished(next_day.stderr) == sorted(["DailyRun", "UpdatePopular", *USER_RUN, *model])
    # The probe, as the README types it, reads the store the pipeline wrote (not "MONGODB_URI is not set").
    check = run([str(PROJECT / ".venv/bin/python"), "-m", "mlrec_luigi.report", "--check"], env, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.startswith("ok: the DailyRun of 2026-11-25"), check.stdout
    # A lost marker: LoadMovies reloads into the store it wrote before (its indexes are found equal, not "different").
    marker = tmp_path / "bucket/datasets/ml/markers/load_movies.json"
    marker.unlink()
    reload = run(["bash", "scripts/luigi.sh", "LoadMovies", *lock], env)
    assert reload.returncode == 0 and finished(reload.stderr) == ["LoadMovies"], reload.stderr[-3000:]
    assert marker.exists()
    # The report, as the README types it: the chart's default path, under the folder it runs in (never ours).
    report = run([str(PROJECT / ".venv/bin/python"), "-m", "mlrec_luigi.report", "--png"], env, cwd=tmp_path)
    assert report.returncode == 0 and report.stderr == "", report.stderr[-2000:]
    assert "chart   var/report.png" in report.stdout and (tmp_path / "var/report.png").stat().st_size > 10_000
    # Where the time went: a chunked stage's time is its chunks' and its own, and the line says both.
    (embeddings,) = [line for line in report.stdout.splitlines() if line.startswith("  embeddings ")]
    total, chunks, own = (float(x) for x in re.findall(r"([\d.]+) s", embeddings)[:3])
    assert chunks > 0 and abs(total - (chunks + own)) < 0.02, embeddings
    assert "quality hit rate@10/NDCG@10 over" in report.stdout  # the quality figures, with their baselines


def cron_line(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The crontab line, as cron runs it: sh -c in the project, a minimal environment."""
    minimal = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SHELL": "/bin/sh",
        **{k: v for k, v in env.items() if k.isupper() and k not in ("PATH", "HOME", "SHELL", "VIRTUAL_ENV")},
    }
    line = f"cd {PROJECT} && bash scripts/cron.sh {' '.join(args)}"
    return subprocess.run(["/bin/sh", "-c", line], env=minimal, capture_output=True, text=True, timeout=600)


def test_a_failed_night_reaches_crons_mail_and_an_overlap_exits_10_with_one_log_line(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = newcomer_env(tmp_path, VAR_DIR=str(var), POPULARITY_TOP_N="0")
    failed = cron_line(tmp_path, env, "--lock-pid-dir", str(tmp_path))
    assert failed.returncode == 35, failed.stdout + failed.stderr
    # The mail: what failed, the cause in plain words (not a JSON line), where the log is.
    mail = failed.stdout.splitlines()
    assert len(mail) == 3 and mail[0] == "mlrec-luigi: the nightly run failed (exit 35).", failed.stdout
    assert re.fullmatch(r"Cause: \w+: SettingsError: POPULARITY_TOP_N must be between 1 and 100,000, got 0", mail[1])
    assert mail[2] == f"Log: {var}/log/pipeline.jsonl"
    log = (var / "log/pipeline.jsonl").read_text().splitlines()
    assert log and all(line.startswith("{") for line in log if line.strip())
    with (var / "pipeline.lock").open("w") as held:  # last night's run, still going
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        overlap = cron_line(tmp_path, newcomer_env(tmp_path, VAR_DIR=str(var)))
    assert overlap.returncode == 10 and overlap.stdout == "", overlap.stdout + overlap.stderr
    after = (var / "log/pipeline.jsonl").read_text().splitlines()
    assert len(after) == len(log) + 1 and json.loads(after[-1])["event"] == "already running"


def test_the_report_with_a_bad_setting_says_so_in_one_line(tmp_path: Path) -> None:
    env = newcomer_env(tmp_path, POPULARITY_TOP_N="many")
    report = run([str(PROJECT / ".venv/bin/python"), "-m", "mlrec_luigi.report"], env, timeout_s=120)
    assert report.returncode == 2 and report.stdout == ""
    assert report.stderr.strip() == "error: POPULARITY_TOP_N must be an integer, got 'many'"
