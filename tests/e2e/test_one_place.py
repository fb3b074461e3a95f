"""Decisions made in one place, tested through the commands as the README types them.

- The settings are read by Python alone: a MONGODB_URI set any way (the environment, `.env`, an `export`
  line, MLREC_ENV_FILE) is never replaced by the try-out store, reachable or not; the scripts parse nothing.
- A failure's cause is the command's last line with any number of workers (the cause recorded in a forked
  worker reaches the command that prints it), through `luigi` and through scripts/cron.sh.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from mlrec_luigi.settings import load_settings
from tests.support.env import subprocess_env
from tests.support.processes import PROJECT, free_port
from tests.support.runs import run_luigi, the_cause
from tests.support.zips import small_zip

UNREACHABLE = "mongodb://app:hunter2@127.0.0.1:{port}/db"


def script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``bash scripts/NAME ARGS`` from the project, as the README types it."""
    command = ["bash", f"scripts/{name}", *args]
    return subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "way",
    ["environment", "dotenv", "dotenv export", "dotenv quoted", "MLREC_ENV_FILE", "MLREC_ENV_FILE export"],
)
def test_a_mongodb_uri_set_any_way_is_never_the_try_out_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    uri = UNREACHABLE.format(port=free_port())
    env: dict[str, str] = {}
    monkeypatch.chdir(tmp_path)  # `.env` is read from the folder the command runs in
    line = {"dotenv export": f"export MONGODB_URI={uri}", "dotenv quoted": f'MONGODB_URI="{uri}"'}.get(
        way, f"MONGODB_URI={uri}"
    )
    if way == "environment":
        env["MONGODB_URI"] = uri
    elif way.startswith("dotenv"):
        (tmp_path / ".env").write_text(f"# production\n{line}\n")
    else:
        (tmp_path / "prod.env").write_text(("export " if way.endswith("export") else "") + f"MONGODB_URI={uri}\n")
        env["MLREC_ENV_FILE"] = str(tmp_path / "prod.env")
    settings = load_settings(env)
    assert settings.mongodb_uri == uri and not settings.mongodb_is_tryout


def test_without_a_mongodb_uri_the_try_out_store_is_the_default_everywhere(tmp_path: Path) -> None:
    settings = load_settings({"TRYOUT_STORE": str(tmp_path / "store.bson")}, dotenv_path=tmp_path / "none.env")
    assert settings.mongodb_is_tryout
    assert settings.mongodb_uri == f"mongomock://localhost/mlrec?store={tmp_path / 'store.bson'}"
    assert load_settings({}, dotenv_path=tmp_path / "none.env").mongodb_uri.endswith("store=var/mongomock.bson")


@pytest.mark.parametrize("export", [False, True], ids=["line", "export line"])
def test_the_scripts_use_the_uri_of_mlrec_env_file_and_fail_when_it_is_unreachable(
    tmp_path: Path, export: bool
) -> None:
    """The defect: the script grepped `.env` for MONGODB_URI, ran on the try-out store and exited 0."""
    prod = tmp_path / "prod.env"
    prod.write_text(("export " if export else "") + f"MONGODB_URI={UNREACHABLE.format(port=free_port())}\n")
    env = subprocess_env(tmp_path, MOVIELENS_URL=small_zip(tmp_path / "ml.zip").as_uri(), MLREC_ENV_FILE=str(prod))
    result = script("luigi.sh", "UpdatePopular", "--lock-pid-dir", str(tmp_path), env=env)
    assert result.returncode == 35, result.stderr[-3000:]
    assert "try-out" not in result.stderr and not (tmp_path / "mongomock.bson").exists()
    the_cause(result.stderr, "MongoUnavailable: MONGODB_URI mongodb://app:***@127.0.0.1")
    assert "hunter2" not in result.stderr


def broken_source_env(tmp_path: Path) -> dict[str, str]:
    """A MOVIELENS_URL that names no file: DownloadMovieLens fails inside its run()."""
    return subprocess_env(tmp_path, MOVIELENS_URL=(tmp_path / "gone" / "ml.zip").as_uri())


def test_the_cause_of_a_failure_in_a_forked_worker_is_the_last_line(tmp_path: Path) -> None:
    result = run_luigi(
        "DownloadMovieLens", "--local-scheduler", "--workers", "2", "--lock-pid-dir", str(tmp_path),
        env=broken_source_env(tmp_path), timeout_s=300,
    )  # fmt: skip
    assert result.returncode == 30, result.stderr[-3000:]
    assert "[pid " in result.stderr and "running   DownloadMovieLens" in result.stderr  # a worker process ran it
    message = the_cause(result.stderr, "MOVIELENS_URL")
    assert re.match(r"DownloadMovieLens: SourceError: ", message), message


def test_cron_mails_the_cause_of_a_failure_in_a_forked_worker(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = {**broken_source_env(tmp_path), "VAR_DIR": str(var)}
    result = script("cron.sh", "--workers", "2", "--lock-pid-dir", str(tmp_path), env=env)
    mail = result.stdout.splitlines()
    assert result.returncode == 30 and len(mail) == 3, result.stdout + result.stderr[-2000:]
    assert mail[1].startswith("Cause: DownloadMovieLens: SourceError: ") and "MOVIELENS_URL" in mail[1], mail
    last = (var / "log/pipeline.jsonl").read_text().strip().splitlines()[-1]
    assert json.loads(last)["message"] == mail[1].removeprefix("Cause: ")
