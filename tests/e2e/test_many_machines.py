"""Three machines, one luigid: every stage's work shared, a machine SIGKILLed mid-task, its task retaken.

Three `luigi` worker processes, each with its own scratch folders and environment (as three machines
would have: their own CACHE_DIR, LOCAL_BUCKET_DIR, lock folder), run the same DAG against one luigid
(`scripts/luigid.sh`), the bucket on fake-gcs-server (`gs://`), the MongoDB wire server and a
redis-server. One machine is SIGKILLed the moment it starts a task of a chosen kind: inside an
embedding chunk, a similar-movies block, a shard of the ratings shuffle, a partition of users. The
survivors retake that task within the bound luigid is set to (worker_disconnect_delay + retry_delay,
shortened here to seconds: `LUIGID_WORKER_DISCONNECT_DELAY`, `LUIGID_RETRY_DELAY`), finish the DAG
and exit 0; every task is finished exactly once; the published user lists are the exact ones.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pymongo
import pytest
import redis

from tests.e2e.test_scheduler_and_secrets import scheduler_api
from tests.support.env import subprocess_env
from tests.support.processes import MOVIELENS_ZIP, PROJECT, background, free_port, wait_until
from tests.support.runs import finished_events, luigi_command, run_luigi
from tests.support.zips import real_slice
from tests.test_user_recs import api_brute_force

MOVIES, RATINGS, CHUNK, INTERACTION_CHUNK_ROWS, SIMILAR_BLOCK = 120, 1500, 20, 500, 50
DISCONNECT_S, RETRY_S = 3, 3
# What a dead machine's task may wait before another takes it: luigid's two delays, the survivors'
# next ask for work, and the slack of a loaded test machine.
RETAKE_BOUND_S = DISCONNECT_S + RETRY_S + 25


class Killer:
    """Kills, for each family still wanted, the first live machine that starts a task of it (one death each)."""

    def __init__(self, families: list[str]) -> None:
        self.wanted = {family: re.compile(rf"running\s+{family}\(") for family in families}
        self.victims: dict[str, Machine] = {}
        self.lock = threading.Lock()
        self.all_dead = threading.Event()

    def saw(self, machine: Machine, line: str) -> None:
        with self.lock:
            if machine.killed_at is not None:
                return
            for family, pattern in self.wanted.items():
                if family not in self.victims and pattern.search(line):
                    machine.process.send_signal(signal.SIGKILL)  # the moment its task starts: inside it
                    machine.killed_at = time.monotonic()
                    self.victims[family] = machine
                    if len(self.victims) == len(self.wanted):
                        self.all_dead.set()
                    return


class Machine:
    """One `luigi` worker process; its stderr is read as it comes, so it can be killed inside a task."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], killer: Killer) -> None:
        self.name, self.lines, self.seen_at = name, list[str](), list[float]()
        self.killed_at: float | None = None
        self.killer = killer
        self.process = subprocess.Popen(
            command, cwd=PROJECT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self.seen_at.append(time.monotonic())
            self.killer.saw(self, line)

    def finished(self) -> list[dict]:
        return finished_events("".join(self.lines))

    def wait(self, timeout_s: float = 600) -> int:
        code = self.process.wait(timeout=timeout_s)
        self.reader.join(timeout=10)
        return code


def run_three_machines(url_port: int, tmp_path: Path, env: dict[str, str], date: str, kills: list[str]) -> dict:
    """Three machines run DailyRun for ``date``; for each of ``kills``, the first machine to start a task of
    that family dies in it."""
    command = luigi_command(
        "DailyRun", "--date", date, "--scheduler-host", "127.0.0.1", "--scheduler-port", str(url_port),
        "--worker-keep-alive", "--worker-wait-interval", "0.2", "--no-lock",
    )  # fmt: skip
    killer = Killer(kills)
    machines = []
    for index in range(3):
        folder = tmp_path / f"{date}-machine-{index}"
        folder.mkdir()
        own = {**env, "CACHE_DIR": str(folder / "cache"), "LOCAL_BUCKET_DIR": str(folder / "bucket")}
        machines.append(Machine(f"machine-{index}", command, own, killer))
    assert killer.all_dead.wait(timeout=300), f"killed in {sorted(killer.victims)} only, of {kills}"
    alive = [machine for machine in machines if machine.killed_at is None]
    codes = [machine.wait() for machine in alive]
    for machine in machines:  # kept beside the test's other files, for whoever reads a failure
        (tmp_path / f"{date}-{machine.name}.log").write_text("".join(machine.lines))
    logs = "".join(line for m in machines for line in m.lines[-40:])
    assert codes == [0] * len(alive), logs[-4000:]  # the survivors: the DAG is done, whoever ran what
    for victim in killer.victims.values():
        victim.wait()
    return {"machines": machines, "alive": alive, "victims": list(killer.victims.items())}


def started_task(line: str, family: str) -> str | None:
    """The task a worker's "running" line names (its repr, the same on every machine), if of ``family``."""
    found = re.search(rf"running\s+({family}\([^)]*\))", line)
    return found.group(1).strip() if found else None


def assert_shared_and_retaken(result: dict) -> None:
    """Each task finished once, every survivor worked, and each victim's task was retaken within the bound."""
    ran = [event for machine in result["machines"] for event in machine.finished()]  # a victim's before it died
    per_task = collections.Counter(event["task_id"] for event in ran)
    assert per_task and all(count == 1 for count in per_task.values()), per_task
    for family, victim in result["victims"]:
        died_in = [task for line in victim.lines if (task := started_task(line, family))][-1]
        assert not [e for e in victim.finished() if e["task"] == family and died_in.startswith(f"{family}(")
                    and e.get("task_id") in per_task]  # fmt: skip
        retakes = [
            when
            for machine in result["alive"]
            for line, when in zip(machine.lines, machine.seen_at, strict=True)
            if started_task(line, family) == died_in
        ]
        assert retakes, f"nobody took {died_in} again"
        assert victim.killed_at is not None and 0 < min(retakes) - victim.killed_at <= RETAKE_BOUND_S, (
            min(retakes) - victim.killed_at
        )


def exact_user_lists(env: dict[str, str], redis_url: str) -> None:
    uri, database = env["MONGODB_URI"], env["MONGODB_DATABASE"]
    with pymongo.MongoClient(uri, tz_aware=True) as client:
        db = client[database]
        embeddings = {str(d["_id"]): d["embedding"] for d in db.movies.find({}, {"embedding": 1})}
        expected = api_brute_force(list(db.interactions.find()), embeddings, 10)
    client = redis.Redis.from_url(redis_url)
    published = {k.decode(): json.loads(client.get(k)) for k in client.scan_iter("rec:user:*")}
    assert len(published) > 10 and published == expected


@pytest.fixture
def luigid_port(tmp_path: Path, monkeypatch) -> int:
    port = free_port()
    monkeypatch.setenv("LUIGID_PORT", str(port))
    monkeypatch.setenv("LUIGID_DIR", str(tmp_path / "luigid"))
    monkeypatch.setenv("LUIGID_WORKER_DISCONNECT_DELAY", str(DISCONNECT_S))
    monkeypatch.setenv("LUIGID_RETRY_DELAY", str(RETRY_S))
    with background(["bash", str(PROJECT / "scripts/luigid.sh")], tmp_path / "luigid.out"):
        wait_until(lambda: scheduler_api(f"http://127.0.0.1:{port}", "task_list") is not None, "luigid", 120)
        yield port


def test_three_machines_share_every_stage_and_retake_a_dead_ones_task(
    tmp_path: Path, luigid_port: int, wire_mongo, redis_url, gcs_emulator, gcs_bucket
) -> None:
    uri, database = wire_mongo
    zip_path = real_slice(MOVIELENS_ZIP, tmp_path / "ml-machines.zip", MOVIES, RATINGS)
    env = subprocess_env(
        tmp_path, MOVIELENS_URL=zip_path.as_uri(), MONGODB_URI=uri, MONGODB_DATABASE=database, REDIS_URL=redis_url,
        GCS_BUCKET_NAME=gcs_bucket, STORAGE_EMULATOR_HOST=gcs_emulator, EMBEDDING_CHUNK_SIZE=str(CHUNK),
        INTERACTIONS_CHUNK_ROWS=str(INTERACTION_CHUNK_ROWS), SIMILAR_MOVIES_BLOCK_ROWS=str(SIMILAR_BLOCK),
        USER_RECS_METHOD="content", USER_RECS_PARTITIONS="2",
    )  # fmt: skip
    # The zip is in the bucket: the embedding chunks are planned when the machines schedule the DAG.
    assert run_luigi("DownloadMovieLens", "--local-scheduler", env=env).returncode == 0

    # Day 1: a machine dies inside an embedding chunk.
    started = time.monotonic()
    first = run_three_machines(luigid_port, tmp_path, env, "2026-11-24", ["EmbeddingChunk"])
    assert_shared_and_retaken(first)
    chunks = [e for m in first["machines"] for e in m.finished() if e["task"] == "EmbeddingChunk"]
    assert len(chunks) == MOVIES // CHUNK  # every chunk once, the killed one by a survivor
    assert len([m for m in first["machines"] if m.finished()]) >= 2  # the work was shared
    exact_user_lists(env, redis_url)

    # Day 2: new similar-movies blocks (N = 5) and a new shuffle (3 partitions) are planned at scheduling,
    # the movies and ratings being there: one machine dies in a block, another in a shard of the shuffle.
    env2 = {**env, "SIMILAR_MOVIES_TOP_N": "5", "USER_RECS_PARTITIONS": "3"}
    second = run_three_machines(luigid_port, tmp_path, env2, "2026-11-25", ["SimilarMoviesBlock", "ShuffleRatingsPart"])
    assert_shared_and_retaken(second)
    shuffled = [e for m in second["machines"] for e in m.finished() if e["task"] == "ShuffleRatingsPart"]
    assert len(shuffled) == RATINGS // INTERACTION_CHUNK_ROWS
    partitions = [e for m in second["machines"] for e in m.finished() if e["task"] == "UserRecsPartition"]
    assert len(partitions) == 3
    exact_user_lists(env2, redis_url)

    # Day 3: a machine dies inside a partition of users; another computes it; the lists are exact.
    third = run_three_machines(luigid_port, tmp_path, env2, "2026-11-26", ["UserRecsPartition"])
    assert_shared_and_retaken(third)
    assert len([e for m in third["machines"] for e in m.finished() if e["task"] == "UserRecsPartition"]) == 3
    exact_user_lists(env2, redis_url)
    assert time.monotonic() - started < 600
    assert os.environ.get("LUIGID_RETRY_DELAY") == str(RETRY_S)
