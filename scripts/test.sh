#!/usr/bin/env bash
# Set up everything the tests need, then run lint, types, the import contracts and the whole test suite.
#   bash scripts/test.sh [pytest args...]
# With MLREC_TEST_MONGODB_URI=mongodb://... every MongoDB test runs against that real MongoDB.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy          # [mypy] in setup.cfg: mlrec_luigi, with luigi.mypy
.venv/bin/lint-imports  # [importlinter] in setup.cfg: plain modules never import tasks; the base imports no stage
exec .venv/bin/python -m pytest "$@"
