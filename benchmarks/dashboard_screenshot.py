"""What a person sees on luigid's dashboard while the DAG runs: headless Chromium screenshots.

    apt-get install chromium          (Debian's package; not needed by the pipeline or its tests)
    .venv/bin/python benchmarks/dashboard_screenshot.py [--out var/dashboard]

Starts `scripts/luigid.sh` on a free port, runs the daily DAG on ml-latest-small against it
(`MONGODB_URI` unset: mongomock, so LoadMovies and UpdatePopular take seconds to minutes), and
while given tasks run, screenshots the dashboard's task list with Chromium: one PNG per task
family seen running (names, parameters with the dataset, status messages and progress). Prints
the rows the scheduler's API returned at each shot, so the check does not rest on eyes alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.env import subprocess_env  # noqa: E402

REAL_ZIP = ROOT.parent / "shared/data/movielens/ml-latest-small.zip"
WATCHED = ("EmbeddingChunk", "LoadMovies", "InteractionsChunk", "UpdatePopular", "SimilarMoviesBlock")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
    "--virtual-time-budget=4000",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(url: str, method: str, **data: object) -> dict:
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    with urllib.request.urlopen(f"{url}/api/{method}?{query}", timeout=10) as response:
        return json.loads(response.read())["response"]


def screenshot(chromium: str, page: str, png: Path, profile: Path) -> None:
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", page],
        capture_output=True,
        timeout=120,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var/dashboard")
    options = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    options.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="dashboard-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    luigid_env = {**os.environ, "LUIGID_PORT": str(port), "LUIGID_DIR": str(folder / "luigid")}
    luigid = subprocess.Popen(["bash", "scripts/luigid.sh"], cwd=ROOT, env=luigid_env, stdout=subprocess.DEVNULL)
    pipeline = None
    try:
        for _ in range(600):
            try:
                api(url, "task_list")
                break
            except OSError:
                time.sleep(0.1)
        env = subprocess_env(folder, MOVIELENS_URL=REAL_ZIP.as_uri(), EMBEDDING_CHUNK_SIZE="2000")
        env.pop("MONGODB_URI", None)
        pipeline = subprocess.Popen(
            ["bash", "scripts/run-pipeline.sh", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        page = f"{url}/static/visualiser/index.html#tab=tasks"
        shot, seen = 0, set()
        while pipeline.poll() is None:
            running = api(url, "task_list", status="RUNNING", upstream_status="")
            families = {task["name"] for task in running.values()}
            for family in sorted((families & set(WATCHED)) - seen):
                seen.add(family)
                png = options.out / f"{shot:02d}-{family}.png"
                screenshot(chromium, page, png, folder / "chromium")
                rows = [
                    {
                        "name": task["name"],
                        "dataset": task["params"].get("dataset"),
                        "status_message": task.get("status_message"),
                        "progress_percentage": task.get("progress_percentage"),
                    }
                    for task in running.values()
                ]
                print(json.dumps({"png": str(png), "running": rows}), flush=True)
                shot += 1
            time.sleep(0.5)
        done = api(url, "task_list", status="DONE", upstream_status="")
        png = options.out / f"{shot:02d}-done.png"
        screenshot(chromium, page, png, folder / "chromium")
        print(json.dumps({"png": str(png), "done": len(done), "exit": pipeline.returncode}), flush=True)
    finally:
        if pipeline is not None and pipeline.poll() is None:
            pipeline.kill()
        luigid.terminate()
        luigid.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
