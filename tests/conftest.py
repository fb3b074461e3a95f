"""Shared fixtures: the real local services (tests/support/services.py) and a clean pipeline env.

MongoDB modes (see README "Tests"): with ``MLREC_TEST_MONGODB_URI`` set, every MongoDB
test runs against that real MongoDB (one fresh database per test, dropped afterwards).
Otherwise ``wire_mongo`` is the mongoeco server and ``volume_mongo`` the in-process
mongomock fake (for the full 100k-rating runs mongoeco is too slow for).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlrec_luigi import settings
from tests.support.runs import reset_process_state

pytest_plugins = ["tests.support.services"]


@pytest.fixture
def pipeline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., dict[str, str]]]:
    """Set the pipeline's settings for one test: ``pipeline_env(MONGODB_URI=..., ...)``.

    Starts from a clean slate: no .env, no inherited settings, local bucket and cache in
    ``tmp_path``. Returns the variables set.
    """
    for name in {field.upper() for field in settings.Settings.__dataclass_fields__} | {"MONGODB_DATABASE"}:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLREC_ENV_FILE", str(tmp_path / "no.env"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRYOUT_STORE", str(tmp_path / "mongomock.bson"))

    def configure(**values: str) -> dict[str, str]:
        defaults = {
            "LOCAL_BUCKET_DIR": str(tmp_path / "bucket"),
            "CACHE_DIR": str(tmp_path / "cache"),
            "TRYOUT_STORE": str(tmp_path / "mongomock.bson"),  # never the project's var/
        }
        merged = {**defaults, **values}
        for name, value in merged.items():
            monkeypatch.setenv(name, value)
        reset_process_state()
        return merged

    reset_process_state()
    yield configure
    reset_process_state()
