"""The one place where settings are read: the environment, then `.env`, then defaults.

Nothing else in the package reads ``os.environ``. Every setting of the existing
deployment (see ``config/.env.sample``) is parsed and validated here, so a typo fails
at start-up with the name of the setting instead of deep inside a task.

Secrets (passwords inside ``MONGODB_URI`` and ``REDIS_URL``) are kept out of every
``repr`` and log line: use :func:`redact` on any text that might contain a URI.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

DEFAULT_MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
POPULAR_REDIS_KEY = "rec:fallback:popular"

_URI_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


def redact(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` in ``text`` with ``***``."""
    return _URI_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def uri_password(uri: str | None) -> str | None:
    """The password inside a URI's userinfo, or None."""
    if not uri:
        return None
    try:
        password = urlsplit(uri).password
    except ValueError:
        match = _URI_USERINFO.search(uri)
        password = match["password"] if match else None
    return unquote(password) if password else None


@dataclass(frozen=True)
class Settings:
    """All settings of the pipeline, parsed and validated."""

    log_level: str = "INFO"
    gcs_bucket_name: str | None = None
    gcs_dataset_path: str = "datasets/"
    storage_emulator_host: str | None = None
    local_bucket_dir: Path = Path("var/bucket")
    cache_dir: Path = Path("var/cache")
    mongodb_uri: str | None = field(default=None, repr=False)
    mongodb_database: str = "mlrec"
    movielens_url: str = DEFAULT_MOVIELENS_URL
    movielens_zip_filename: str = "ml-latest-small.zip"
    hf_model_name: str = DEFAULT_MODEL_NAME
    hf_device: str = "cpu"
    hf_hub_offline: bool = False
    embedding_precision: str = "fp32"
    embedding_batch_size: int = 64
    embedding_chunk_size: int = 1000
    interactions_chunk_rows: int = 250_000
    interactions_max_rejected_rows: int = 0
    interactions_max_unknown_fraction: float = 0.01
    max_member_bytes: int = 8 * 1024**3
    redis_url: str | None = field(default=None, repr=False)
    popularity_recent_days: int = 7
    popularity_min_rating: float = 4.0
    popularity_top_n: int = 50
    popularity_ttl_seconds: int = 86_400

    @property
    def dataset_prefix(self) -> str:
        """The bucket folder that holds the zip and everything derived from it."""
        prefix = self.gcs_dataset_path.strip("/")
        return f"{prefix}/" if prefix else ""

    @property
    def dataset_name(self) -> str:
        """``ml-latest-small`` for ``ml-latest-small.zip``: names the derived outputs."""
        return self.movielens_zip_filename.removesuffix(".zip")

    def secrets(self) -> list[str]:
        """Every secret value a log line must never show."""
        return [s for s in (uri_password(self.mongodb_uri), uri_password(self.redis_url)) if s]

    def describe(self) -> dict[str, object]:
        """All settings as plain values, secrets redacted: safe to log."""
        return {f.name: redact(str(getattr(self, f.name))) for f in fields(self)}


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_text(env, name) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _uri(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = _text(env, name)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as error:
        raise SettingsError(f"{name} is malformed ({error}): {redact(value)}") from None
    if parts.scheme not in schemes:
        raise SettingsError(f"{name} must start with {' or '.join(s + '://' for s in schemes)}, got {redact(value)}")
    if not parts.netloc and parts.scheme not in ("unix", "mongomock", "file"):
        raise SettingsError(f"{name} has no host: {redact(value)}")
    return value


def _mongodb_database(uri: str | None, env: Mapping[str, str]) -> str:
    explicit = _text(env, "MONGODB_DATABASE")
    if explicit:
        return explicit
    if uri:
        path = urlsplit(uri).path.strip("/")
        if path:
            return path
    return "mlrec"


def load_settings(env: Mapping[str, str] | None = None, dotenv_path: str | Path | None = None) -> Settings:
    """Read and validate every setting.

    Args:
        env: the variables to read; the process environment when None.
        dotenv_path: a ``.env`` file whose values apply where ``env`` has none; by default
            ``MLREC_ENV_FILE`` or ``.env`` in the working directory.

    Raises:
        SettingsError: a setting is malformed; the message names it.
    """
    env = os.environ if env is None else env
    dotenv_path = dotenv_path or env.get("MLREC_ENV_FILE") or ".env"
    values: dict[str, str] = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None}
    values.update(env)

    url = _uri(values, "MOVIELENS_URL", ("https", "http", "file", "gs")) or DEFAULT_MOVIELENS_URL
    zip_filename = _text(values, "MOVIELENS_ZIP_FILENAME") or Path(urlsplit(url).path).name
    if not zip_filename.endswith(".zip") or "/" in zip_filename:
        raise SettingsError(f"MOVIELENS_ZIP_FILENAME must be a file name ending in .zip, got {zip_filename!r}")
    mongodb_uri = _uri(values, "MONGODB_URI", ("mongodb", "mongodb+srv", "mongomock"))
    log_level = (_text(values, "LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")

    return Settings(
        log_level=log_level,
        gcs_bucket_name=_text(values, "GCS_BUCKET_NAME"),
        gcs_dataset_path=values.get("GCS_DATASET_PATH", "datasets/"),
        storage_emulator_host=_text(values, "STORAGE_EMULATOR_HOST"),
        local_bucket_dir=Path(_text(values, "LOCAL_BUCKET_DIR") or "var/bucket"),
        cache_dir=Path(_text(values, "CACHE_DIR") or "var/cache"),
        mongodb_uri=mongodb_uri,
        mongodb_database=_mongodb_database(mongodb_uri, values),
        movielens_url=url,
        movielens_zip_filename=zip_filename,
        hf_model_name=_text(values, "HF_MODEL_NAME") or DEFAULT_MODEL_NAME,
        hf_device=_text(values, "HF_DEVICE") or "cpu",
        hf_hub_offline=(_text(values, "HF_HUB_OFFLINE") or "0").lower() in ("1", "true", "yes", "on"),
        embedding_precision=_choice(values, "EMBEDDING_PRECISION", "fp32", ("fp32", "bf16")),
        embedding_batch_size=_integer(values, "EMBEDDING_BATCH_SIZE", 64),
        embedding_chunk_size=_integer(values, "EMBEDDING_CHUNK_SIZE", 1000),
        interactions_chunk_rows=_integer(values, "INTERACTIONS_CHUNK_ROWS", 250_000),
        interactions_max_rejected_rows=_integer(values, "INTERACTIONS_MAX_REJECTED_ROWS", 0, minimum=0),
        interactions_max_unknown_fraction=_number(values, "INTERACTIONS_MAX_UNKNOWN_FRACTION", 0.01, 0.0, 1.0),
        max_member_bytes=_integer(values, "MAX_MEMBER_BYTES", 8 * 1024**3),
        redis_url=_uri(values, "REDIS_URL", ("redis", "rediss", "unix")),
        popularity_recent_days=_integer(values, "POPULARITY_RECENT_DAYS", 7),
        popularity_min_rating=_number(values, "POPULARITY_MIN_RATING", 4.0, 0.0, 5.0),
        popularity_top_n=_integer(values, "POPULARITY_TOP_N", 50),
        popularity_ttl_seconds=_integer(values, "POPULARITY_TTL_SECONDS", 86_400),
    )


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return load_settings()
