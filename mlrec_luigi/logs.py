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

from mlrec_luigi.settings import SettingsError, get_settings, redact

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _secrets() -> list[str]:
    try:
        return get_settings().secrets()
    except SettingsError:
        return []


def scrub(text: str) -> str:
    """Redact URI passwords and every known secret value from ``text``."""
    text = redact(text)
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, event and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(payload, default=str, ensure_ascii=False))


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields`` as structured JSON keys."""
    logger.log(level, event, extra=fields)


class ConsoleFormatter(logging.Formatter):
    """One readable line per event for a person at a terminal: time, level, event, fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
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
    for noisy in ("urllib3", "google", "filelock", "httpx", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
