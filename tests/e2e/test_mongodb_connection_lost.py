"""MongoDB goes away in the middle of loading interactions: the chunk fails, the rerun completes.

A dedicated mongoeco server with an SQLite file (so its data survives a restart) is killed
while a real `luigi` process is loading interactions, then restarted on the same file.
Skipped when MLREC_TEST_MONGODB_URI is set: a shared real server is not ours to kill.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from tests.support.env import subprocess_env
from tests.support.processes import MONGOECO_PYTHON, MOVIELENS_ZIP, PROJECT, REAL_MONGODB_URI, free_port, wait_until
from tests.support.runs import luigi_command, run_luigi
from tests.support.zips import real_slice

MOVIES, RATINGS, CHUNK_ROWS = 60, 600, 50

pytestmark = pytest.mark.skipif(REAL_MONGODB_URI is not None, reason="needs a MongoDB server it may kill")


class Server:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?serverSelectionTimeoutMS=3000&socketTimeoutMS=60000"

    def start(self) -> None:
        address = self.folder / "address"
        address.unlink(missing_ok=True)
        command = [
            str(MONGOECO_PYTHON),
            str(PROJECT / "tests/support/mongoeco_server.py"),
            str(address),
            str(self.folder / "data.sqlite"),
            str(self.port),
        ]
        with open(self.folder / "server.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(address.exists, "mongoeco")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.kill()


def test_connection_lost_mid_load_then_rerun_completes_without_duplicates(server: Server, tmp_path: Path) -> None:
    zip_path = real_slice(MOVIELENS_ZIP, tmp_path / "ml.zip", MOVIES, RATINGS)
    env = subprocess_env(
        tmp_path,
        MOVIELENS_URL=zip_path.as_uri(),
        MONGODB_URI=server.uri,
        MONGODB_DATABASE="mlrec",
        INTERACTIONS_CHUNK_ROWS=str(CHUNK_ROWS),
    )
    process = subprocess.Popen(
        luigi_command("LoadInteractions", "--local-scheduler"),
        cwd=PROJECT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "running   InteractionsChunk(" in line:
            break
    time.sleep(1.5)  # let some chunks land
    server.kill()
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 30, rest[-3000:]  # [retcode] task_failed
    assert "task failed" in rest and "InteractionsChunk" in rest
    assert not (tmp_path / "bucket/datasets/ml/markers/load_interactions.json").exists()
    chunks_done = len(list((tmp_path / "bucket/datasets/ml/markers/interactions").glob("*/part-*.json")))
    assert chunks_done < RATINGS // CHUNK_ROWS

    server.start()
    with pymongo.MongoClient(server.uri) as client:
        written_before = client.mlrec.interactions.count_documents({})
    assert 0 < written_before < RATINGS  # killed mid-load
    rerun = run_luigi("LoadInteractions", "--local-scheduler", env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # The rerun loads only the chunks that had no marker.
    assert rerun.stderr.count('"task": "InteractionsChunk"') == RATINGS // CHUNK_ROWS - chunks_done
    with pymongo.MongoClient(server.uri) as client:
        interactions = client.mlrec.interactions
        assert interactions.count_documents({}) == RATINGS
        keys = {(d["userId"], d["movieId"], d["timestamp"]) for d in interactions.find()}
        assert len(keys) == RATINGS
