"""Amazon 5-core sequential splits in the P5 / OpenP5 layout (Beauty, Sports, Toys).

src/user_sequence.txt   `user item_1 item_2 ...` per line, items in time order, no timestamps
src/item_titles.tsv     `asin<TAB>title`, titles with HTML entities (optional: without it no item has text)
"""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

import pandas as pd

from clip4rec.data.dataset import Dataset, DatasetError
from clip4rec.data.importers import register
from clip4rec.data.importers.common import Importing, check_options

FORMAT = "amazon-p5"


@register(FORMAT)
def import_amazon_p5(src: str, **options: Any) -> Dataset:
    """timestamp = position in the user's sequence (0, 1, 2, ...): the file order is the only clock.

    Items seen in sequences but absent from the titles file are kept, without text, and counted.
    """
    check_options(FORMAT, options, ())
    root = Path(src)
    job = Importing(FORMAT, root, {})
    seq_path = root / "user_sequence.txt"

    users: list[str] = []
    item_ids: list[str] = []
    line_users: list[str] = []
    for line in job.read_text(seq_path, "user sequence").splitlines():
        fields = line.split()
        if len(fields) > 1:
            line_users.append(fields[0])
            users.extend([fields[0]] * (len(fields) - 1))
            item_ids.extend(fields[1:])
    if not users:
        raise DatasetError(f"{seq_path}: no `user item ...` lines found")
    inter = pd.DataFrame({"user_id": users, "item_id": item_ids})
    # cumcount keeps the order right even if a user's sequence is continued on a later line.
    inter["timestamp"] = inter.groupby("user_id", sort=False).cumcount()
    repeated = pd.Series(line_users)
    repeated = repeated[repeated.duplicated()].unique().tolist()
    job.report.add("users_on_several_lines", len(repeated), "sequences concatenated in file order", repeated)

    titles_path = root / "item_titles.tsv"
    if titles_path.is_file():
        titles = job.read_csv(titles_path, "item titles", sep="\t", header=None, names=["item_id", "title"],
                              dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
        titles["title"] = titles["title"].map(html.unescape)
    else:
        titles = pd.DataFrame({"item_id": pd.Series(dtype=str), "title": pd.Series(dtype=str)})
    job.report.add("item_titles_file_missing", 0 if titles_path.is_file() else 1, "items have no text",
                   [] if titles_path.is_file() else [str(titles_path)])

    seen = pd.unique(inter["item_id"])
    titled = set(titles["item_id"])
    untitled = [i for i in seen if i not in titled]
    job.report.add("items_missing_from_titles_added", len(untitled), "added to the catalog without text", untitled)
    items = pd.concat([titles, pd.DataFrame({"item_id": untitled, "title": None})], ignore_index=True)
    items["text"] = items["title"]
    return job.finish(items, inter, images=False, synthetic_time=True)
