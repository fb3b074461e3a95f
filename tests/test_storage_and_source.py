"""The bucket (local folder and fake-gcs-server through google-cloud-storage) and the download."""

from __future__ import annotations

import hashlib
import http.server
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from mlrec_luigi import source
from mlrec_luigi.source import SourceError
from mlrec_luigi.storage import Bucket, GCSBucket, LocalBucket, open_gs_url
from mlrec_luigi.tasks.targets import MarkerTarget
from tests.support.processes import MOVIELENS_MD5, MOVIELENS_ZIP


@pytest.fixture(params=["local", "gcs"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Bucket:
    if request.param == "local":
        return LocalBucket(tmp_path / "bucket")
    return GCSBucket(request.getfixturevalue("gcs_bucket"), request.getfixturevalue("gcs_emulator"))


def test_bucket_roundtrip(bucket: Bucket, tmp_path: Path) -> None:
    assert not bucket.exists("a/b.json") and bucket.md5_hex("a/b.json") is None
    bucket.write_json("a/b.json", {"x": 1})
    assert bucket.exists("a/b.json") and bucket.read_json("a/b.json") == {"x": 1}
    bucket.write_bytes("a/b.json", b"[2]")
    assert bucket.read_json("a/b.json") == [2]
    assert bucket.md5_hex("a/b.json") == hashlib.md5(b"[2]").hexdigest()
    bucket.delete("a/b.json")
    bucket.delete("a/b.json")
    assert not bucket.exists("a/b.json")
    with pytest.raises(FileNotFoundError):
        bucket.read_bytes("a/b.json")


def test_upload_and_local_copy_keep_the_bytes(bucket: Bucket, tmp_path: Path) -> None:
    bucket.upload_file(MOVIELENS_ZIP, "datasets/ml.zip", "application/zip")
    assert bucket.md5_hex("datasets/ml.zip") == MOVIELENS_MD5
    copy = bucket.local_copy("datasets/ml.zip", tmp_path / "cache")
    assert hashlib.md5(copy.read_bytes()).hexdigest() == MOVIELENS_MD5
    assert bucket.local_copy("datasets/ml.zip", tmp_path / "cache") == copy


def test_local_bucket_writes_atomically_and_stays_inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = LocalBucket(tmp_path / "b")
    bucket.write_bytes("x/y.bin", b"old content")
    assert [p.name for p in (tmp_path / "b" / "x").iterdir()] == ["y.bin"]  # no temp files left
    original = Path.write_bytes

    def dies_halfway(self: Path, data: bytes) -> int:  # a crash (or a full disk) in the middle of a write
        original(self, data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_bytes", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        bucket.write_bytes("x/y.bin", b"new content, never seen half-written")
    monkeypatch.undo()
    assert bucket.read_bytes("x/y.bin") == b"old content"  # readers never see the half-written object
    assert [p.name for p in (tmp_path / "b" / "x").iterdir()] == ["y.bin"]
    with pytest.raises(ValueError, match="escapes the bucket"):
        bucket.write_bytes("../outside", b"1")


def test_marker_counts_only_while_true(tmp_path: Path) -> None:
    bucket = LocalBucket(tmp_path)
    holds = {"ok": True}
    target = MarkerTarget(bucket, "m.json", expect={"source_md5": "abc"}, still_valid=lambda m: holds["ok"])
    assert not target.exists()
    target.write({"count": 3})
    assert bucket.read_json("m.json") == {"count": 3, "source_md5": "abc"}
    assert target.exists()
    holds["ok"] = False
    assert not target.exists()
    assert not MarkerTarget(bucket, "m.json", expect={"source_md5": "other"}).exists()
    bucket.write_bytes("m.json", b"{torn")
    assert not MarkerTarget(bucket, "m.json").exists()


def test_fetch_over_http_checksums_while_streaming(served_movielens: str, tmp_path: Path) -> None:
    fetched = source.fetch(served_movielens, tmp_path / "ml.zip")
    assert (fetched.size, fetched.md5) == (978202, MOVIELENS_MD5)
    assert fetched.sha256 == "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"
    assert source.published_md5(served_movielens) == MOVIELENS_MD5
    source.verify_md5(served_movielens, fetched, MOVIELENS_MD5)


def test_md5_mismatch_is_refused(served_movielens: str, http_folder: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = http_folder
    (folder / "ml-latest-small.zip.md5").write_text("0" * 32 + "  ml-latest-small.zip\n")
    fetched = source.fetch(served_movielens, tmp_path / "ml.zip")
    with pytest.raises(SourceError, match=f"md5 mismatch for MOVIELENS_URL {served_movielens}: published 0{{32}}"):
        source.verify_md5(served_movielens, fetched, source.published_md5(served_movielens))


def test_missing_md5_file_is_not_an_error(http_folder: tuple[Path, str]) -> None:
    folder, base = http_folder
    shutil.copyfile(MOVIELENS_ZIP, folder / "ml.zip")
    assert source.published_md5(f"{base}/ml.zip") is None


def test_missing_url_fails_with_the_url(http_folder: tuple[Path, str], tmp_path: Path) -> None:
    _, base = http_folder
    with pytest.raises(SourceError, match=f"could not download MOVIELENS_URL {base}/nothing.zip: HTTP 404"):
        source.fetch(f"{base}/nothing.zip", tmp_path / "x.zip")


def test_file_and_gs_urls(gcs_bucket: str, gcs_emulator: str, tmp_path: Path) -> None:
    fetched = source.fetch(MOVIELENS_ZIP.as_uri(), tmp_path / "a.zip")
    assert fetched.md5 == MOVIELENS_MD5
    GCSBucket(gcs_bucket, gcs_emulator).upload_file(MOVIELENS_ZIP, "in/ml.zip")
    fetched = source.fetch(
        f"gs://{gcs_bucket}/in/ml.zip", tmp_path / "b.zip", gs_open=lambda url: open_gs_url(url, gcs_emulator)
    )
    assert fetched.md5 == MOVIELENS_MD5


@pytest.mark.parametrize("url", ["ftp://example.org/ml.zip", "s3://bucket/ml.zip", "javascript:alert(1)"])
def test_other_schemes_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        source.fetch(url, tmp_path / "x.zip")


def test_create_stores_once_and_list_finds_by_prefix(bucket: Bucket) -> None:
    assert bucket.create("a/chunk-00000.npy", b"first") is True
    assert bucket.create("a/chunk-00000.npy", b"second") is False  # GCS: if_generation_match=0 answers 412
    assert bucket.read_bytes("a/chunk-00000.npy") == b"first"
    bucket.write_bytes("a/chunk-00001.npy", b"x")
    bucket.write_bytes("b/other.json", b"{}")
    assert bucket.list("a/chunk-") == ["a/chunk-00000.npy", "a/chunk-00001.npy"]
    assert bucket.list("nothing/") == []


class _Unreliable(http.server.BaseHTTPRequestHandler):
    """Serves one file: 503 for the first requests, then cuts the first full answer mid-way; honours Range."""

    body = b""
    unavailable = 2
    cut_after: int | None = None
    requests: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.headers.get("Range"))
        if type(self).unavailable > 0:
            type(self).unavailable -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(self.body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        payload = self.body[start:]
        if type(self).cut_after is not None:
            payload, type(self).cut_after = payload[: type(self).cut_after], None
            self.wfile.write(payload)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-transfer
            return
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def unreliable_server() -> Iterator[tuple[type[_Unreliable], str]]:
    handler = type("Server", (_Unreliable,), {"body": MOVIELENS_ZIP.read_bytes(), "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/ml.zip"
    server.shutdown()


def test_a_download_survives_5xx_answers_and_a_cut_connection(unreliable_server, tmp_path: Path) -> None:
    handler, url = unreliable_server
    handler.unavailable, handler.cut_after = 2, 500_000
    fetched = source.fetch(url, tmp_path / "ml.zip")
    assert fetched.md5 == MOVIELENS_MD5 and fetched.size == MOVIELENS_ZIP.stat().st_size
    assert handler.requests[:3] == [None, None, None] and len(handler.requests) == 4  # two 503s retried
    resumed_at = int(handler.requests[3].removeprefix("bytes=").rstrip("-"))  # then resumed, not restarted
    assert 400_000 < resumed_at <= 500_000


def test_a_download_that_keeps_failing_names_the_url(unreliable_server, tmp_path: Path) -> None:
    handler, url = unreliable_server
    handler.unavailable = 100
    with pytest.raises(SourceError, match=rf"could not download MOVIELENS_URL {re.escape(url)}: MaxRetryError"):
        source.fetch(url, tmp_path / "ml.zip")
