"""A user's own catalog + interaction log, with column names given as options.

`src` is the data folder; `items`, `interactions` and `images` are paths relative to it (absolute paths
work too). Without `items`/`interactions`, the folder's items.{csv,parquet,jsonl} and
interactions.{csv,parquet} are used. `src` may also be the catalog file itself (then its folder is the base).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from clip4rec.data.dataset import Dataset, DatasetError
from clip4rec.data.importers import register
from clip4rec.data.importers.common import Importing, absolute_paths, check_options, clean_text, find_images, \
    join_text, parse_times, require_columns

FORMAT = "generic"
# option -> its default (shown by `clip4rec import --help`; the docstring below says the same)
OPTIONS = {
    "items": "items.csv|.parquet|.jsonl in SRC",
    "interactions": "interactions.csv|.parquet in SRC",
    "images": "none; a folder of {item_id}.jpg|.jpeg|.png|.webp",
    "id_col": "item_id",
    "title_col": "title, else the first text column",
    "text_col": "text, else the title; a,b joins columns",
    "image_col": "image, if present",
    "user_col": "user_id",
    "item_col": "item_id",
    "time_col": "timestamp, if present, else file order",
}
TITLE_LENGTH = 80  # a title taken from a text column keeps its first sentence, at most this many characters


@register(FORMAT, OPTIONS)
def import_generic(src: str, **options: Any) -> Dataset:
    """Options (defaults in brackets):

    items, interactions  catalog (.csv/.parquet/.jsonl) and log (.csv/.parquet) [items.*, interactions.* in src]
    images               folder holding {item_id}.{jpg,jpeg,png,webp}; used when there is no image column
    id_col [item_id], title_col [title, else the first text column (recorded as a finding)],
    text_col [text, else the title; "a,b" concatenates columns],
    image_col [image, if present], user_col [user_id], item_col [item_id],
    time_col [timestamp, if present; numbers or dates. Without one, file order is the order and
    timestamp = row position in the interactions file]

    An option naming a column that is absent is an error; a default that is absent is just not used.
    Relative image paths in the catalog are resolved against the catalog's folder and stored absolute.
    """
    given = check_options(FORMAT, options, OPTIONS)
    base = Path(src)
    if base.is_file():
        given.setdefault("items", base.name)
        base = base.parent
    elif not base.is_dir():
        raise DatasetError(f"generic import: {base} is neither a folder nor a catalog file")
    items_path = _pick(base, given.get("items"), "items", (".csv", ".parquet", ".jsonl"))
    inter_path = _pick(base, given.get("interactions"), "interactions", (".csv", ".parquet"))
    job = Importing(FORMAT, base, {**given, "items": os.path.abspath(items_path),
                                   "interactions": os.path.abspath(inter_path)})
    items, has_images = _read_items(job, items_path, given, base)

    user_col, item_col = given.get("user_col", "user_id"), given.get("item_col", "item_id")
    raw = job.read_table(inter_path, "interactions", str_cols=(user_col, item_col))
    require_columns(raw, [user_col, item_col, *([given["time_col"]] if "time_col" in given else [])], inter_path,
                    {user_col: "user_col", item_col: "item_col", given.get("time_col"): "time_col"})
    time_col = given.get("time_col") or ("timestamp" if "timestamp" in raw.columns else None)
    job.options.update(user_col=user_col, item_col=item_col, time_col=time_col)

    inter = pd.DataFrame({"user_id": raw[user_col], "item_id": raw[item_col]})
    # Without a time column the file order is the clock: timestamp = row position in the file.
    inter["timestamp"] = parse_times(raw[time_col], inter_path, time_col) if time_col else range(len(raw))
    for col in raw.columns:
        if col not in (user_col, item_col, time_col) and col not in inter.columns:
            inter[col] = raw[col]
    return job.finish(items, inter, images=has_images, synthetic_time=time_col is None)


def _read_items(job: Importing, path: Path, given: dict[str, Any], base: Path) -> tuple[pd.DataFrame, bool]:
    """The catalog as item_id/title/text/image + extra columns; also whether images apply at all."""
    id_col, title_col = given.get("id_col", "item_id"), given.get("title_col", "title")
    text_cols = [c.strip() for c in str(given.get("text_col", "")).split(",") if c.strip()]
    raw = job.read_table(path, "items", str_cols=(id_col,))
    explicit = {given[k]: k for k in ("title_col", "image_col") if k in given}
    require_columns(raw, [id_col, *explicit, *text_cols], path,
                    {id_col: "id_col", **explicit, **{c: "text_col" for c in text_cols}})
    raw = job.merge_items(raw, id_col)
    if not text_cols and "text" in raw.columns:
        text_cols = ["text"]
    image_col = given.get("image_col") or ("image" if "image" in raw.columns else None)
    fallback = title_col not in raw.columns
    if fallback:
        title_col = _fallback_title_column(job, raw, text_cols, exclude={id_col, image_col})
    else:
        job.report.add("title_from_other_column", 0, f"titles from column '{title_col}'", [])
    job.options.update(id_col=id_col, title_col=title_col, text_col=",".join(text_cols) or None, image_col=image_col)

    ids = raw[id_col]
    title = clean_text(raw[title_col]) if title_col else pd.Series(None, index=raw.index, dtype=object)
    if text_cols:
        text = pd.Series([join_text(parts) for parts in zip(*(clean_text(raw[c]) for c in text_cols))],
                         index=raw.index, dtype=object)
    else:
        text = title  # no text column: the title (whole, even when it came from another column) is the text
    if fallback and title_col:
        title = title.map(_short_title)
    image = pd.Series(None, index=raw.index, dtype=object)
    if image_col:
        image = absolute_paths(raw[image_col], path.parent)
    if "images" in given:  # the folder fills the items the image column leaves empty
        image = image.where(image.notna(), find_images(ids, base / given["images"]))

    taken = {id_col, title_col, image_col, *text_cols, "item_id", "title", "text", "image"}
    extras = {c: raw[c] for c in raw.columns if c not in taken}
    items = pd.DataFrame({"item_id": ids, "title": title, "text": text, "image": image, **extras})
    return items, bool(image_col or "images" in given)


def _fallback_title_column(job: Importing, raw: pd.DataFrame, text_cols: list[str], exclude: set) -> str | None:
    """No title column: the first text column (text_col's first, else the first column holding strings), so
    pages and contact sheets show words, not bare ids. The choice is a finding in the validation report."""
    strings = [c for c in raw.columns if c not in exclude and raw[c].map(lambda v: isinstance(v, str)).any()]
    column = next(iter(text_cols), None) or next(iter(strings), None)
    if column is None:
        job.report.add("title_from_other_column", len(raw), "no title column and no text column: titles empty "
                       "(pages show item ids; name one with -o title_col=COLUMN)", [])
        return None
    job.report.add("title_from_other_column", len(raw), f"no title column: titles are the first sentence (at "
                   f"most {TITLE_LENGTH} characters) of column '{column}' (choose another with -o title_col=COLUMN)",
                   [column])
    return column


def _short_title(text: str | None) -> str | None:
    """A title cut from a text column: its first sentence, shortened at a word boundary."""
    if text is None:
        return None
    first = text.split(". ")[0]
    return first if len(first) <= TITLE_LENGTH else first[: TITLE_LENGTH - 1].rsplit(" ", 1)[0] + "…"


def _pick(base: Path, given: str | None, stem: str, suffixes: tuple[str, ...]) -> Path:
    """The given path (relative to base), else the first base/{stem}{suffix} that exists."""
    if given:
        return base / given
    for suffix in suffixes:
        if (base / f"{stem}{suffix}").is_file():
            return base / f"{stem}{suffix}"
    raise DatasetError(f"{base}: no {stem} file given and none of {[stem + s for s in suffixes]} found "
                       f"(pass --{stem} PATH)")
