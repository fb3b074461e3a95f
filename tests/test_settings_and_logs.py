"""Settings parsing and validation; JSON logs that never show a secret."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest

from mlrec_luigi.logs import JsonFormatter, log_event
from mlrec_luigi.settings import SettingsError, load_settings, redact

NO_DOTENV = "/nonexistent/.env"


def settings(**env: str):
    return load_settings(env, dotenv_path=NO_DOTENV)


def test_defaults_follow_the_contract() -> None:
    s = settings()
    assert s.gcs_dataset_path == "datasets/"
    assert s.movielens_url == "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
    assert s.movielens_zip_filename == "ml-latest-small.zip"
    assert s.hf_model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert (s.popularity_recent_days, s.popularity_min_rating, s.popularity_top_n) == (7, 4.0, 50)
    assert s.popularity_ttl_seconds == 86_400
    assert s.redis_url is None and s.gcs_bucket_name is None


def test_zip_filename_follows_the_url() -> None:
    s = settings(MOVIELENS_URL="https://files.grouplens.org/datasets/movielens/ml-32m.zip")
    assert s.movielens_zip_filename == "ml-32m.zip"
    assert s.dataset_name == "ml-32m"


def test_dotenv_values_apply_under_the_environment(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("POPULARITY_TOP_N=10\nEMBEDDING_BATCH_SIZE=32\n")
    s = load_settings({"POPULARITY_TOP_N": "20"}, dotenv_path=dotenv)
    assert (s.popularity_top_n, s.embedding_batch_size) == (20, 32)


def test_database_name_comes_from_the_uri() -> None:
    assert settings(MONGODB_URI="mongodb://h:27017/movies").mongodb_database == "movies"
    assert settings(MONGODB_URI="mongodb://h:27017").mongodb_database == "mlrec"
    assert settings(MONGODB_URI="mongodb://h/a", MONGODB_DATABASE="b").mongodb_database == "b"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EMBEDDING_BATCH_SIZE": "abc"}, "EMBEDDING_BATCH_SIZE must be an integer, got 'abc'"),
        ({"POPULARITY_TOP_N": "0"}, "POPULARITY_TOP_N must be between 1 and 100,000, got 0"),
        ({"POPULARITY_MIN_RATING": "9"}, "POPULARITY_MIN_RATING must be between 0.0 and 5.0, got 9.0"),
        ({"MOVIELENS_URL": "ftp://example.org/ml.zip"}, "MOVIELENS_URL must start with https:// or http://"),
        ({"MONGODB_URI": "postgres://u:hunter2@h/db"}, "MONGODB_URI must start with mongodb://"),
        ({"MONGODB_URI": "mongodb://u:hunter2@h:port/db"}, "MONGODB_URI is malformed"),
        ({"REDIS_URL": "http://u:hunter2@h:6379"}, "REDIS_URL must start with redis://"),
        ({"REDIS_URL": "redis://"}, "REDIS_URL has no host"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be"),
        ({"EMBEDDING_PRECISION": "fp8"}, "EMBEDDING_PRECISION must be one of fp32, bf16"),
        ({"MOVIELENS_ZIP_FILENAME": "data.tar"}, "MOVIELENS_ZIP_FILENAME must be a file name ending in .zip"),
    ],
)
def test_bad_settings_name_the_setting_and_hide_passwords(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        settings(**env)
    assert "hunter2" not in str(raised.value)


def test_repr_and_describe_hide_secrets() -> None:
    s = settings(MONGODB_URI="mongodb+srv://app:s3cr3t@cluster.example.net/db", REDIS_URL="redis://:pa55@r:6379/0")
    assert s.secrets() == ["s3cr3t", "pa55"]
    assert "s3cr3t" not in repr(s) and "pa55" not in repr(s)
    assert "s3cr3t" not in json.dumps(s.describe()) and "pa55" not in json.dumps(s.describe())
    assert s.describe()["mongodb_uri"] == "mongodb+srv://app:***@cluster.example.net/db"


def test_redact() -> None:
    assert (
        redact("failed mongodb://user:pw@host:1/db and redis://:x@r")
        == "failed mongodb://user:***@host:1/db and redis://:***@r"
    )
    assert redact("no secrets here") == "no secrets here"


def test_json_formatter_writes_one_object_per_line_with_fields() -> None:
    record = logging.LogRecord("mlrec_luigi", logging.INFO, __file__, 1, "task finished", None, None)
    record.task = "LoadMovies"
    record.counts = {"movies": 3}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    payload = json.loads(line)
    assert (
        payload["event"] == "task finished" and payload["task"] == "LoadMovies" and payload["counts"] == {"movies": 3}
    )
    assert payload["level"] == "INFO" and payload["ts"].endswith("+00:00")


def test_log_lines_redact_uris(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mlrec_luigi.test")
    with caplog.at_level(logging.INFO, logger="mlrec_luigi.test"):
        log_event(logger, "connecting", uri="mongodb://app:topsecret@db:27017")
    line = JsonFormatter().format(caplog.records[0])
    assert "topsecret" not in line and "app:***@db" in line


def test_console_formatter_for_terminals_is_readable_and_redacted() -> None:
    from mlrec_luigi.logs import ConsoleFormatter

    record = logging.LogRecord("mlrec_luigi", logging.INFO, __file__, 1, "task finished", None, None)
    record.task = "LoadMovies"
    record.uri = "redis://:pw123@host:6379"
    line = ConsoleFormatter().format(record)
    assert "INFO    task finished task=LoadMovies uri=redis://:***@host:6379" in line


def test_every_setting_is_documented_once_with_its_default() -> None:
    """Settings are declared once (the dataclass); config/.env.sample and the README table follow it."""
    import dataclasses
    import re

    from mlrec_luigi.settings import Settings

    project = Path(__file__).resolve().parents[1]
    sample = dict(
        line.split("=", 1)
        for line in (project / "config/.env.sample").read_text().splitlines()
        if re.match(r"^[A-Z_]+=", line)
    )
    readme = (project / "README.md").read_text()
    table = set(re.findall(r"^\| `([A-Z_]+)`", readme, flags=re.MULTILINE))
    declared = [field for field in dataclasses.fields(Settings) if not field.metadata.get("derived")]
    for field in declared:
        name = field.name.upper()
        assert name in sample, f"{name} is not in config/.env.sample"
        assert name in table, f"{name} is not in the README's settings table"
        if sample[name] and field.default is not None and not isinstance(field.default, bool):
            parsed = settings(**{name: sample[name]})
            assert getattr(parsed, field.name) == getattr(settings(), field.name), name
    assert set(sample) - {f.name.upper() for f in declared} <= {"MONGODB_DATABASE"}


@pytest.mark.parametrize(
    ("level", "severity"),
    [(logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING"), (logging.ERROR, "ERROR"),
     (logging.CRITICAL, "CRITICAL")],
)  # fmt: skip
def test_each_line_carries_what_cloud_logging_reads(level: int, severity: str) -> None:
    record = logging.LogRecord("mlrec_luigi", level, __file__, 1, "task failed", None, None)
    record.task = "UpdatePopular"
    payload = json.loads(JsonFormatter().format(record))
    # Cloud Logging takes "severity", "message" and an RFC 3339 "time" from a JSON line's top level.
    assert payload["severity"] == severity and payload["message"] == "task failed"
    parsed = dt.datetime.fromisoformat(payload["time"])
    assert payload["time"].endswith("Z") and parsed.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - parsed).total_seconds()) < 60
    assert payload["event"] == "task failed" and payload["task"] == "UpdatePopular"
