"""Fetching the MovieLens zip from its URL: streamed, checksummed while streaming, verified.

Supports ``https://``, ``http://`` and ``file://``; ``gs://`` is read through the bucket
module. Memory stays constant whatever the size: the body goes to disk 1 MiB at a time.
Over HTTP, urllib3's own retry machinery retries connection errors and 5xx answers with
exponential backoff, and a transfer cut mid-way resumes with a ``Range`` request where
the server allows it (else starts over), up to :data:`HTTP_RESUMES` times.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import urllib3

from mlrec_luigi.errors import Expected

BLOCK_BYTES = 1024 * 1024
HTTP_TIMEOUT_S = 60
HTTP_RETRIES = 5
HTTP_BACKOFF_S = 0.5
HTTP_RESUMES = 5
HTTP_READ_BYTES = 64 * 1024  # what a cut connection can lose: a resumption restarts after the last read
RETRIED_STATUSES = (429, 500, 502, 503, 504)
ALLOWED_SCHEMES = ("https", "http", "file", "gs")
_MD5_TOKEN = re.compile(r"\b([0-9a-fA-F]{32})\b")


class SourceError(Expected, RuntimeError):
    """The dataset could not be fetched or failed verification; the message names the URL."""


@dataclass(frozen=True)
class Fetched:
    """What was written to disk, with the checksums computed while it streamed."""

    path: Path
    size: int
    md5: str
    sha256: str


def _check_scheme(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ALLOWED_SCHEMES:
        raise SourceError(
            f"unsupported URL scheme {scheme!r} in MOVIELENS_URL {url}: use one of {', '.join(ALLOWED_SCHEMES)}"
        )
    return scheme


def _open(url: str) -> BinaryIO:
    scheme = _check_scheme(url)
    if scheme == "file":
        return open(unquote(urlsplit(url).path), "rb")
    # The scheme was checked above: only http and https reach urlopen.
    request = urllib.request.Request(url, headers={"User-Agent": "mlrec-luigi"})  # noqa: S310
    return urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)  # noqa: S310


class _Writer:
    """Writes blocks to a file, hashing and counting them as they go."""

    def __init__(self, out: BinaryIO, on_progress: Callable[[int], None] | None) -> None:
        self.out, self.on_progress = out, on_progress
        self.restart()

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.md5, self.sha256, self.size = hashlib.md5(), hashlib.sha256(), 0

    def write(self, block: bytes) -> None:
        self.md5.update(block)
        self.sha256.update(block)
        self.out.write(block)
        self.size += len(block)
        if self.on_progress:
            self.on_progress(self.size)

    def fetched(self, path: Path) -> Fetched:
        return Fetched(path, self.size, self.md5.hexdigest(), self.sha256.hexdigest())


def copy_with_checksums(
    stream: BinaryIO, destination: Path, on_progress: Callable[[int], None] | None = None
) -> Fetched:
    """Copy ``stream`` to ``destination`` in constant memory, hashing as it goes."""
    with open(destination, "wb") as out:
        writer = _Writer(out, on_progress)
        while block := stream.read(BLOCK_BYTES):
            writer.write(block)
        return writer.fetched(destination)


def fetch(
    url: str,
    destination: Path,
    gs_open: Callable[[str], BinaryIO] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Fetched:
    """Stream ``url`` into ``destination``.

    Args:
        url: an https, http, file or gs URL.
        destination: the local file to write (overwritten).
        gs_open: opens a ``gs://`` URL as a binary stream; required for gs URLs.
        on_progress: called with the byte count so far.

    Raises:
        SourceError: the scheme is not allowed, or the transfer failed or came up short.
    """
    scheme = _check_scheme(url)
    if scheme == "gs" and gs_open is None:
        raise SourceError(f"no GCS reader configured for MOVIELENS_URL {url}")
    if scheme in ("http", "https"):
        fetched, expected = _fetch_http(url, destination, on_progress)
        if expected is not None and fetched.size != expected:
            raise SourceError(f"truncated download of MOVIELENS_URL {url}: got {fetched.size} of {expected} bytes")
        return fetched
    try:
        with gs_open(url) if scheme == "gs" and gs_open else _open(url) as stream:
            expected = _content_length(stream)
            fetched = copy_with_checksums(stream, destination, on_progress)
    except (OSError, urllib.error.URLError) as error:
        raise SourceError(f"could not download MOVIELENS_URL {url}: {error}") from error
    if expected is not None and fetched.size != expected:
        raise SourceError(f"truncated download of MOVIELENS_URL {url}: got {fetched.size} of {expected} bytes")
    return fetched


def _http_pool() -> urllib3.PoolManager:
    retry = urllib3.Retry(
        total=HTTP_RETRIES,
        backoff_factor=HTTP_BACKOFF_S,
        status_forcelist=RETRIED_STATUSES,
        allowed_methods=frozenset({"GET"}),
    )
    return urllib3.PoolManager(retries=retry, timeout=urllib3.Timeout(connect=HTTP_TIMEOUT_S, read=HTTP_TIMEOUT_S))


def _fetch_http(url: str, destination: Path, on_progress: Callable[[int], None] | None) -> tuple[Fetched, int | None]:
    """Download over HTTP with retries and resumption; (what was written, the full size if known)."""
    pool = _http_pool()
    expected, resumes = None, 0
    with open(destination, "wb") as out:
        writer = _Writer(out, on_progress)
        while True:
            size = writer.size
            headers = {"User-Agent": "mlrec-luigi", **({"Range": f"bytes={size}-"} if size else {})}
            try:
                response = pool.request("GET", url, headers=headers, preload_content=False)
            except urllib3.exceptions.HTTPError as error:
                raise SourceError(f"could not download MOVIELENS_URL {url}: {_reason(error)}") from None
            try:
                if response.status >= 400:
                    raise SourceError(f"could not download MOVIELENS_URL {url}: HTTP {response.status}")
                if size and response.status != 206:  # the server ignored Range: start over
                    writer.restart()
                    size = 0
                if expected is None:
                    length = response.headers.get("Content-Length")
                    expected = size + int(length) if length and length.isdigit() else None
                for block in response.stream(HTTP_READ_BYTES):
                    writer.write(block)
                if expected is None or writer.size >= expected:
                    break
            except (urllib3.exceptions.HTTPError, OSError) as error:
                if resumes >= HTTP_RESUMES:
                    raise SourceError(
                        f"could not download MOVIELENS_URL {url} after {resumes} resumptions: {_reason(error)}"
                    ) from None
            finally:
                response.release_conn()
            resumes += 1
            if resumes > HTTP_RESUMES:
                break
    return writer.fetched(destination), expected


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return f"{type(error).__name__}: {reason or error}"


def _content_length(stream: BinaryIO) -> int | None:
    headers = getattr(stream, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    return int(value) if value and value.isdigit() else None


def published_md5(url: str) -> str | None:
    """The md5 GroupLens publishes at ``<url>.md5``, or None when none is served."""
    scheme = _check_scheme(url)
    if scheme == "gs":
        return None
    try:
        with _open(url + ".md5") as stream:
            text = stream.read(4096).decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    except urllib.error.HTTPError as error:
        if error.code in (403, 404):
            return None
        raise SourceError(f"could not read MOVIELENS_URL {url}.md5: HTTP {error.code}") from error
    except (OSError, urllib.error.URLError) as error:
        raise SourceError(f"could not read MOVIELENS_URL {url}.md5: {error}") from error
    match = _MD5_TOKEN.search(text)
    if match is None:
        raise SourceError(f"MOVIELENS_URL {url}.md5 holds no md5 checksum")
    return match.group(1).lower()


def verify_md5(url: str, fetched: Fetched, expected: str | None) -> None:
    """Raise SourceError when a published md5 disagrees with the downloaded bytes."""
    if expected is not None and expected != fetched.md5:
        raise SourceError(f"md5 mismatch for MOVIELENS_URL {url}: published {expected}, downloaded {fetched.md5}")
