"""Build small MovieLens-shaped zips for tests, or slices of the real one."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"American President, The (1995)",Comedy|Drama|Romance
3,"Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1964)",Comedy|War
4,Ready Player One,(no genres listed)
"""
LINKS = """movieId,imdbId,tmdbId
1,0114709,862
2,0112346,9087
3,0057012,935
4,1677720,
"""
RATINGS = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,3,5.0,964981247
2,2,0.5,1445714835
2,1,3.5,1445714885
"""


def write_zip(path: Path, members: dict[str, str | bytes], top: str = "ml-test") -> Path:
    """A zip with ``members`` under one top folder, like GroupLens publishes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(f"{top}/{name}" if top else name, content)
    return path


def small_zip(path: Path, **overrides: str | bytes | None) -> Path:
    """The four-movie dataset above; ``overrides`` replaces members (None removes one)."""
    members: dict[str, str | bytes | None] = {"movies.csv": MOVIES, "links.csv": LINKS, "ratings.csv": RATINGS}
    members.update({name.replace("_csv", ".csv"): value for name, value in overrides.items()})
    return write_zip(path, {name: value for name, value in members.items() if value is not None})


def real_slice(
    source: Path, destination: Path, movies: int, max_ratings: int, extra_members: tuple[str, ...] = ()
) -> Path:
    """The first ``movies`` movies of a real zip with up to ``max_ratings`` of their ratings.

    ``extra_members`` (e.g. ``tags.csv``) are copied whole.
    """
    with zipfile.ZipFile(source) as archive:
        top = archive.namelist()[0].split("/")[0]
        frames = {
            name: pd.read_csv(archive.open(f"{top}/{name}"), dtype=str, keep_default_na=False)
            for name in ("movies.csv", "links.csv", "ratings.csv")
        }
        extras = {name: archive.read(f"{top}/{name}") for name in extra_members}
    kept = frames["movies.csv"].head(movies)
    ids = set(kept["movieId"])
    members = {
        "movies.csv": kept,
        "links.csv": frames["links.csv"][frames["links.csv"]["movieId"].isin(ids)],
        "ratings.csv": frames["ratings.csv"][frames["ratings.csv"]["movieId"].isin(ids)].head(max_ratings),
    }
    texts: dict[str, str | bytes] = dict(extras)
    for name, frame in members.items():
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        texts[name] = buffer.getvalue()
    return write_zip(destination, texts, top=top)


def patch_member(path: Path, member: str, *, flag_bits: int | None = None, method: int | None = None) -> Path:
    """Rewrite a member's general-purpose flags or compression method in both its headers.

    Makes zips Python cannot write itself: an "encrypted" member (flag bit 0), or one
    compressed with a method zipfile cannot read (e.g. 99, AES).
    """
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(member).header_offset
    central = data.index(b"PK\x01\x02")  # the first central directory entry
    patched = 0
    while central != -1:
        name_length = int.from_bytes(data[central + 28 : central + 30], "little")
        if data[central + 46 : central + 46 + name_length].decode() == member:
            for offset, value in ((8, flag_bits), (10, method)):
                if value is not None:
                    data[central + offset : central + offset + 2] = value.to_bytes(2, "little")
            patched += 1
        central = data.find(b"PK\x01\x02", central + 4)
    for offset, value in ((6, flag_bits), (8, method)):
        if value is not None:
            data[local + offset : local + offset + 2] = value.to_bytes(2, "little")
    assert patched == 1, f"{member} not found once in the central directory"
    path.write_bytes(bytes(data))
    return path
