"""The on-disk Dataset contract: items.parquet + interactions.parquet + dataset.json.

items:        item_id (str), title (str|None), text (str|None), image (str path|None), other columns kept.
interactions: user_id (str), item_id (str), timestamp (int64); rows are in chronological order per user
              (ties keep their source order), which is the order every split reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clip4rec.files import atomic_write, write_text

ITEM_COLUMNS = ("item_id", "title", "text", "image")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
FORMAT_VERSION = 1


class DatasetError(ValueError):
    """Input that cannot become a Dataset; the message says what and where."""


@dataclass
class Dataset:
    items: pd.DataFrame
    interactions: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None  # directory the dataset was loaded from (resolves relative image paths)

    def __post_init__(self) -> None:
        self.items = normalize_items(self.items)
        self.interactions = normalize_interactions(self.interactions)

    # ---- derived views -------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self.interactions)

    def image_path(self, image: str | None) -> Path | None:
        """Absolute path of an `image` cell (relative paths are relative to the dataset directory)."""
        if image is None or (isinstance(image, float) and pd.isna(image)) or image == "":
            return None
        path = Path(image)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        return path

    def stats(self) -> dict[str, Any]:
        inter = self.interactions
        per_user = inter.groupby("user_id", sort=False).size()
        n_users, n_items = self.n_users, self.n_items
        has_text = self.items["text"].fillna("").str.strip().ne("")
        has_image = self.items["image"].notna()
        return {
            "users": n_users,
            "items": n_items,
            "interactions": self.n_interactions,
            "items_with_interactions": int(inter["item_id"].nunique()),
            "density": (self.n_interactions / (n_users * n_items)) if n_users and n_items else 0.0,
            "seq_len_min": int(per_user.min()) if len(per_user) else 0,
            "seq_len_median": float(per_user.median()) if len(per_user) else 0.0,
            "seq_len_max": int(per_user.max()) if len(per_user) else 0,
            "items_with_text": int(has_text.sum()),
            "items_with_image": int(has_image.sum()),
        }

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta)
        meta["format_version"] = FORMAT_VERSION
        meta["counts"] = self.stats()
        _write_parquet(self.items, out / "items.parquet")
        _write_parquet(self.interactions, out / "interactions.parquet")
        write_text(out / "dataset.json", json.dumps(meta, indent=2, default=str))
        self.meta, self.root = meta, out.resolve()
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "Dataset":
        root = Path(directory)
        missing = [n for n in ("items.parquet", "interactions.parquet", "dataset.json") if not (root / n).exists()]
        if missing:
            raise DatasetError(f"{root} is not a clip4rec Dataset directory: missing {', '.join(missing)} "
                               f"(create one with `clip4rec import`)")
        meta = json.loads((root / "dataset.json").read_text())
        return cls(items=pd.read_parquet(root / "items.parquet"),
                   interactions=pd.read_parquet(root / "interactions.parquet"),
                   meta=meta, root=root.resolve())


def normalize_items(items: pd.DataFrame) -> pd.DataFrame:
    if "item_id" not in items.columns:
        raise DatasetError("items table has no 'item_id' column")
    items = items.copy()
    for col in ("title", "text", "image"):
        if col not in items.columns:
            items[col] = None
    items["item_id"] = items["item_id"].astype(str)
    for col in ("title", "text", "image"):
        items[col] = items[col].astype(object).where(items[col].notna(), None)
    if items["item_id"].duplicated().any():
        dup = items.loc[items["item_id"].duplicated(), "item_id"].head(5).tolist()
        raise DatasetError(f"items table has duplicate item_id values (first: {dup}); importers must merge them")
    ordered = list(ITEM_COLUMNS) + [c for c in items.columns if c not in ITEM_COLUMNS]
    return items[ordered].reset_index(drop=True)


def normalize_interactions(inter: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in INTERACTION_COLUMNS if c not in inter.columns]
    if missing:
        raise DatasetError(f"interactions table lacks column(s) {missing}")
    inter = inter.copy()
    inter["user_id"] = inter["user_id"].astype(str)
    inter["item_id"] = inter["item_id"].astype(str)
    inter["timestamp"] = inter["timestamp"].astype("int64")
    ordered = list(INTERACTION_COLUMNS) + [c for c in inter.columns if c not in INTERACTION_COLUMNS]
    return inter[ordered].reset_index(drop=True)


def order_interactions(inter: pd.DataFrame) -> pd.DataFrame:
    """Chronological order per user; a stable sort, so timestamp ties keep their source order."""
    inter = inter.reset_index(drop=True)
    return inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
