"""JSON-lines logging: one event per line, secrets redacted.

``config/logging.ini`` installs :class:`JsonFormatter` for ``luigi`` runs (luigi.cfg points
at it). Code logs events with :func:`log_event`, whose keyword fields become JSON keys.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from mlrec_luigi.errors import expected_names, is_expected
from mlrec_luigi.settings import SettingsError, get_settings, redact

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_TRACEBACK = "Traceback (most recent call last):"
# Python's levels as Google Cloud Logging's severities (what a log-based alert on errors matches).
SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def _one_line(record: logging.LogRecord) -> tuple[str, bool]:
    """The record's message, and whether to show its traceback (not for expected errors)."""
    message = record.getMessage()
    if _TRACEBACK in message:  # Luigi formats the traceback of a failing complete() into its message
        head, _, trace = message.partition(_TRACEBACK)
        last = trace.strip().splitlines()[-1] if trace.strip() else ""
        if last.split(":", 1)[0].rsplit(".", 1)[-1] in expected_names():
            return f"{head.strip().rstrip(':')}: {last}", False
    if record.exc_info and record.exc_info[1] is not None and is_expected(record.exc_info[1]):
        error = record.exc_info[1]
        return f"{message}: {type(error).__name__}: {error}", False
    return message, True


def _secrets() -> list[str]:
    try:
        return get_settings().secrets()
    except SettingsError:
        return []


def scrub(text: str) -> str:
    """Redact URI passwords and every known secret value from ``text``."""
    text = redact(text)
    for secret in _secrets():  # longest first: a decoded password may hold the written one
        text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, event and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        message, with_traceback = _one_line(record)
        time = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        payload: dict[str, Any] = {
            # Cloud Logging, Loki and Datadog read these three without a custom parser.
            "time": time.replace("+00:00", "Z"),
            "severity": SEVERITY.get(record.levelno, "DEFAULT"),
            "message": message,
            "ts": time,
            "level": record.levelname,
            "logger": record.name,
            "event": message,
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info and with_traceback:
            payload["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(payload, default=str, ensure_ascii=False))


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields`` as structured JSON keys."""
    logger.log(level, event, extra=fields)


class ConsoleFormatter(logging.Formatter):
    """One readable line per event for a person at a terminal: time, level, event, fields."""

    def format(self, record: logging.LogRecord) -> str:
        message, with_traceback = _one_line(record)
        fields = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {message} {fields}".rstrip()
        if record.exc_info and with_traceback:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def interactive() -> bool:
    """Whether a person watches stderr (a terminal), rather than cron or a log collector."""
    return sys.stderr.isatty()


def terminal_progress(task: str, percent: int, message: str) -> None:
    """Redraw one progress line on the terminal (interactive runs only)."""
    end = "\n" if percent >= 100 else ""
    sys.stderr.write(f"\r[{task}] {percent:3d}% {scrub(message)}\033[K{end}")
    sys.stderr.flush()


class _PipelineHandler(logging.StreamHandler):
    """The stderr handler this module installs (marked so it is installed once)."""


def configure_logging(level: str = "INFO") -> None:
    """Send every log record, Luigi's included, to stderr (idempotent).

    JSON lines, one event each; readable lines with a progress bar when stderr is a terminal.
    """
    root = logging.getLogger()
    if not any(isinstance(handler, _PipelineHandler) for handler in root.handlers):
        handler = _PipelineHandler()
        handler.setFormatter(ConsoleFormatter() if interactive() else JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "google", "filelock", "httpx", "sentence_transformers", "transformers", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
