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

from mlrec_luigi.errors import Expected

DEFAULT_MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
POPULAR_REDIS_KEY = "rec:fallback:popular"
SIMILAR_REDIS_PREFIX = "rec:item:"
USER_REDIS_PREFIX = "rec:user:"
# How the user lists are computed (methods.py): the API's definition, the collaborative model, the better measured.
USER_RECS_METHODS = ("content", "collaborative", "best")
MIN_SIMILAR_TTL_SECONDS = 86_400  # the API's own cache time: a daily run must refresh keys before they lapse
MAX_INT = 2**31 - 1
TRYOUT_SCHEME = "mongomock://"  # the in-process MongoDB stand-in (standins.py)

# scheme://userinfo@ up to the last "@" of the token: a password may hold "/", "#" or "@" raw.
_URI_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*)@")
_PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_MUST_BE_ENCODED = set(":/?#[]@")
_BAD_DATABASE_CHARS = set('/\\. "$*<>:|?\0')
MIN_SCRUBBED_SECRET = 3


class SettingsError(Expected, ValueError):
    """A setting is missing or malformed; the message names the setting."""


def redact(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` in ``text`` with ``***``.

    The userinfo runs to the last ``@`` of the URI, so a password holding ``/``, ``#``,
    ``:`` or ``@`` unencoded is hidden whole, not cut at its first odd character.
    """

    def hide(match: re.Match[str]) -> str:
        user = match["userinfo"].split(":", 1)[0] if ":" in match["userinfo"] else ""
        return f"{match['scheme']}{user}:***@"

    return _URI_USERINFO.sub(hide, text)


def _raw_password(uri: str) -> str | None:
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    if "@" not in rest:
        return None
    userinfo = rest.rsplit("@", 1)[0]
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


def uri_passwords(uri: str | None) -> list[str]:
    """The password inside a URI's userinfo, as written and decoded (none when absent)."""
    raw = _raw_password(uri) if uri else None
    if not raw:
        return []
    return sorted({raw, unquote(raw)}, key=len, reverse=True)


def uri_password(uri: str | None) -> str | None:
    """The decoded password inside a URI's userinfo, or None."""
    raw = _raw_password(uri) if uri else None
    return unquote(raw) if raw else None


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
    tryout_store: Path = Path("var/mongomock.bson")
    mongodb_is_tryout: bool = field(default=False, metadata={"derived": True})  # from MONGODB_URI unset
    mongodb_database: str = "mlrec"
    movielens_url: str = DEFAULT_MOVIELENS_URL
    movielens_zip_filename: str = "ml-latest-small.zip"
    hf_model_name: str = DEFAULT_MODEL_NAME
    hf_device: str = "cpu"
    hf_hub_offline: bool = True
    embedding_precision: str = "fp32"
    embedding_batch_size: int = 64
    embedding_chunk_size: int = 1000
    interactions_chunk_rows: int = 250_000
    interactions_max_rejected_rows: int = 0
    interactions_max_unknown_fraction: float = 0.01
    release_max_removed_fraction: float = 0.10
    max_member_bytes: int = 8 * 1024**3
    redis_url: str | None = field(default=None, repr=False)
    popularity_recent_days: int = 7
    popularity_min_rating: float = 4.0
    popularity_top_n: int = 50
    popularity_ttl_seconds: int = 86_400
    similar_movies_top_n: int = 10
    similar_movies_ttl_seconds: int = 90_000
    similar_movies_block_rows: int = 2048
    user_recs_top_n: int = 10
    user_recs_ttl_seconds: int = 90_000
    user_recs_active_days: int = 0
    user_recs_method: str = "best"
    user_recs_partitions: int = 0
    user_recs_full_read_days: int = 7
    quality_sample_users: int = 20_000
    quality_max_drop: float = 0.5

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
        """Every secret value a log line must never show (as written and decoded), longest first."""
        found = {*uri_passwords(self.mongodb_uri), *uri_passwords(self.redis_url)}
        return sorted((s for s in found if len(s) >= MIN_SCRUBBED_SECRET), key=len, reverse=True)

    def describe(self) -> dict[str, object]:
        """All settings as plain values, secrets redacted: safe to log."""
        return {f.name: redact(str(getattr(self, f.name))) for f in fields(self)}


DEFAULTS = Settings()  # each default is written once, in the dataclass


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int = MAX_INT) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum:,} and {maximum:,}, got {value:,}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:  # NaN too
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_text(env, name) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _shown(uri: str) -> str:
    """``uri`` for an error message: its password (known, whatever it holds) replaced by ``***``."""
    raw = _raw_password(uri)
    return redact(uri.replace(raw, "***") if raw else uri)


def _uri(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = _text(env, name)
    if value is None:
        return None
    raw_password = _raw_password(value)
    if raw_password and (_MUST_BE_ENCODED & set(raw_password) or "%" in _PERCENT_ENCODED.sub("", raw_password)):
        raise SettingsError(
            f"{name}: the password holds a character that must be percent-encoded (any of : / ? # [ ] @ %; "
            f"encode it with urllib.parse.quote_plus): {_shown(value)}"
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        # Python's message quotes the part it could not read: never show it, it may be the password.
        raise SettingsError(f"{name} is malformed (its host or port cannot be read): {_shown(value)}") from None
    if parts.scheme not in schemes:
        raise SettingsError(f"{name} must start with {' or '.join(s + '://' for s in schemes)}, got {_shown(value)}")
    if not parts.netloc and parts.scheme not in ("unix", "mongomock", "file"):
        raise SettingsError(f"{name} has no host: {_shown(value)}")
    return value


def _mongodb_database(uri: str | None, env: Mapping[str, str]) -> str:
    name, source = _text(env, "MONGODB_DATABASE"), "MONGODB_DATABASE"
    if not name and uri:
        name, source = urlsplit(uri).path.strip("/") or None, "the database of MONGODB_URI"
    if not name:
        return "mlrec"
    bad = sorted(_BAD_DATABASE_CHARS & set(name))
    if bad or len(name.encode()) > 63:
        reason = f"holds {' '.join(repr(c) for c in bad)}" if bad else "is longer than 63 bytes"
        raise SettingsError(f"{source} {name!r} is not a name MongoDB accepts: it {reason}")
    return name


def _folder(env: Mapping[str, str], name: str, default: Path) -> Path:
    """A folder the pipeline creates if needed: refused when it, or a parent, is a file."""
    path = Path(_text(env, name) or default)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is a file" if candidate == path else f"lies under {candidate}, which is a file"
                raise SettingsError(f"{name}={path} {what}: it must be a folder")
            break
    return path


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
    # The try-out default is decided here, after the environment, `.env` and MLREC_ENV_FILE are all read:
    # a MONGODB_URI set any of those ways is never replaced, reachable or not.
    tryout_store = Path(_text(values, "TRYOUT_STORE") or DEFAULTS.tryout_store)
    mongodb_is_tryout = mongodb_uri is None
    if mongodb_is_tryout:
        mongodb_uri = f"{TRYOUT_SCHEME}localhost/mlrec?store={tryout_store}"
    log_level = (_text(values, "LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")

    return Settings(
        log_level=log_level,
        gcs_bucket_name=_text(values, "GCS_BUCKET_NAME"),
        gcs_dataset_path=values.get("GCS_DATASET_PATH", DEFAULTS.gcs_dataset_path),
        storage_emulator_host=_text(values, "STORAGE_EMULATOR_HOST"),
        local_bucket_dir=_folder(values, "LOCAL_BUCKET_DIR", DEFAULTS.local_bucket_dir),
        cache_dir=_folder(values, "CACHE_DIR", DEFAULTS.cache_dir),
        mongodb_uri=mongodb_uri,
        tryout_store=tryout_store,
        mongodb_is_tryout=mongodb_is_tryout,
        mongodb_database=_mongodb_database(mongodb_uri, values),
        movielens_url=url,
        movielens_zip_filename=zip_filename,
        hf_model_name=_text(values, "HF_MODEL_NAME") or DEFAULTS.hf_model_name,
        hf_device=_text(values, "HF_DEVICE") or DEFAULTS.hf_device,
        hf_hub_offline=(_text(values, "HF_HUB_OFFLINE") or "1").lower() in ("1", "true", "yes", "on"),
        embedding_precision=_choice(values, "EMBEDDING_PRECISION", DEFAULTS.embedding_precision, ("fp32", "bf16")),
        embedding_batch_size=_integer(values, "EMBEDDING_BATCH_SIZE", DEFAULTS.embedding_batch_size, maximum=65_536),
        embedding_chunk_size=_integer(
            values, "EMBEDDING_CHUNK_SIZE", DEFAULTS.embedding_chunk_size, maximum=10_000_000
        ),
        interactions_chunk_rows=_integer(
            values, "INTERACTIONS_CHUNK_ROWS", DEFAULTS.interactions_chunk_rows, maximum=100_000_000
        ),
        interactions_max_rejected_rows=_integer(
            values, "INTERACTIONS_MAX_REJECTED_ROWS", DEFAULTS.interactions_max_rejected_rows, minimum=0
        ),
        interactions_max_unknown_fraction=_number(
            values, "INTERACTIONS_MAX_UNKNOWN_FRACTION", DEFAULTS.interactions_max_unknown_fraction, 0.0, 1.0
        ),
        release_max_removed_fraction=_number(
            values, "RELEASE_MAX_REMOVED_FRACTION", DEFAULTS.release_max_removed_fraction, 0.0, 1.0
        ),
        max_member_bytes=_integer(values, "MAX_MEMBER_BYTES", DEFAULTS.max_member_bytes, maximum=2**50),
        redis_url=_uri(values, "REDIS_URL", ("redis", "rediss", "unix")),
        # 100 years: the window's start stays a date Python and MongoDB can hold.
        popularity_recent_days=_integer(
            values, "POPULARITY_RECENT_DAYS", DEFAULTS.popularity_recent_days, maximum=36_500
        ),
        popularity_min_rating=_number(values, "POPULARITY_MIN_RATING", DEFAULTS.popularity_min_rating, 0.0, 5.0),
        popularity_top_n=_integer(values, "POPULARITY_TOP_N", DEFAULTS.popularity_top_n, maximum=100_000),
        popularity_ttl_seconds=_integer(values, "POPULARITY_TTL_SECONDS", DEFAULTS.popularity_ttl_seconds),
        similar_movies_top_n=_integer(values, "SIMILAR_MOVIES_TOP_N", DEFAULTS.similar_movies_top_n, maximum=1_000),
        similar_movies_ttl_seconds=_integer(
            values, "SIMILAR_MOVIES_TTL_SECONDS", DEFAULTS.similar_movies_ttl_seconds, minimum=MIN_SIMILAR_TTL_SECONDS
        ),
        similar_movies_block_rows=_integer(
            values, "SIMILAR_MOVIES_BLOCK_ROWS", DEFAULTS.similar_movies_block_rows, maximum=1_000_000
        ),
        user_recs_top_n=_integer(values, "USER_RECS_TOP_N", DEFAULTS.user_recs_top_n, maximum=1_000),
        user_recs_ttl_seconds=_integer(
            values, "USER_RECS_TTL_SECONDS", DEFAULTS.user_recs_ttl_seconds, minimum=MIN_SIMILAR_TTL_SECONDS
        ),
        user_recs_active_days=_integer(
            values, "USER_RECS_ACTIVE_DAYS", DEFAULTS.user_recs_active_days, minimum=0, maximum=36_500
        ),
        user_recs_method=_choice(values, "USER_RECS_METHOD", DEFAULTS.user_recs_method, USER_RECS_METHODS),
        user_recs_partitions=_integer(values, "USER_RECS_PARTITIONS", DEFAULTS.user_recs_partitions, 0, 100_000),
        user_recs_full_read_days=_integer(
            values, "USER_RECS_FULL_READ_DAYS", DEFAULTS.user_recs_full_read_days, minimum=1, maximum=3_650
        ),
        quality_sample_users=_integer(
            values, "QUALITY_SAMPLE_USERS", DEFAULTS.quality_sample_users, minimum=100, maximum=100_000_000
        ),
        quality_max_drop=_number(values, "QUALITY_MAX_DROP", DEFAULTS.quality_max_drop, 0.0, 1.0),
    )


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return load_settings()
