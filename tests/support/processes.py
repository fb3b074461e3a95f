"""Where things are, and the processes tests start: free ports, background servers, waiting."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
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
