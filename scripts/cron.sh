#!/usr/bin/env bash
# The nightly job, as cron runs it (config/crontab.example):
#   15 3 * * * cd /opt/mlrec-luigi && bash scripts/cron.sh
# - every line of the run is appended to var/log/pipeline.jsonl (JSON lines);
# - a failed night also prints its cause in plain words and the log's path on stdout, which cron mails to
#   MAILTO; the exit code is Luigi's
#   (30 a task failed, 35 a setting or service: README);
# - one run at a time: a start while the last one still runs exits 10 with one log line, and does nothing.
# Arguments go to scripts/run-pipeline.sh (e.g. --DownloadMovieLens-refresh on Sundays).
# VAR_DIR (default var) holds the log and the lock.
set -uo pipefail
cd "$(dirname "$0")/.."
var=${VAR_DIR:-var}
mkdir -p "$var/log"
log=$var/log/pipeline.jsonl
now() { date -u +%Y-%m-%dT%H:%M:%S.000Z; }
exec 9>"$var/pipeline.lock"
if ! flock -n 9; then
  echo "{\"time\": \"$(now)\", \"severity\": \"WARNING\", \"message\": \"already running: $var/pipeline.lock is held by the last run; this start did nothing\", \"event\": \"already running\"}" >> "$log"
  exit 10
fi
bash scripts/run-pipeline.sh "$@" >> "$log" 2>&1
status=$?
if [ "$status" -ne 0 ]; then
  # cron mails stdout: the cause in plain words (the message of the run's last line, which is its cause), then the log.
  cause=$(tail -n 1 "$log" | .venv/bin/python -c 'import json, sys
line = sys.stdin.read().strip()
try:
    print(json.loads(line)["message"])
except (ValueError, KeyError, TypeError):
    print(line)' 2>/dev/null || tail -n 1 "$log")
  echo "mlrec-luigi: the nightly run failed (exit $status)."
  echo "Cause: $cause"
  case "$log" in /*) shown=$log ;; *) shown=$(pwd)/$log ;; esac
  echo "Log: $shown"
fi
exit "$status"
