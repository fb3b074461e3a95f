"""Task parameters that get the checks settings get: a bad value ends the run in one line (exit 35).

Luigi parses command-line values before anything runs, and a value it cannot read is an
"uncaught exception" with a traceback (exit 40). These parameters keep what they cannot read
as :class:`Invalid`; the task's first ``complete()`` (``PipelineTask.settings``) refuses it in one
line naming the parameter, like a malformed setting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import luigi

from mlrec_luigi.settings import Settings, SettingsError, get_settings

MAX_INT = 2**31 - 1


class Invalid(str):
    """A command-line value a parameter could not read (kept so the refusal can name it)."""

    __slots__ = ()


class CheckedIntParameter(luigi.IntParameter):
    """An integer between ``minimum`` and ``maximum``."""

    def __init__(self, minimum: int = 0, maximum: int = MAX_INT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minimum, self.maximum = minimum, maximum

    def parse(self, x: str) -> Any:
        try:
            return int(x)
        except ValueError:
            return Invalid(x)

    def normalize(self, x: Any) -> Any:
        return x if isinstance(x, Invalid) or x is None else int(x)

    def problem(self, value: Any) -> str | None:
        if isinstance(value, Invalid):
            return f"must be an integer, got {str(value)!r}"
        if not self.minimum <= value <= self.maximum:
            return f"must be between {self.minimum:,} and {self.maximum:,}, got {value:,}"
        return None


class RunDateParameter(luigi.DateParameter):
    """The run's date (UTC): defaults to the day the task is made; at most tomorrow.

    A later date would take the live popular list and keep every following daily run from publishing.
    """

    def __init__(self, default: dt.date | None = None, **kwargs: Any) -> None:
        # None: the day the task is made (normalize); typed so that the task's attribute is a date.
        super().__init__(default=default, **kwargs)  # type: ignore[arg-type]

    def parse(self, s: str) -> Any:
        try:
            return super().parse(s)
        except ValueError:
            return Invalid(s)

    def normalize(self, value: Any) -> Any:
        if isinstance(value, Invalid):
            return value
        return dt.datetime.now(dt.UTC).date() if value is None else super().normalize(value)

    def serialize(self, dt_value: Any) -> str:
        return str(dt_value) if isinstance(dt_value, Invalid) else super().serialize(dt_value)

    def problem(self, value: Any) -> str | None:
        if isinstance(value, Invalid):
            return f"must be a date YYYY-MM-DD, got {str(value)!r}"
        tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
        if value > tomorrow:
            return (
                f"is later than tomorrow (UTC, {tomorrow.isoformat()}): a run's date is the day it runs, or a past day"
            )
        return None


class Md5Parameter(luigi.Parameter):
    """The md5 of a zip, as 32 hex digits."""

    def problem(self, value: Any) -> str | None:
        text = str(value)
        if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
            return f"must be the 32 hex digits of a zip's md5, got {text!r}"
        return None


def parameter_problem(task: luigi.Task) -> str | None:
    """The first parameter of ``task`` whose value is refused, as one line; None when all are fine."""
    for name, parameter in task.get_params():
        check = getattr(parameter, "problem", None)
        if check is None:
            continue
        problem = check(getattr(task, name))
        if problem:
            return f"--{name.replace('_', '-')} of {task.task_family} {problem}"
    return None


class SettingParameter(luigi.Parameter):
    """A parameter whose default is read from the settings when the task is made.

    It puts what the settings choose (the dataset, the model) into the task's id, so two
    pipelines under one scheduler never share a task, and the dashboard names each.
    """

    def __init__(self, read: Callable[[Settings], str], **kwargs: Any) -> None:
        super().__init__(default=None, **kwargs)  # type: ignore[arg-type]  # normalize() reads the settings
        self._read = read

    def normalize(self, value: Any) -> Any:
        if value is not None:
            return value
        try:
            return self._read(get_settings())
        except SettingsError:
            return "(settings invalid)"  # complete() raises the error itself, in one line


def model_parameter() -> SettingParameter:
    """The embedding model, for the tasks whose output it shapes (default: ``HF_MODEL_NAME``)."""
    return SettingParameter(read=lambda settings: settings.hf_model_name, description="default: HF_MODEL_NAME")
