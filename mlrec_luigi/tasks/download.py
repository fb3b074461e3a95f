"""Stage 1: put the MovieLens zip into the bucket, downloading it only if missing.

    luigi --module mlrec_luigi DownloadMovieLens --local-scheduler
    luigi --module mlrec_luigi DownloadMovieLens --refresh --local-scheduler

A zip in the bucket is kept as it is: a daily run never downloads again. ``--refresh``
takes a new release published at ``MOVIELENS_URL``: it downloads and verifies the zip,
and replaces the bucket's copy when the content differs. Every stage below then sees a
new zip md5 and rebuilds from it (the MovieLens interactions become the new ratings.csv).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import BinaryIO

from mlrec_luigi import movielens, source
from mlrec_luigi.settings import redact
from mlrec_luigi.storage import open_gs_url
from mlrec_luigi.tasks.base import ReleaseCheck
from mlrec_luigi.tasks.targets import BucketTarget


class DownloadMovieLens(ReleaseCheck):
    """Stream ``MOVIELENS_URL`` to disk, verify it, upload it to ``GCS_DATASET_PATH``."""

    def output(self) -> BucketTarget:
        return BucketTarget(self.bucket, self.zip_key)

    def run(self) -> None:
        url = self.settings.movielens_url
        self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.settings.cache_dir, prefix="download-") as tmp:
            fetched = source.fetch(
                url,
                Path(tmp) / self.settings.movielens_zip_filename,
                gs_open=self._open_gs,
                on_progress=lambda done: self.set_status_message(f"downloaded {done:,} bytes"),
            )
            published = source.published_md5(url)
            source.verify_md5(url, fetched, published)
            summary = movielens.inspect_zip(fetched.path, self.settings.max_member_bytes, label=url)
            replaced = self.bucket.md5_hex(self.zip_key)
            if replaced != fetched.md5:
                self.bucket.upload_file(fetched.path, self.zip_key, content_type="application/zip")
        self.counts = {
            "bytes": fetched.size,
            "md5": fetched.md5,
            "sha256": fetched.sha256,
            "md5_published": published is not None,
            "uncompressed_bytes": summary.uncompressed_bytes,
            "destination": self.output().uri,
            "replaced": replaced if replaced and replaced != fetched.md5 else None,
            "unchanged": replaced == fetched.md5,
        }
        self.record_refresh({**self.counts, "url": redact(url)})

    def _open_gs(self, url: str) -> BinaryIO:
        return open_gs_url(url, self.settings.storage_emulator_host)
