"""The dataset rules: zip checks, movies, links, ratings, and their errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mlrec_luigi import movielens
from mlrec_luigi.movielens import DatasetError, extract_year, movie_text, parse_genres
from tests.support.processes import MOVIELENS_ZIP
from tests.support.zips import small_zip, write_zip

LIMIT = 10**9


@pytest.mark.parametrize(
    ("title", "year"),
    [
        ("Toy Story (1995)", 1995),
        ("American President, The (1995)", 1995),
        ("Babylon 5", None),
        ("Hyena Road", None),
        ("Fawlty Towers (1975-1979)", None),
        ("Black Mirror (2011) ", 2011),
        ("1984 (1956)", 1956),
        ("2001: A Space Odyssey (1968)", 1968),
    ],
)
def test_extract_year(title: str, year: int | None) -> None:
    assert extract_year(title) == year


def test_parse_genres() -> None:
    assert parse_genres("Adventure|Animation|Children") == ["Adventure", "Animation", "Children"]
    assert parse_genres("(no genres listed)") == []
    assert parse_genres("") == []
    assert parse_genres("Drama") == ["Drama"]


def test_movie_text_holds_title_and_genres() -> None:
    assert movie_text("Toy Story (1995)", ["Adventure", "Comedy"]) == "Toy Story (1995). Genres: Adventure, Comedy"
    assert movie_text("Hyena Road", []) == "Hyena Road"


def test_read_movies_applies_the_contract_rules(tmp_path: Path) -> None:
    movies = movielens.read_movies(small_zip(tmp_path / "m.zip"), LIMIT)
    assert movies["movieId"].tolist() == [1, 2, 3, 4]
    assert movies.loc[1, "title"] == "American President, The (1995)"
    assert movies.loc[2, "title"].startswith("Dr. Strangelove or: How I Learned")
    assert movies.loc[0, "genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert movies.loc[3, "genres"] == []
    assert movies["year"].tolist() == [1995, 1995, 1964, None]
    assert movies.loc[0, "imdbId"] == "0114709" and movies.loc[0, "tmdbId"] == "862"
    assert movies.loc[3, "tmdbId"] is None


def test_read_movies_on_the_real_zip() -> None:
    movies = movielens.read_movies(MOVIELENS_ZIP, LIMIT)
    assert len(movies) == 9742
    assert movies["imdbId"].map(lambda v: isinstance(v, str) and len(v) == 7).all()
    assert movies["tmdbId"].isna().sum() == 8
    assert all(type(y) is int for y in movies["year"] if y is not None)


def test_movies_without_links_have_null_ids(tmp_path: Path) -> None:
    movies = movielens.read_movies(small_zip(tmp_path / "m.zip", links_csv=None), LIMIT)
    assert movies["imdbId"].isna().all()


def test_duplicate_movie_ids_name_file_and_rows(tmp_path: Path) -> None:
    bad = "movieId,title,genres\n1,A (1990),Drama\n2,B (1991),Drama\n1,C (1992),Drama\n"
    with pytest.raises(DatasetError, match=r"movies\.csv: duplicate movieId\(s\) \[1\] at row\(s\) 1, 3"):
        movielens.read_movies(small_zip(tmp_path / "m.zip", movies_csv=bad), LIMIT)


def test_missing_column_is_named(tmp_path: Path) -> None:
    bad = "movieId,name\n1,A\n"
    with pytest.raises(DatasetError, match=r"movies\.csv: missing column\(s\) title, genres"):
        movielens.read_movies(small_zip(tmp_path / "m.zip", movies_csv=bad), LIMIT)


def test_non_numeric_movie_id_names_the_row(tmp_path: Path) -> None:
    bad = "movieId,title,genres\n1,A (1990),Drama\nx2,B,Drama\n"
    with pytest.raises(DatasetError, match=r"movies\.csv: movieId is not a positive 32-bit integer at row\(s\) 2"):
        movielens.read_movies(small_zip(tmp_path / "m.zip", movies_csv=bad), LIMIT)


def test_ratings_stream_in_chunks_and_reject_bad_rows(tmp_path: Path) -> None:
    ratings = (
        "\ufeffuserId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "\n"
        "1,2,7.0,964982703\n"
        "x,3,3.0,964982703\n"
        "2,1,-1,964982703\n"
        "2,2,4.5,964982703\n"
        "2,3,4.25,964982703\n"
    )
    chunks = list(movielens.iter_ratings(small_zip(tmp_path / "m.zip", ratings_csv=ratings), 3, LIMIT))
    assert [c.first_row for c in chunks] == [1, 4]
    valid = [row for c in chunks for row in c.frame.itertuples(index=False)]
    assert [(r.userId, r.movieId, r.rating) for r in valid] == [(1, 1, 4.0), (2, 2, 4.5)]
    assert sum(c.rejected for c in chunks) == 4
    examples = [e for c in chunks for e in c.rejected_examples]
    assert "ratings.csv row 2: rating is not 0.5..5.0 in steps of 0.5" in examples
    assert "ratings.csv row 3: userId is not a positive 32-bit integer" in examples
    assert "ratings.csv row 4: rating is not 0.5..5.0 in steps of 0.5" in examples
    assert "ratings.csv row 6: rating is not 0.5..5.0 in steps of 0.5" in examples


def test_ratings_of_the_real_zip_are_all_valid() -> None:
    chunks = list(movielens.iter_ratings(MOVIELENS_ZIP, 30_000, LIMIT))
    assert sum(len(c.frame) for c in chunks) == 100836
    assert sum(c.rejected for c in chunks) == 0
    assert chunks[0].frame.dtypes.to_dict() == {
        "userId": "int64",
        "movieId": "int64",
        "rating": "float64",
        "timestamp": "int64",
    }


def test_inspect_zip_accepts_the_real_zip() -> None:
    summary = movielens.inspect_zip(MOVIELENS_ZIP, LIMIT)
    assert summary.members["ratings.csv"] == "ml-latest-small/ratings.csv"
    assert summary.uncompressed_bytes == 3303135


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.zip"
    path.write_text("<html>Not found</html>")
    with pytest.raises(DatasetError, match=r"fake\.zip is not a zip file"):
        movielens.inspect_zip(path, LIMIT)


def test_truncated_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.zip"
    path.write_bytes(MOVIELENS_ZIP.read_bytes()[:500_000])
    with pytest.raises(DatasetError, match=r"cut\.zip is not a (readable )?zip"):
        movielens.inspect_zip(path, LIMIT)


def test_zip_without_movies_is_refused(tmp_path: Path) -> None:
    path = small_zip(tmp_path / "m.zip", movies_csv=None)
    with pytest.raises(DatasetError, match=r"m\.zip holds no movies\.csv"):
        movielens.inspect_zip(path, LIMIT)


def test_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bomb.zip", {"movies.csv": "a" * 50_000_000, "ratings.csv": "x"})
    with pytest.raises(DatasetError, match=r"movies\.csv is compressed \d+:1"):
        movielens.inspect_zip(path, LIMIT)
    with pytest.raises(DatasetError, match=r"over the limit of 1000 \(MAX_MEMBER_BYTES\)"):
        movielens.inspect_zip(MOVIELENS_ZIP, 1000)


def test_corrupt_member_is_refused(tmp_path: Path) -> None:
    path = small_zip(tmp_path / "m.zip")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("ml-test/ratings.csv")
    offset = info.header_offset + 30 + len(info.filename) + 5
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"member ml-test/ratings\.csv is corrupt"):
        movielens.inspect_zip(path, LIMIT)
