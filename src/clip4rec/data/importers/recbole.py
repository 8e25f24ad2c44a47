"""RecBole atomic files: `<name>.inter` (required) and `<name>.item` (optional) in one folder.

Both are tab-separated with a typed header, e.g. `user_id:token\titem_id:token\trating:float\ttimestamp:float`.
The `:type` suffixes are stripped from the column names; `:float` fields become numbers, the rest stay text.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

from clip4rec.data.dataset import Dataset, DatasetError
from clip4rec.data.importers import register
from clip4rec.data.importers.common import Importing, check_options, clean_ids, clean_text, find_images, \
    join_text, parse_times, require_columns

FORMAT = "recbole"
# option -> its default (shown by `clip4rec import --help`)
OPTIONS = {
    "name": "the only *.inter in SRC",
    "user_col": "user_id",
    "item_col": "item_id",
    "time_col": "timestamp, if present, else file order",
    "title_col": "first of title/movie_title/item_name/name, else a field with 'title' in its name",
    "text_col": "the title; a,b joins fields",
    "images": "none; a folder of {item_id}.jpg|.jpeg|.png|.webp",
}
TITLE_GUESSES = ("title", "movie_title", "item_name", "name")


@register(FORMAT, OPTIONS)
def import_recbole(src: str, **options: Any) -> Dataset:
    """src: the folder (or the .inter file). Options (defaults in brackets):

    name [the only *.inter in the folder], user_col [user_id], item_col [item_id],
    time_col [timestamp, if present; without it the file order is the order, timestamp = row position],
    title_col [first of title/movie_title/item_name/name, else a field with "title" in its name],
    text_col [the title; "a,b" joins fields], images [folder with {item_id}.{jpg,jpeg,png,webp}].
    Without a .item file the catalog is the set of items in .inter (no text), counted as a finding.
    """
    given = check_options(FORMAT, options, OPTIONS)
    inter_path = _inter_path(Path(src), given.get("name"))
    base = inter_path.parent
    job = Importing(FORMAT, base, {**given, "name": inter_path.name[: -len(".inter")]})

    user_col, item_col = given.get("user_col", "user_id"), given.get("item_col", "item_id")
    raw, _ = _read_atomic(job, inter_path, "interactions")
    require_columns(raw, [user_col, item_col, *([given["time_col"]] if "time_col" in given else [])], inter_path,
                    {user_col: "user_col", item_col: "item_col", given.get("time_col"): "time_col"})
    time_col = given.get("time_col") or ("timestamp" if "timestamp" in raw.columns else None)
    inter = pd.DataFrame({"user_id": raw[user_col], "item_id": raw[item_col]})
    inter["timestamp"] = parse_times(raw[time_col], inter_path, time_col) if time_col else range(len(raw))
    for col in raw.columns:
        if col not in (user_col, item_col, time_col):
            inter[col] = raw[col]

    item_path = base / f"{job.options['name']}.item"
    if item_path.is_file():
        items = _read_items(job, item_path, given, item_col)
    else:
        items = pd.DataFrame({"item_id": pd.unique(clean_ids(inter["item_id"]).dropna())})
    job.report.add("item_file_missing", 0 if item_path.is_file() else 1,
                   "catalog = items seen in interactions, no text", [] if item_path.is_file() else [str(item_path)])
    if "images" in given:
        items["image"] = find_images(clean_ids(items["item_id"]), base / given["images"])
    job.options.update(user_col=user_col, item_col=item_col, time_col=time_col)
    return job.finish(items, inter, images="images" in given, synthetic_time=time_col is None)


def _inter_path(src: Path, name: str | None) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise DatasetError(f"recbole import: {src} is neither a folder nor a .inter file")
    if name:
        return src / f"{name}.inter"
    found = sorted(p for p in src.glob("*.inter") if p.name.count(".") == 1)  # skip name.train.inter splits
    if len(found) != 1:
        raise DatasetError(f"{src}: expected exactly one <name>.inter file, found {[p.name for p in found]} "
                           f"(pass --name)")
    return found[0]


def _read_atomic(job: Importing, path: Path, what: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """An atomic file with `field:type` headers stripped to `field`; float fields parsed as numbers."""
    raw = job.read_csv(path, what, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    types = {}
    for header in raw.columns:
        field, _, kind = str(header).partition(":")
        types[field] = kind or "token"
    raw.columns = list(types)
    for field, kind in types.items():
        if kind == "float":
            raw[field] = pd.to_numeric(raw[field], errors="coerce")  # "" -> NaN
    return raw, types


def _read_items(job: Importing, path: Path, given: dict[str, Any], item_col: str) -> pd.DataFrame:
    raw, _ = _read_atomic(job, path, "items")
    text_cols = [c.strip() for c in str(given.get("text_col", "")).split(",") if c.strip()]
    require_columns(raw, [item_col, *([given["title_col"]] if "title_col" in given else []), *text_cols], path,
                    {item_col: "item_col", given.get("title_col"): "title_col", **{c: "text_col" for c in text_cols}})
    raw = job.merge_items(raw, item_col)
    title_col = given.get("title_col") or next((c for c in TITLE_GUESSES if c in raw.columns), None) \
        or next((c for c in raw.columns if "title" in c), None)
    title = clean_text(raw[title_col]) if title_col else pd.Series(None, index=raw.index, dtype=object)
    if text_cols:
        text = pd.Series([join_text(p) for p in zip(*(clean_text(raw[c]) for c in text_cols))],
                         index=raw.index, dtype=object)
    else:
        text = title
    job.options.update(title_col=title_col, text_col=",".join(text_cols) or title_col)
    taken = {item_col, title_col, "item_id", "title", "text", "image"}
    extras = {c: raw[c] for c in raw.columns if c not in taken}
    return pd.DataFrame({"item_id": raw[item_col], "title": title, "text": text, **extras})
