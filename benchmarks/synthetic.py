"""MovieLens-shaped synthetic data at ml-32m scale, or any fraction of it.

    .venv/bin/python benchmarks/synthetic.py --fraction 0.1 --out var/bench/ml-synth-0.1.zip

The same files, columns and quirks as GroupLens zips: one top folder with movies.csv,
links.csv, ratings.csv, tags.csv and README.txt; titles with commas, quotes and a trailing
``(YYYY)`` (or none); ``(no genres listed)``; zero-padded 7-digit imdbIds; blank tmdbIds;
ratings 0.5..5.0 in steps of 0.5; epoch-second timestamps; movies without ratings.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ML32M_MOVIES = 87_585
ML32M_RATINGS = 32_000_204
ML32M_USERS = 200_948
GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
WORDS = [
    "Love",
    "Night",
    "Return",
    "Last",
    "City",
    "Dark",
    "Story",
    "King",
    "Girl",
    "Man",
    "War",
    "Dream",
    "Blue",
    "House",
    "Road",
    "Time",
    "Secret",
    "Life",
    "World",
    "Star",
]
RATING_ROWS_PER_BLOCK = 2_000_000


def movies_frame(count: int, rng: np.random.Generator) -> pd.DataFrame:
    ids = np.sort(rng.choice(np.arange(1, count * 3 + 1), size=count, replace=False))
    words = np.array(WORDS)[rng.integers(0, len(WORDS), size=(count, 3))]
    years = rng.integers(1902, 2024, size=count)
    titles = []
    for i, (a, b, c) in enumerate(words):
        title = f"{a} {b} {c}"
        if i % 17 == 0:
            title = f"{b}, The"  # the GroupLens "Title, The" form: a comma inside the field
        if i % 23 == 0:
            title = f'"{a}" {c}'  # quotes inside the field
        titles.append(title if i % 101 == 0 else f"{title} ({years[i]})")
    genre_counts = rng.integers(1, 4, size=count)
    genres = ["|".join(rng.choice(GENRES, size=n, replace=False)) for n in genre_counts]
    genres = [g if i % 97 else "(no genres listed)" for i, g in enumerate(genres)]
    return pd.DataFrame({"movieId": ids, "title": titles, "genres": genres})


def links_frame(movies: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    imdb = [f"{n:07d}" for n in rng.integers(1, 9_999_999, size=len(movies))]
    tmdb = [str(n) if i % 50 else "" for i, n in enumerate(rng.integers(1, 999_999, size=len(movies)))]
    return pd.DataFrame({"movieId": movies["movieId"], "imdbId": imdb, "tmdbId": tmdb})


def ratings_blocks(movie_ids: np.ndarray, count: int, users: int, rng: np.random.Generator):
    """Ratings in blocks (never all in memory), sorted by user like GroupLens; 2% of movies get none."""
    rated = movie_ids[: max(1, int(len(movie_ids) * 0.98))]
    popularity = 1.0 / np.arange(1, len(rated) + 1) ** 0.8
    popularity /= popularity.sum()
    produced, user = 0, 1
    while produced < count:
        size = min(RATING_ROWS_PER_BLOCK, count - produced)
        per_user = max(1, size // max(1, min(users, size)))
        user_ids = np.repeat(np.arange(user, user + size // per_user + 1), per_user)[:size]
        user = int(user_ids[-1]) + 1 if user_ids[-1] < users else 1
        frame = pd.DataFrame(
            {
                "userId": user_ids,
                "movieId": rng.choice(rated, size=size, p=popularity),
                "rating": rng.integers(1, 11, size=size) / 2,
                "timestamp": rng.integers(789_652_009, 1_697_164_000, size=size),
            }
        )
        yield frame.drop_duplicates(["userId", "movieId"])
        produced += size


def write_zip(path: Path, fraction: float, ratings: int | None = None, seed: int = 32) -> dict[str, int]:
    """Write a synthetic zip with ``fraction`` of ml-32m's movies and ratings (or ``ratings``)."""
    rng = np.random.default_rng(seed)
    movies = movies_frame(max(1, round(ML32M_MOVIES * fraction)), rng)
    links = links_frame(movies, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    top = path.stem
    ratings_written = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(f"{top}/movies.csv", movies.to_csv(index=False))
        archive.writestr(f"{top}/links.csv", links.to_csv(index=False))
        with archive.open(f"{top}/ratings.csv", "w", force_zip64=True) as member:
            text = io.TextIOWrapper(member, encoding="utf-8", newline="")
            text.write("userId,movieId,rating,timestamp\n")
            count = ratings if ratings is not None else round(ML32M_RATINGS * fraction)
            for block in ratings_blocks(movies["movieId"].to_numpy(), count, ML32M_USERS, rng):
                block.to_csv(text, index=False, header=False)
                ratings_written += len(block)
            text.flush()
            text.detach()
        archive.writestr(f"{top}/tags.csv", 'userId,movieId,tag,timestamp\n1,1,"funny, smart",1139045764\n')
        archive.writestr(f"{top}/README.txt", "Synthetic MovieLens-shaped data for mlrec-luigi benchmarks.\n")
    return {"movies": len(movies), "ratings": ratings_written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.01, help="of ml-32m (1.0 = 87,585 movies, 32M ratings)")
    parser.add_argument("--ratings", type=int, help="exact number of ratings instead of the fraction's")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    print(write_zip(options.out, options.fraction, options.ratings))


if __name__ == "__main__":
    main()
