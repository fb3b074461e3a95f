"""Environments and command lines for the real processes that tests and benchmarks start."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

INHERITED_PREFIXES_DROPPED = ("MONGODB", "REDIS", "GCS", "MOVIELENS", "STORAGE_EMULATOR", "TRYOUT")


def subprocess_env(folder: Path, **values: str) -> dict[str, str]:
    """This process's environment minus pipeline settings, with a private bucket and cache in ``folder``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES_DROPPED)},
        "MLREC_ENV_FILE": str(folder / "no.env"),
        "LOCAL_BUCKET_DIR": str(folder / "bucket"),
        "CACHE_DIR": str(folder / "cache"),
        "TRYOUT_STORE": str(folder / "mongomock.bson"),  # never the project's var/
        "HF_HUB_OFFLINE": "1",
        **values,
    }


def redis_command(port: int, folder: Path, *extra: str) -> list[str]:
    """A redis-server on loopback that keeps nothing on disk."""
    binary = shutil.which("redis-server") or "redis-server"
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        *extra,
    ]
