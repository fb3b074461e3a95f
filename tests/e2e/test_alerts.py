"""Operators hear of a failed night: Luigi's failure e-mails (a real SMTP server), luigid's Prometheus
metrics (a real luigid started by scripts/luigid.sh), and the script's own start and stop."""

from __future__ import annotations

import email
import email.policy
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.e2e.test_scheduler_and_secrets import scheduler_api
from tests.support.env import redis_command, subprocess_env
from tests.support.processes import PROJECT, background, free_port, wait_until
from tests.support.runs import luigi_command, run_luigi
from tests.support.zips import small_zip

PASSWORD = "s3cr%40t%3Apw"  # percent-encoded "@" and ":"; the decoded password is "s3cr@t:pw"
DECODED = "s3cr@t:pw"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server whose password is another: the pipeline's (in its URIs) is refused at publishing."""
    port = free_port()
    with background(redis_command(port, tmp_path, "--requirepass", "another"), tmp_path / "redis.log"):
        import redis

        wait_until(lambda: redis.Redis(port=port, password="another").ping(), "redis-server")
        yield f"redis://127.0.0.1:{port}/0"


def failing_env(tmp_path: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """A pipeline whose UpdatePopular fails at publishing: Redis refuses the password both URIs carry."""
    redis_with_password = redis_url.replace("redis://", f"redis://:{PASSWORD}@")
    return subprocess_env(
        tmp_path,
        MOVIELENS_URL=small_zip(tmp_path / "ml.zip").as_uri(),
        MONGODB_URI=f"mongomock://app:{PASSWORD}@localhost/mlrec",
        REDIS_URL=redis_with_password,
        POPULARITY_RECENT_DAYS="10000",
        **extra,
    )


def test_a_failed_task_sends_one_mail_naming_it_without_the_password(
    tmp_path: Path, smtp_server, redis_url: str, model
) -> None:
    inbox, port = smtp_server
    config = tmp_path / "mail.cfg"
    config.write_text(
        "[email]\nreceiver = oncall@example.com\nsender = mlrec@example.com\nmethod = smtp\nforce_send = true\n"
        f"[smtp]\nhost = 127.0.0.1\nport = {port}\nno_tls = true\n"
    )
    env = failing_env(tmp_path, redis_url, LUIGI_CONFIG_PATH=str(config))
    result = run_luigi(
        "UpdatePopular", "--date", "2026-11-24", "--local-scheduler", "--lock-pid-dir", str(tmp_path),
        env=env, timeout_s=300,
    )  # fmt: skip
    assert result.returncode == 30, result.stderr[-3000:]
    assert len(inbox.messages) == 1, [m["Subject"] for m in inbox.messages]
    mail = inbox.messages[0]
    body = "\n".join(part.get_content() for part in mail.walk() if part.get_content_maintype() == "text")
    assert "UpdatePopular" in mail["Subject"] and "FAILED" in mail["Subject"]
    assert "dataset" in body and "/datasets/ml" in body  # the task's dataset
    assert "RedisUnavailable: REDIS_URL redis://:***@127.0.0.1" in body  # the one-line cause
    assert "Traceback" not in body
    for secret in (PASSWORD, DECODED, "s3cr"):
        assert secret not in body and secret not in mail["Subject"]
        assert secret not in result.stderr


def test_luigid_metrics_show_the_failed_task(tmp_path: Path, redis_url: str, model) -> None:
    port = free_port()
    script_env = subprocess_env(tmp_path, LUIGID_PORT=str(port), LUIGID_DIR=str(tmp_path / "luigid"))
    started = subprocess.run(
        ["bash", "scripts/luigid.sh", "--background"], cwd=PROJECT, env=script_env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert f"http://127.0.0.1:{port}" in started.stdout and "--stop" in started.stdout
    try:
        taken = subprocess.run(
            ["bash", "scripts/luigid.sh", "--background"], cwd=PROJECT, env={**script_env, "LUIGID_DIR": str(tmp_path)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert taken.returncode == 1 and f"port {port} is already taken" in taken.stderr, taken.stderr
        env = failing_env(tmp_path, redis_url)
        run = subprocess.run(
            luigi_command("UpdatePopular", "--date", "2026-11-24", "--scheduler-host", "127.0.0.1",
                          "--scheduler-port", str(port), "--lock-pid-dir", str(tmp_path)),
            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 30, run.stderr[-3000:]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        failed = [line for line in metrics.splitlines() if line.startswith("luigi_task_failed_total{")]
        assert len(failed) == 1 and 'family="UpdatePopular"' in failed[0] and failed[0].endswith(" 1.0"), failed
        assert "/datasets/ml" in failed[0]  # the dataset label
        done = [line for line in metrics.splitlines() if line.startswith("luigi_task_done_total{")]
        assert any('family="LoadInteractions"' in line for line in done)
        # The dashboard: a finished task shows 100 % and what it did, not its last progress message.
        finished = scheduler_api(f"http://127.0.0.1:{port}", "task_list", status="DONE", upstream_status="")
        movies = next(task for task in finished.values() if task["name"] == "LoadMovies")
        assert movies["progress_percentage"] == 100, movies
        assert movies["status_message"].startswith("done: movies 4, inserted 4"), movies
    finally:
        stopped = subprocess.run(
            ["bash", "scripts/luigid.sh", "--stop"], cwd=PROJECT, env=script_env, capture_output=True, text=True
        )
    assert stopped.returncode == 0 and not (tmp_path / "luigid" / "luigid.pid").exists()
