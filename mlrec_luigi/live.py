"""Which date's popular list is live in Redis: a stored claim, checked before it is believed.

``popular/live.json`` records the date whose list ``rec:fallback:popular`` holds (the newest date
run, never a backfill). A record that is missing, damaged, or names a date no run could have
published (not a date, or later than tomorrow, as an older version could leave) is not believed:
the live date is derived again from what the popular markers say was published, and recorded anew.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import PurePosixPath

from mlrec_luigi import published
from mlrec_luigi.damage import DamagedObject, json_decoder, read_checked
from mlrec_luigi.logs import log_event
from mlrec_luigi.storage import Bucket

logger = logging.getLogger("mlrec_luigi")


def latest_believable(today: dt.date | None = None) -> dt.date:
    """The latest date a run may have: tomorrow (UTC), as the ``--date`` parameter allows."""
    return (today or dt.datetime.now(dt.UTC).date()) + dt.timedelta(days=1)


def believable_date(value: object, latest: dt.date) -> dt.date | None:
    """``value`` as a run's date, or None when no run could have had it."""
    if not isinstance(value, str):
        return None
    try:
        date = dt.date.fromisoformat(value)
    except ValueError:
        return None
    return date if date <= latest else None


def _decoder(latest: dt.date) -> Callable[[bytes, str], dt.date]:
    read_dict = json_decoder(lambda value: isinstance(value, dict))

    def decode(data: bytes, label: str) -> dt.date:
        value = read_dict(data, label)
        date = believable_date(value.get("date"), latest)
        if date is None:
            raise DamagedObject(f"its date {value.get('date')!r} is not one a run could have published")
        return date

    return decode


def published_dates(bucket: Bucket, markers_prefix: str, latest: dt.date) -> list[dt.date]:
    """The dates whose markers say their list was published, each checked like a parameter."""
    dates = []
    for key in bucket.list(markers_prefix):
        date = believable_date(PurePosixPath(key).stem, latest)
        if date is None:
            continue
        try:
            marker = bucket.read_json(key)
        except (FileNotFoundError, ValueError):
            continue  # a damaged marker is its own stage's to rerun
        if (
            isinstance(marker, dict)
            and marker.get("redis") == published.PUBLISHED
            and marker.get("date") == date.isoformat()
        ):
            dates.append(date)
    return sorted(dates)


def live_date(bucket: Bucket, live_key: str, markers_prefix: str, task: str) -> dt.date | None:
    """The date whose list is live (None: none was ever published), believed only when it can be true."""
    latest = latest_believable()
    try:
        return read_checked(bucket, live_key, _decoder(latest), "the live date is derived again from the markers")
    except FileNotFoundError:
        reason = f"{bucket.uri(live_key)} is missing"
    except DamagedObject as error:
        reason = str(error)
    dates = published_dates(bucket, markers_prefix, latest)
    derived = dates[-1] if dates else None
    if derived is not None or not reason.endswith("is missing"):  # a first run has nothing to say
        log_event(logger, f"{reason}: the live popular list is derived again from the markers: {derived}",
                  logging.WARNING, task=task)  # fmt: skip
    if derived is not None:
        record_live(bucket, live_key, derived)
    return derived


def record_live(bucket: Bucket, live_key: str, date: dt.date) -> None:
    bucket.write_json(live_key, {"date": date.isoformat()})
