"""Passwords in MONGODB_URI and REDIS_URL appear in no output, whatever characters they hold.

A table of passwords, each written raw (refused at start, naming the setting) and
percent-encoded (accepted, then hidden in every error: unreachable server, wrong password,
log lines); and the real `luigi` command with raw ones: exit 35, one line, no fragment.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlrec_luigi import cache, mongo
from mlrec_luigi.logs import JsonFormatter
from mlrec_luigi.settings import SettingsError, load_settings
from tests.support.env import redis_command, subprocess_env
from tests.support.processes import background, free_port, wait_until
from tests.support.runs import run_luigi, the_cause

PASSWORDS = [
    "Zq8v/Kp3w",
    "Zq8v@Kp3w",
    "Zq8v#Kp3w",
    "Zq8v:Kp3w",
    "Zq8v%Kp3w",
    "Zq8v%41Kp3w",  # a valid escape written raw: pymongo would decode it
    "Zq/8v@#:%Kp3w",
    "Zq8v Kp3w?[]",
    "Zq8vKp3wÄö",
]
SETTINGS = {"MONGODB_URI": "mongodb://app:{}@127.0.0.1:{}/db", "REDIS_URL": "redis://app:{}@127.0.0.1:{}/0"}


def pieces(password: str) -> list[str]:
    """The password and every run of 3+ ordinary characters in it (what a torn URI could show)."""
    return [password, urllib.parse.unquote(password), *re.findall(r"[A-Za-z0-9ÄÖäö]{3,}", password)]


def assert_hidden(password: str, *texts: str) -> None:
    for text in texts:
        for piece in pieces(password):
            assert piece not in text, f"{piece!r} of the password shows in: {text}"


def needs_encoding(password: str) -> bool:
    return bool(set(password) & set(":/?#[]@% "))


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("password", PASSWORDS)
def test_a_raw_password_is_refused_or_hidden_naming_the_setting(name: str, password: str) -> None:
    uri = SETTINGS[name].format(password, 6379)
    if needs_encoding(password) and password != "Zq8v%41Kp3w":
        with pytest.raises(SettingsError, match=rf"^{name}") as raised:
            load_settings({name: uri}, dotenv_path="/nonexistent")
        assert_hidden(password, str(raised.value))
    else:
        settings = load_settings({name: uri}, dotenv_path="/nonexistent")
        assert urllib.parse.unquote(password) in settings.secrets()
        assert_hidden(password, repr(settings), str(settings.describe()))


@pytest.mark.parametrize("password", PASSWORDS)
def test_an_encoded_password_is_hidden_in_connection_errors_and_logs(password: str, monkeypatch) -> None:
    encoded = urllib.parse.quote(password, safe="")
    port = free_port()
    mongo_uri = SETTINGS["MONGODB_URI"].format(encoded, port) + "?serverSelectionTimeoutMS=300"
    redis_url = SETTINGS["REDIS_URL"].format(encoded, port)
    settings = load_settings({"MONGODB_URI": mongo_uri, "REDIS_URL": redis_url}, dotenv_path="/nonexistent")
    with pytest.raises(mongo.MongoUnavailable) as mongo_error:
        mongo.connect(settings.mongodb_uri)
    with pytest.raises(cache.RedisUnavailable) as redis_error:
        cache.publish_list(settings.redis_url, "k", ["x"], 100)
    monkeypatch.setattr("mlrec_luigi.logs.get_settings", lambda: settings)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed: %s %s", (mongo_uri, password), None)
    assert_hidden(password, str(mongo_error.value), str(redis_error.value), JsonFormatter().format(record))


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    password = "Zq/8v@#:%Kp3w"
    port = free_port()
    with background(redis_command(port, tmp_path, "--requirepass", password), tmp_path / "redis.log"):
        import redis

        wait_until(lambda: redis.Redis(port=port, password=password).ping(), "redis-server")
        yield port, password


def test_a_wrong_password_is_hidden_and_the_right_one_works(protected_redis: tuple[int, str]) -> None:
    port, password = protected_redis
    right = f"redis://:{urllib.parse.quote(password, safe='')}@127.0.0.1:{port}/0"
    cache.publish_list(right, "k", ["x"], 100)
    assert cache.read_list(right, "k") == ["x"]
    wrong_password = "Zq/8v@#:%Kp3x"
    wrong = f"redis://:{urllib.parse.quote(wrong_password, safe='')}@127.0.0.1:{port}/0"
    with pytest.raises(cache.RedisUnavailable, match=r"invalid username-password pair|WRONGPASS") as raised:
        cache.publish_list(wrong, "k", ["y"], 100)
    assert_hidden(wrong_password, str(raised.value))


@pytest.mark.parametrize("password", ["Zq8v/Kp3w", "Zq8v@Kp3w#x", "Zq8v%Kp3w:y"])
def test_the_luigi_command_ends_in_one_line_exit_35_without_the_password(password: str, tmp_path: Path) -> None:
    env = subprocess_env(tmp_path, MONGODB_URI=f"mongodb://app:{password}@127.0.0.1:{free_port()}/db")
    result = run_luigi("DailyRun", "--local-scheduler", "--lock-pid-dir", str(tmp_path), env=env, timeout_s=120)
    assert result.returncode == 35, result.stderr[-2000:]
    assert_hidden(password, result.stdout, result.stderr)
    the_cause(result.stderr, "MONGODB_URI: the password holds a character")
