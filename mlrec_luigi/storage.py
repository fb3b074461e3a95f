"""The bucket: ``gs://`` through google-cloud-storage, or a local folder standing in for it.

Every write is atomic: a GCS object appears only when its upload completes, and a local
file is written beside its destination and renamed over it. Readers therefore see the
old version or the new one, never a torn file.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from mlrec_luigi.settings import Settings

_COPY_BUFFER = 1024 * 1024


def file_md5(path: Path) -> str:
    """The hex md5 of a file, read in constant memory."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(_COPY_BUFFER):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_local_path(destination: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it over ``destination`` on success."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


class Bucket(ABC):
    """Object storage addressed by keys such as ``datasets/ml-latest-small.zip``."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """The address of ``key`` for humans and logs."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abstractmethod
    def md5_hex(self, key: str) -> str | None:
        """The hex md5 of the object, or None when it is missing."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole object; raises FileNotFoundError when missing."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key`` atomically."""

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless an object is there already; True when this call stored it.

        For outputs that are the same whoever makes them (a checkpoint chunk): a second
        writer (another worker or machine) leaves the first one's object alone.
        """
        if self.exists(key):
            return False
        self.write_bytes(key, data)
        return True

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """The keys that start with ``prefix``, sorted."""

    @abstractmethod
    def upload_file(self, local_path: Path, key: str, content_type: str = "application/octet-stream") -> None:
        """Store a local file under ``key`` atomically."""

    @abstractmethod
    def local_copy(self, key: str, cache_dir: Path) -> Path:
        """A local file with the object's content, downloaded once per content (md5)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    def read_json(self, key: str) -> Any:
        """The object parsed as JSON."""
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, value: Any) -> None:
        """Store ``value`` as JSON atomically."""
        self.write_bytes(key, json.dumps(value, indent=1, sort_keys=True).encode(), "application/json")


class LocalBucket(Bucket):
    """A folder that stands in for the bucket when ``GCS_BUCKET_NAME`` is unset."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"bucket key escapes the bucket folder: {key!r}")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def md5_hex(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            return None
        stat = path.stat()
        return _cached_file_md5(path, stat.st_size, stat.st_mtime_ns)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with atomic_local_path(self._path(key)) as tmp:
            tmp.write_bytes(data)

    def upload_file(self, local_path: Path, key: str, content_type: str = "application/octet-stream") -> None:
        with atomic_local_path(self._path(key)) as tmp:
            shutil.copyfile(local_path, tmp)

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{self.uri(key)} does not exist")
        return path

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        if not folder.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))


@functools.lru_cache(maxsize=64)
def _cached_file_md5(path: Path, size: int, mtime_ns: int) -> str:
    return file_md5(path)


class GCSBucket(Bucket):
    """A Google Cloud Storage bucket through google-cloud-storage.

    Application default credentials in production; anonymous against an emulator. The
    client's own retry policy (exponential backoff on 429, 5xx and timeouts) covers every
    call: uploads here are idempotent (same content under the same key) so they pass
    ``DEFAULT_RETRY`` explicitly.
    """

    def __init__(self, name: str, emulator_host: str | None = None) -> None:
        from google.cloud import storage

        # google-cloud-storage looks the bucket up (one request per process, in a background thread) only
        # to label OpenTelemetry spans, which this pipeline does not export: a no-op run should not pay it.
        os.environ.setdefault("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "true")
        if emulator_host:
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(
                project="emulator",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": emulator_host},
            )
        else:
            client = storage.Client()
        self.name = name
        self._bucket = client.bucket(name)

    def uri(self, key: str) -> str:
        return f"gs://{self.name}/{key}"

    def exists(self, key: str) -> bool:
        return self._bucket.blob(key).exists()

    def md5_hex(self, key: str) -> str | None:
        blob = self._bucket.get_blob(key)
        if blob is None:
            return None
        if blob.md5_hash:
            return base64.b64decode(blob.md5_hash).hex()
        # Composite objects carry no md5: fall back to the one recorded at upload.
        return (blob.metadata or {}).get("md5")

    def read_bytes(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self._bucket.blob(key).download_as_bytes()
        except NotFound:
            raise FileNotFoundError(f"{self.uri(key)} does not exist") from None

    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        self._bucket.blob(key).upload_from_string(
            data, content_type=content_type, checksum="crc32c", retry=DEFAULT_RETRY
        )

    def create(self, key: str, data: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud.storage.retry import DEFAULT_RETRY

        try:
            # if_generation_match=0: only when no object exists; this also makes the upload
            # safe to retry (the library retries conditional writes only).
            self._bucket.blob(key).upload_from_string(
                data, checksum="crc32c", if_generation_match=0, retry=DEFAULT_RETRY
            )
        except PreconditionFailed:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        return sorted(blob.name for blob in self._bucket.client.list_blobs(self._bucket, prefix=prefix))

    def open_read(self, key: str) -> BinaryIO:
        """Stream ``key`` (chunked, retried by the library)."""
        return self._bucket.blob(key).open("rb")

    def upload_file(self, local_path: Path, key: str, content_type: str = "application/octet-stream") -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self._bucket.blob(key)
        blob.metadata = {"md5": file_md5(local_path)}
        blob.upload_from_filename(str(local_path), content_type=content_type, checksum="crc32c", retry=DEFAULT_RETRY)

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        md5 = self.md5_hex(key)
        if md5 is None:
            raise FileNotFoundError(f"{self.uri(key)} does not exist")
        destination = cache_dir / f"{md5}-{Path(key).name}"
        if destination.is_file() and file_md5(destination) == md5:
            return destination
        with atomic_local_path(destination) as tmp:
            self._bucket.blob(key).download_to_filename(str(tmp), checksum="crc32c")
            if file_md5(tmp) != md5:
                raise OSError(f"downloaded {self.uri(key)} does not match its md5 {md5}")
        return destination

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self._bucket.blob(key).delete()


def open_gs_url(url: str, emulator_host: str | None = None) -> BinaryIO:
    """Open a ``gs://bucket/key`` URL for streaming reads (chunked, retried by the library)."""
    parts = urlsplit(url)
    return GCSBucket(parts.netloc, emulator_host).open_read(parts.path.lstrip("/"))


def open_bucket(settings: Settings) -> Bucket:
    """The bucket the settings name: GCS when ``GCS_BUCKET_NAME`` is set, else a local folder."""
    if settings.gcs_bucket_name:
        return _gcs_bucket(settings.gcs_bucket_name, settings.storage_emulator_host, os.getpid())
    return _local_bucket(settings.local_bucket_dir.resolve())


@functools.lru_cache(maxsize=8)
def _gcs_bucket(name: str, emulator_host: str | None, pid: int) -> GCSBucket:
    # One client per bucket and process, shared by every task (a forked worker makes its own);
    # one object per bucket also lets the caches keyed by it (vectors, movie ids) hit across tasks.
    return GCSBucket(name, emulator_host)


@functools.lru_cache(maxsize=8)
def _local_bucket(root: Path) -> LocalBucket:
    return LocalBucket(root)
