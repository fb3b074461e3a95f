"""The MovieLens dataset: the zip, its CSV files, and the rules for each field.

Pure functions over files and DataFrames; nothing here knows of Luigi or MongoDB.
Errors are :class:`DatasetError` and name the file and the row (1-based data rows,
the header excluded) so a bad download is diagnosed from the message alone.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from mlrec_luigi.errors import Damaged, Expected
from mlrec_luigi.npy import from_npy, to_npy

REQUIRED_MEMBERS = ("movies.csv", "ratings.csv")
COLUMNS = {
    "movies.csv": ("movieId", "title", "genres"),
    "links.csv": ("movieId", "imdbId", "tmdbId"),
    "ratings.csv": ("userId", "movieId", "rating", "timestamp"),
}
NO_GENRES = "(no genres listed)"
MAX_COMPRESSION_RATIO = 200
READABLE_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
MAX_REPORTED_ROWS = 10
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class PartDamaged(Damaged):
    """A ratings part written by PrepareRatings cannot be read back."""


class DatasetError(Expected, ValueError):
    """The dataset is unusable; the message names the file and, where known, the row."""


# --- the zip -----------------------------------------------------------------------


@dataclass(frozen=True)
class ZipSummary:
    """The members of a verified MovieLens zip, by file name."""

    members: dict[str, str]
    uncompressed_bytes: int


def inspect_zip(path: Path, max_member_bytes: int, label: str | None = None) -> ZipSummary:
    """Verify that ``path`` is a readable MovieLens zip and bounded in size.

    Checks, in order: it is a zip; ``movies.csv`` and ``ratings.csv`` are present; no
    member is larger than ``max_member_bytes`` or compressed more than 200:1 (zip bombs
    are refused before a byte is inflated); every member's CRC is right.

    Raises:
        DatasetError: naming ``label`` (the zip's name) and the offending member.
    """
    label = label or path.name
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{label} is not a zip file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members_by_name(archive.infolist(), label)
            missing = [name for name in REQUIRED_MEMBERS if name not in members]
            if missing:
                raise DatasetError(f"{label} holds no {', '.join(missing)} (members: {sorted(members)})")
            total = 0
            for info in archive.infolist():
                _check_member_readable(info, label)
                _check_member_size(info, max_member_bytes, label)
                total += info.file_size
            for info in archive.infolist():
                _check_member_crc(archive, info, label)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, zlib.error) as error:
        raise DatasetError(f"{label} is not a readable zip: {error}") from error
    return ZipSummary(members=members, uncompressed_bytes=total)


def _check_member_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> None:
    """Inflate one member (bounded by its checked size) so zipfile verifies its CRC."""
    try:
        with archive.open(info) as stream:
            while stream.read(1024 * 1024):
                pass
    except (zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, NotImplementedError) as error:
        raise DatasetError(f"{label}: member {info.filename} is corrupt or unreadable: {error}") from error


def _check_member_readable(info: zipfile.ZipInfo, label: str) -> None:
    if info.flag_bits & 0x1:
        raise DatasetError(f"{label}: member {info.filename} is encrypted: the pipeline reads unencrypted zips only")
    if info.compress_type not in READABLE_COMPRESSION:
        raise DatasetError(
            f"{label}: member {info.filename} uses compression method {info.compress_type}, which Python's "
            "zipfile cannot read (stored, deflate, bzip2 and lzma can be)"
        )


def _members_by_name(infos: list[zipfile.ZipInfo], label: str = "the zip") -> dict[str, str]:
    """File name → path in the zip, for the members the pipeline reads.

    Raises:
        DatasetError: a member the pipeline reads is there twice (the same path, or at
            two depths): which one is meant cannot be told, so both are named.
    """
    members: dict[str, str] = {}
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename.rsplit("/", 1)[-1]
        if name in members and name in COLUMNS:
            raise DatasetError(
                f"{label} holds {name} twice ({members[name]} and {info.filename}): keep one, "
                "so it is clear which is the dataset"
            )
        members.setdefault(name, info.filename)
    return members


def _check_member_size(info: zipfile.ZipInfo, max_member_bytes: int, label: str) -> None:
    if info.file_size > max_member_bytes:
        raise DatasetError(
            f"{label}: member {info.filename} inflates to {info.file_size} bytes, over the limit of "
            f"{max_member_bytes} (MAX_MEMBER_BYTES)"
        )
    if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
        raise DatasetError(
            f"{label}: member {info.filename} is compressed {info.file_size // info.compress_size}:1, "
            f"more than {MAX_COMPRESSION_RATIO}:1 (zip bomb?)"
        )


def open_member(archive: zipfile.ZipFile, name: str, max_member_bytes: int) -> IO[bytes]:
    """Open ``name`` (e.g. ``movies.csv``) inside the zip's top folder, size-checked."""
    members = _members_by_name(archive.infolist(), str(archive.filename))
    if name not in members:
        raise DatasetError(f"{archive.filename}: no member {name}")
    info = archive.getinfo(members[name])
    _check_member_readable(info, str(archive.filename))
    _check_member_size(info, max_member_bytes, str(archive.filename))
    return archive.open(info)


def member_size(zip_path: Path, name: str) -> int:
    """The uncompressed size of member ``name`` (0 when absent)."""
    with zipfile.ZipFile(zip_path) as archive:
        member = _members_by_name(archive.infolist()).get(name)
        return archive.getinfo(member).file_size if member else 0


def _read_csv(stream: IO[bytes], name: str, **options: object) -> pd.DataFrame | Iterator[pd.DataFrame]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        return pd.read_csv(text, skip_blank_lines=True, **options)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DatasetError(f"{name}: cannot be parsed as CSV: {error}") from error


def _require_columns(frame: pd.DataFrame, name: str) -> None:
    missing = [column for column in COLUMNS[name] if column not in frame.columns]
    if missing:
        raise DatasetError(
            f"{name}: missing column(s) {', '.join(missing)} (found {', '.join(map(str, frame.columns))})"
        )


def _rows(mask: pd.Series, offset: int = 0) -> str:
    rows = (np.flatnonzero(mask.to_numpy()) + offset + 1)[:MAX_REPORTED_ROWS]
    return ", ".join(map(str, rows))


def _not_id(numbers: pd.Series) -> pd.Series:
    return numbers.isna() | (numbers <= 0) | (numbers % 1 != 0) | (numbers >= 2**32)


def _positive_ids(values: pd.Series, name: str, column: str, offset: int = 0) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = _not_id(numbers)
    if bad.any():
        raise DatasetError(f"{name}: {column} is not a positive 32-bit integer at row(s) {_rows(bad, offset)}")
    return numbers.astype("int64")


# --- field rules -------------------------------------------------------------------


def parse_genres(genres: str) -> list[str]:
    """``"Adventure|Comedy"`` → ``["Adventure", "Comedy"]``; ``(no genres listed)`` → ``[]``."""
    if not isinstance(genres, str) or genres.strip() in ("", NO_GENRES):
        return []
    return [genre.strip() for genre in genres.split("|") if genre.strip()]


def extract_year(title: str) -> int | None:
    """The trailing ``(YYYY)`` of a title as an int, else None."""
    match = _YEAR.search(title)
    return int(match.group(1)) if match else None


def movie_text(title: str, genres: list[str]) -> str:
    """The text that is embedded for a movie: its title and its genres."""
    return f"{title}. Genres: {', '.join(genres)}" if genres else title


def _optional_id(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


# --- movies ------------------------------------------------------------------------


def read_movies(zip_path: Path, max_member_bytes: int) -> pd.DataFrame:
    """The movies of the zip with the contract's fields, in movies.csv order.

    Columns: ``movieId`` (int), ``title``, ``genres`` (list), ``year`` (int or None),
    ``imdbId`` and ``tmdbId`` (str or None, from links.csv when present), ``text``.

    Raises:
        DatasetError: missing columns, a bad or duplicate movieId, an empty title.
    """
    with zipfile.ZipFile(zip_path) as archive:
        with open_member(archive, "movies.csv", max_member_bytes) as stream:
            movies = _read_csv(stream, "movies.csv", dtype=str, keep_default_na=False)
        links = None
        if "links.csv" in _members_by_name(archive.infolist()):
            with open_member(archive, "links.csv", max_member_bytes) as stream:
                links = _read_csv(stream, "links.csv", dtype=str, keep_default_na=False)
    assert isinstance(movies, pd.DataFrame)
    _require_columns(movies, "movies.csv")
    movies = movies.loc[:, list(COLUMNS["movies.csv"])].copy()
    movies["movieId"] = _positive_ids(movies["movieId"], "movies.csv", "movieId")
    duplicated = movies["movieId"].duplicated(keep=False)
    if duplicated.any():
        ids = sorted(set(movies.loc[duplicated, "movieId"].tolist()))[:MAX_REPORTED_ROWS]
        raise DatasetError(f"movies.csv: duplicate movieId(s) {ids} at row(s) {_rows(duplicated)}")
    movies["title"] = movies["title"].str.strip()
    empty = movies["title"] == ""
    if empty.any():
        raise DatasetError(f"movies.csv: empty title at row(s) {_rows(empty)}")

    movies["genres"] = [parse_genres(g) for g in movies["genres"]]
    movies["year"] = pd.Series([extract_year(t) for t in movies["title"]], index=movies.index, dtype=object)
    movies["text"] = [movie_text(t, g) for t, g in zip(movies["title"], movies["genres"], strict=True)]
    movies["imdbId"] = None
    movies["tmdbId"] = None
    if links is not None:
        assert isinstance(links, pd.DataFrame)
        _require_columns(links, "links.csv")
        links = links.loc[:, list(COLUMNS["links.csv"])].copy()
        links["movieId"] = _positive_ids(links["movieId"], "links.csv", "movieId")
        links = links.drop_duplicates("movieId", keep="first").set_index("movieId")
        for column in ("imdbId", "tmdbId"):
            mapped = movies["movieId"].map(links[column])
            movies[column] = pd.Series([_optional_id(v) for v in mapped], index=movies.index, dtype=object)
    return movies.reset_index(drop=True)


# --- ratings -----------------------------------------------------------------------


@dataclass
class RatingsChunk:
    """One chunk of valid ratings, plus what was rejected and why."""

    first_row: int
    frame: pd.DataFrame
    rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)


def _validate_ratings(frame: pd.DataFrame, first_row: int) -> RatingsChunk:
    numbers = {column: pd.to_numeric(frame[column], errors="coerce") for column in COLUMNS["ratings.csv"]}
    tomorrow = time.time() + 86_400
    reasons = {
        "userId is not a positive 32-bit integer": _not_id(numbers["userId"]),
        "movieId is not a positive 32-bit integer": _not_id(numbers["movieId"]),
        "rating is not 0.5..5.0 in steps of 0.5": numbers["rating"].isna()
        | (numbers["rating"] < 0.5)
        | (numbers["rating"] > 5.0)
        | ((numbers["rating"] * 2) % 1 != 0),
        "timestamp is not epoch seconds": numbers["timestamp"].isna()
        | (numbers["timestamp"] < 0)
        | (numbers["timestamp"] % 1 != 0)
        | (numbers["timestamp"] >= 2**32),
        "timestamp is in the future": numbers["timestamp"] > tomorrow,
    }
    bad = pd.Series(False, index=frame.index)
    examples: list[str] = []
    for reason, mask in reasons.items():
        if mask.any():
            positions = np.flatnonzero(mask.to_numpy())[:MAX_REPORTED_ROWS]
            examples.extend(f"ratings.csv row {first_row + p}: {reason}" for p in positions)
            bad |= mask
    good = ~bad
    clean = pd.DataFrame(
        {
            "userId": numbers["userId"][good].astype("int64"),
            "movieId": numbers["movieId"][good].astype("int64"),
            "rating": numbers["rating"][good].astype("float64"),
            "timestamp": numbers["timestamp"][good].astype("int64"),
        }
    )
    return RatingsChunk(first_row, clean, int(bad.sum()), examples[:MAX_REPORTED_ROWS])


def iter_ratings(zip_path: Path, chunk_rows: int, max_member_bytes: int) -> Iterator[RatingsChunk]:
    """Stream ratings.csv in chunks of ``chunk_rows`` rows, never the whole file in memory.

    Bad rows are rejected, counted and described (file and row) in each chunk; the
    caller decides when they become fatal.

    Raises:
        DatasetError: the file cannot be parsed or lacks a column.
    """
    with zipfile.ZipFile(zip_path) as archive, open_member(archive, "ratings.csv", max_member_bytes) as stream:
        reader = _read_csv(stream, "ratings.csv", chunksize=chunk_rows)
        first_row = 1
        try:
            for frame in reader:
                _require_columns(frame, "ratings.csv")
                yield _validate_ratings(frame, first_row)
                first_row += len(frame)
        except (pd.errors.ParserError, UnicodeDecodeError) as error:
            raise DatasetError(f"ratings.csv: cannot be parsed as CSV near row {first_row}: {error}") from error


# One rating as the pipeline keeps it between parsing and loading (see ratings_parts).
RATING_RECORD = np.dtype([("timestamp", "<u4"), ("userId", "<u4"), ("movieId", "<u4"), ("rating", "<f4")])


def pack_part(records: np.ndarray) -> bytes:
    """A ratings part (:data:`RATING_RECORD` rows) as the bytes of its ``.npy`` file."""
    return to_npy(records.astype(RATING_RECORD, copy=False))


def unpack_part(data: bytes, label: str) -> np.ndarray:
    """The :data:`RATING_RECORD` rows of a ratings part; a damaged one raises PartDamaged naming ``label``."""
    records = from_npy(data, label, PartDamaged)
    if records.dtype != RATING_RECORD or records.ndim != 1:
        raise PartDamaged(f"{label} is not a ratings part ({records.dtype}, shape {records.shape})")
    return records


def rating_records(ratings: pd.DataFrame) -> np.ndarray:
    """Validated ratings (userId, movieId, rating, timestamp) as :data:`RATING_RECORD` rows."""
    records = np.empty(len(ratings), dtype=RATING_RECORD)
    for name in RATING_RECORD.names or ():
        records[name] = ratings[name].to_numpy()
    return records


@dataclass
class RatingsCounts:
    """What splitting ratings.csv found, updated as it goes."""

    rows: int = 0
    rejected: int = 0
    duplicates: int = 0
    skipped_unknown_movie: int = 0
    records: int = 0
    parts: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    duplicate_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RatingsLimits:
    """How ratings.csv is cut into parts, and how much bad data is tolerated."""

    part_rows: int
    max_member_bytes: int
    max_rejected_rows: int = 0
    max_unknown_fraction: float = 0.01
    read_rows: int = 100_000


def rating_keys(user_ids: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """One uint64 per (userId, movieId): a user rates a movie once."""
    return (user_ids.astype(np.uint64) << np.uint64(32)) | movie_ids.astype(np.uint64)


def prepare_ratings(
    zip_path: Path,
    known_movie_ids: np.ndarray,
    limits: RatingsLimits,
    write_part: Callable[[int, np.ndarray], None],
    on_read: Callable[[int], None] | None = None,
) -> RatingsCounts:
    """Cut ratings.csv into parts of ``limits.part_rows`` valid ratings of known movies (:data:`RATING_RECORD`).

    ``write_part(index, records)`` receives each part in file order. A user rates a movie
    once: where ratings.csv rates one movie by one user several times, the newest rating
    is kept (the later row on a tie), the others are counted as duplicates and named by
    row, and the parts are written again without them (a second and third pass over the
    file, only then). Memory: 8 bytes per rating for the duplicate check, plus one part.

    Raises:
        DatasetError: more bad rows than ``limits.max_rejected_rows`` or more ratings of
            unknown movies than ``limits.max_unknown_fraction`` (naming rows), or the
            file cannot be parsed or lacks a column.
    """
    counts = RatingsCounts()
    keys: list[np.ndarray] = []
    _split_ratings(zip_path, known_movie_ids, limits, counts, write_part, on_read, keys=keys)
    check_unknown_movies(counts, limits.max_unknown_fraction)
    repeated = _repeated(keys)
    del keys
    if not len(repeated):
        return counts
    losers, examples = _older_duplicates(zip_path, known_movie_ids, limits, repeated)
    counts = RatingsCounts(duplicate_examples=examples)
    _split_ratings(zip_path, known_movie_ids, limits, counts, write_part, on_read, drop_rows=losers)
    return counts


def _repeated(keys: list[np.ndarray]) -> np.ndarray:
    """The keys that occur more than once, sorted."""
    if not keys:
        return np.empty(0, dtype=np.uint64)
    joined = np.concatenate(keys)
    joined.sort()
    return np.unique(joined[1:][joined[1:] == joined[:-1]])


def _valid_known(
    zip_path: Path, known_movie_ids: np.ndarray, limits: RatingsLimits, counts: RatingsCounts
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(records, their 1-based data rows) of the valid ratings of known movies, a read chunk at a time."""
    known_movie_ids = np.sort(known_movie_ids)
    for chunk in iter_ratings(zip_path, limits.read_rows, limits.max_member_bytes):
        counts.rejected += chunk.rejected
        counts.rejected_examples.extend(chunk.rejected_examples[: MAX_REPORTED_ROWS - len(counts.rejected_examples)])
        if counts.rejected > limits.max_rejected_rows:
            raise DatasetError(
                f"{counts.rejected} bad row(s) in ratings.csv, more than INTERACTIONS_MAX_REJECTED_ROWS="
                f"{limits.max_rejected_rows}: " + "; ".join(counts.rejected_examples)
            )
        records = rating_records(chunk.frame)
        rows = chunk.frame.index.to_numpy() + 1
        known = np.isin(records["movieId"], known_movie_ids)
        counts.rows += len(chunk.frame) + chunk.rejected
        counts.skipped_unknown_movie += int((~known).sum())
        yield records[known], rows[known]


def _split_ratings(
    zip_path: Path,
    known_movie_ids: np.ndarray,
    limits: RatingsLimits,
    counts: RatingsCounts,
    write_part: Callable[[int, np.ndarray], None],
    on_read: Callable[[int], None] | None,
    keys: list[np.ndarray] | None = None,
    drop_rows: np.ndarray | None = None,
) -> None:
    pending: list[np.ndarray] = []
    buffered = 0
    for records, rows in _valid_known(zip_path, known_movie_ids, limits, counts):
        if drop_rows is not None:
            kept = ~np.isin(rows, drop_rows)
            counts.duplicates += int((~kept).sum())
            records = records[kept]
        if keys is not None:
            keys.append(rating_keys(records["userId"], records["movieId"]))
        counts.records += len(records)
        pending.append(records)
        buffered += len(records)
        while buffered >= limits.part_rows:
            joined = np.concatenate(pending)
            write_part(counts.parts, joined[: limits.part_rows])
            counts.parts += 1
            pending, buffered = [joined[limits.part_rows :]], len(joined) - limits.part_rows
        if on_read:
            on_read(counts.rows)
    if buffered:
        write_part(counts.parts, np.concatenate(pending))
        counts.parts += 1


def _older_duplicates(
    zip_path: Path, known_movie_ids: np.ndarray, limits: RatingsLimits, repeated: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """The rows of every rating that a newer rating of the same user and movie replaces, and examples."""
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for records, rows in _valid_known(zip_path, known_movie_ids, limits, RatingsCounts()):
        keys = rating_keys(records["userId"], records["movieId"])
        hit = np.isin(keys, repeated)
        found.append((keys[hit], records["timestamp"][hit].astype(np.int64), rows[hit]))
    keys = np.concatenate([f[0] for f in found])
    timestamps = np.concatenate([f[1] for f in found])
    rows = np.concatenate([f[2] for f in found])
    order = np.lexsort((rows, timestamps, keys))  # per key: oldest first, the later row last on a tie
    keys, rows = keys[order], rows[order]
    newest = np.append(keys[1:] != keys[:-1], True)
    kept_row = {int(k): int(r) for k, r in zip(keys[newest], rows[newest], strict=True)}
    losers = rows[~newest]
    examples = [
        f"ratings.csv row {int(r)}: userId {int(k) >> 32} rated movieId {int(k) & 0xFFFFFFFF} again at row "
        f"{kept_row[int(k)]}; the newest rating is kept"
        for k, r in zip(keys[~newest][:MAX_REPORTED_ROWS], losers[:MAX_REPORTED_ROWS], strict=True)
    ]
    return np.sort(losers), examples


def check_unknown_movies(counts: RatingsCounts, max_fraction: float) -> None:
    """Raise when more than ``max_fraction`` of the ratings name a movie missing from movies.csv."""
    fraction = counts.skipped_unknown_movie / max(counts.rows, 1)
    if fraction > max_fraction:
        raise DatasetError(
            f"{counts.skipped_unknown_movie} of {counts.rows} ratings in ratings.csv name a movieId missing "
            f"from movies.csv ({fraction:.2%}), more than INTERACTIONS_MAX_UNKNOWN_FRACTION={max_fraction}"
        )
