"""MovieLens-100K with TMDB posters and plot overviews (the `ml100k-posters` folder layout).

src/ratings.csv   user_id,movie_id,rating,unix_timestamp
src/items.csv     movie_id,title,<19 genre flags>,year,overview,original_language,runtime,vote_average,...
src/posters/{movie_id}.jpg
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from clip4rec.data.dataset import Dataset
from clip4rec.data.importers import register
from clip4rec.data.importers.common import Importing, check_options, clean_text, join_text, \
    require_columns

FORMAT = "ml100k-posters"
# The 19 flag columns of items.csv and the genre names MovieLens itself uses ("unknown" is left out of
# the genre text: it says nothing about the movie).
GENRES = {"genre_unknown": None, "Action": "Action", "Adventure": "Adventure", "Animation": "Animation",
          "Children": "Children's", "Comedy": "Comedy", "Crime": "Crime", "Documentary": "Documentary",
          "Drama": "Drama", "Fantasy": "Fantasy", "FilmNoir": "Film-Noir", "Horror": "Horror",
          "Musical": "Musical", "Mystery": "Mystery", "Romance": "Romance", "SciFi": "Sci-Fi",
          "Thriller": "Thriller", "War": "War", "Western": "Western"}
EXTRA_COLUMNS = ("original_language", "runtime", "vote_average", "vote_count")


@register(FORMAT)
def import_ml100k(src: str, **options: Any) -> Dataset:
    """Items get text "title (year). Genres: a, b. overview"; the poster is the image.

    The MovieLens title already ends in "(year)", so the year is only appended when it is missing.
    Duplicate movie ids (55 upstream) are merged by the common rule: first row wins, gaps filled from later rows.
    Ratings ties (same second) keep ratings.csv row order, as the dataset README asks.
    """
    check_options(FORMAT, options, ())
    root = Path(src)
    job = Importing(FORMAT, root, {})

    raw = job.read_csv(root / "items.csv", "items", dtype={"movie_id": str})
    require_columns(raw, ["movie_id", "title", "year", "overview", *GENRES], root / "items.csv")
    raw = job.merge_items(raw, "movie_id")
    title = clean_text(raw["title"])
    year = pd.to_numeric(raw["year"], errors="coerce").astype("Int64")
    overview = clean_text(raw["overview"])
    flags = raw[list(GENRES)].fillna(0).astype(bool)
    genres = flags.apply(lambda row: ", ".join(GENRES[c] for c in GENRES if row[c] and GENRES[c]), axis=1)
    text = [join_text([_title_with_year(t, y), f"Genres: {g}" if g else None, o])
            for t, y, g, o in zip(title, year, genres, overview)]
    ids = raw["movie_id"]
    items = pd.DataFrame({
        "item_id": ids,
        "title": title,
        "text": text,
        "image": [os.path.abspath(root / "posters" / f"{i}.jpg") if i else None for i in ids],
        "year": year,
        "genres": genres.where(genres != "", None),
        "overview": overview,
        **{c: raw[c] for c in EXTRA_COLUMNS if c in raw.columns},
    })
    no_overview = items["overview"].isna()
    job.report.add("items_without_overview", no_overview.sum(), "text is title and genres only",
                   items.loc[no_overview, "item_id"].tolist())

    ratings = job.read_csv(root / "ratings.csv", "ratings", dtype={"user_id": str, "movie_id": str})
    require_columns(ratings, ["user_id", "movie_id", "unix_timestamp"], root / "ratings.csv")
    inter = pd.DataFrame({"user_id": ratings["user_id"], "item_id": ratings["movie_id"],
                          "timestamp": ratings["unix_timestamp"]})
    if "rating" in ratings.columns:
        inter["rating"] = pd.to_numeric(ratings["rating"], errors="coerce")
    return job.finish(items, inter, images=True, synthetic_time=False)


def _title_with_year(title: str | None, year: Any) -> str | None:
    if title is None or pd.isna(year) or f"({year})" in title:
        return title
    return f"{title} ({year})"
