#!/usr/bin/env bash
# Set up, then run the daily DAG: luigi --module mlrec_luigi DailyRun (UpdatePopular + UpdateSimilarMovies).
#   bash scripts/run-pipeline.sh                      local scheduler, today's date
#   bash scripts/run-pipeline.sh --scheduler-host 127.0.0.1 --workers 2   against a running luigid
#   bash scripts/run-pipeline.sh --date 2026-11-24
# Settings come from the environment and .env (see config/.env.sample). Exit code non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ -z "${MONGODB_URI:-}" ] && ! grep -qs '^MONGODB_URI=.' .env; then
  echo '{"level": "WARNING", "event": "MONGODB_URI is not set: using mongomock:// (in-memory, gone when the run ends). Set MONGODB_URI in .env to keep the data."}' >&2
  export MONGODB_URI="mongomock://localhost/mlrec"
fi
scheduler=(--local-scheduler)
for arg in "$@"; do
  case "$arg" in --scheduler-host|--scheduler-url|--scheduler-host=*|--scheduler-url=*) scheduler=() ;; esac
done
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec .venv/bin/luigi --module mlrec_luigi DailyRun "${scheduler[@]}" "$@"
