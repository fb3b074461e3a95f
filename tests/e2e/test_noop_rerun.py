"""A rerun with everything complete imports neither torch nor sentence-transformers.

(How long it takes is measured by benchmarks/run_all.py, not asserted here.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.env import subprocess_env
from tests.support.processes import MOVIELENS_ZIP, PROJECT
from tests.support.runs import run_luigi
from tests.support.zips import real_slice

PROBE = """
import datetime, sys
import luigi
import mlrec_luigi
from luigi.execution_summary import _summary_dict
result = luigi.build([mlrec_luigi.DailyRun(date=datetime.date(2026, 11, 24))], local_scheduler=True,
                     detailed_summary=True)
print(sorted(t.task_family for t in _summary_dict(result.worker)["already_done"]))
print(sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules))
"""


def test_a_complete_dag_reruns_without_heavy_imports(tmp_path: Path, wire_mongo: tuple[str, str]) -> None:
    # A MongoDB that outlives the process: a marker counts only while MongoDB holds what it says.
    uri, database = wire_mongo
    zip_path = real_slice(MOVIELENS_ZIP, tmp_path / "ml.zip", 30, 300)
    env = subprocess_env(tmp_path, MOVIELENS_URL=zip_path.as_uri(), MONGODB_URI=uri, MONGODB_DATABASE=database)
    first = run_luigi("DailyRun", "--local-scheduler", "--date", "2026-11-24", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    already_done, heavy = probe.stdout.strip().splitlines()[-2:]
    assert already_done == "['DailyRun']"
    assert heavy == "[]"
