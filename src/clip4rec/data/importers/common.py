"""What every importer shares: tolerant file reading, id/text cleaning, and one validation pass.

Importers only translate a source layout into two raw frames (items, interactions); `Importing.finish`
then applies the same checks to every format, so a finding means the same thing whatever the source was.

Finding kinds (always recorded, zero counts included, so a report shows what was checked):
  non_utf8_input_decoded_as_latin1     files that were not UTF-8 and were read as latin-1
  items_missing_id_dropped             catalog rows with an empty item id
  duplicate_item_ids_merged            ids with several catalog rows (rule: first row wins per column,
                                       empty cells filled from later rows, in file order)
  duplicate_item_rows_conflicting      of those, ids whose rows disagree on a non-empty value
  interactions_missing_user_or_item_dropped
  interactions_missing_timestamp_dropped   (time column present but empty/unparseable)
  unknown_item_interactions_dropped    interactions whose item is not in the catalog
  duplicate_interactions_kept          rows identical in every column (user, item, time and every extra
                                       column) to an earlier row: the repeats beyond the first, kept
  interactions_repeating_user_item_time   rows whose (user, item, time) repeats an earlier row's, whatever
                                       their other columns: the repeats beyond the first, kept; without a
                                       time column (file order) the pair (user, item) is what repeats
  title_from_other_column              (generic) no title column: titles taken from the first text column
  items_without_text
  items_without_interactions           catalog items nobody interacted with (kept)
  image_files_missing / image_files_empty   referenced image absent / zero bytes -> image set to None
  items_without_image                  final count of items with no usable image (when images apply)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from clip4rec.data.dataset import Dataset, DatasetError, order_interactions
from clip4rec.data.validation import ValidationReport

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# pandas < 3 turns JSON columns with date-like names into datetimes even with dtype=False; 3 deprecates the flag.
_NO_DATE_GUESSING = {} if int(pd.__version__.split(".")[0]) >= 3 else {"convert_dates": False}


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path}")
    return path


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path | str,
                    options: dict[str, str] | None = None) -> None:
    """A missing column is an error listing the columns found; `options` maps a column to the importer
    option that names it (e.g. {"user_id": "user_col"}), so the error says how to point at another one."""
    for col in columns:
        if col not in frame.columns:
            option = (options or {}).get(col)
            hint = f"; say which column holds it with -o {option}=COLUMN" if option else ""
            raise DatasetError(f"{path}: missing required column '{col}' (columns found: {list(frame.columns)})"
                               f"{hint}")


def check_options(fmt: str, options: dict[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """Options set to None count as not given (a CLI passes every flag); anything unknown is an error."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise DatasetError(f"format {fmt!r} does not take option(s) {unknown}; it takes {sorted(allowed)}")
    return given


def clean_ids(values: pd.Series) -> pd.Series:
    """Ids as stripped strings, None when empty; integral floats (ints with NaN) lose their '.0'."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return clean_text(values)


def clean_text(values: pd.Series | None) -> pd.Series | None:
    """Strings stripped of surrounding whitespace; empty or missing cells become None."""
    if values is None:
        return None
    text = values.astype("string").str.strip().replace("", pd.NA)
    return text.astype(object).where(text.notna(), None)


def join_text(parts: Iterable[str | None]) -> str | None:
    """Join non-empty parts into sentences ('a. b'); None when nothing is left."""
    out = ""
    for part in parts:
        part = (part or "").strip()
        if part:
            sep = "" if not out else (" " if out[-1] in ".!?" else ". ")
            out += sep + part
    return out or None


def find_images(ids: pd.Series, folder: Path) -> pd.Series:
    """{id}.{jpg,jpeg,png,webp} in folder (one directory listing, not one stat per id), absolute or None."""
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    best: dict[str, tuple[int, str]] = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS:
            rank = IMAGE_EXTENSIONS.index(ext.lower())
            if stem not in best or rank < best[stem][0]:
                best[stem] = (rank, os.path.abspath(folder / name))
    found = {stem: path for stem, (_, path) in best.items()}
    return ids.map(lambda i: found.get(i)).astype(object)


def absolute_paths(values: pd.Series, base: Path) -> pd.Series:
    """Image cells as absolute path strings; relative ones are taken relative to `base`."""
    values = clean_text(values)
    return values.map(lambda v: None if v is None else os.path.abspath(base / os.path.expanduser(v)))


def parse_times(values: pd.Series, path: Path | str, col: str) -> pd.Series:
    """Numbers stay numbers (float, so fractions still order rows); date strings become Unix seconds."""
    if not pd.api.types.is_numeric_dtype(values):
        values = clean_text(values)  # blank cells are missing, not unparseable
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() >= values.notna().sum():
        return numeric.astype("float64")
    dates = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    if dates.notna().sum() == 0:
        example = values.dropna().iloc[0]
        raise DatasetError(f"{path}: column '{col}' holds neither numbers nor dates (e.g. {example!r})")
    return ((dates - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).astype("float64")


class Importing:
    """One import in progress: the validation report plus what the readers noticed along the way."""

    def __init__(self, fmt: str, source: str | os.PathLike[str], options: dict[str, Any]) -> None:
        self.fmt = fmt
        self.source = os.path.abspath(source)
        self.options = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in options.items()}
        self.report = ValidationReport(self.source)
        self.latin1_files: list[str] = []
        self._merged = False  # merge_items already ran on the raw catalog

    # ---- reading -------------------------------------------------------------------------------
    def _decode(self, path: Path, read: Any) -> Any:
        """Call read(encoding); UTF-8 first (a BOM, as Excel writes, is skipped), then latin-1, which never
        fails, so it is recorded as a finding for someone to check."""
        try:
            return read("utf-8-sig")
        except UnicodeDecodeError:
            self.latin1_files.append(str(path))
            return read("latin-1")

    def read_csv(self, path: Path, what: str, **kwargs: Any) -> pd.DataFrame:
        path = require_file(path, what)
        try:
            return self._decode(path, lambda enc: pd.read_csv(path, encoding=enc, **kwargs))
        except pd.errors.EmptyDataError:
            raise DatasetError(f"{what} file is empty: {path}") from None
        except pd.errors.ParserError as err:
            raise DatasetError(f"{what} file {path} cannot be parsed: {err}") from None

    def read_text(self, path: Path, what: str) -> str:
        path = require_file(path, what)
        return self._decode(path, lambda enc: path.read_text(encoding=enc))

    def read_table(self, path: Path, what: str, str_cols: Iterable[str] = ()) -> pd.DataFrame:
        """.csv/.tsv, .parquet or .jsonl, chosen by suffix; id columns are read as text (keeps '007')."""
        path = require_file(path, what)
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            return self.read_csv(path, what, sep=sep, dtype={c: str for c in str_cols})
        if suffix == ".parquet":
            try:
                return pd.read_parquet(path)
            except Exception as err:  # pyarrow raises several types for a bad file
                raise DatasetError(f"{what} file {path} is not readable Parquet: {err}") from None
        if suffix in (".jsonl", ".ndjson"):
            if path.stat().st_size == 0:
                raise DatasetError(f"{what} file is empty: {path}")
            try:
                return self._decode(path, lambda enc: pd.read_json(path, lines=True, dtype=False,
                                                                   encoding=enc, **_NO_DATE_GUESSING))
            except ValueError as err:
                raise DatasetError(f"{what} file {path} is not valid JSON lines: {err}") from None
        raise DatasetError(f"{what} file {path}: unsupported type {suffix!r} (use .csv, .parquet or .jsonl)")

    # ---- validation and assembly ---------------------------------------------------------------
    def finish(self, items: pd.DataFrame, inter: pd.DataFrame, *, images: bool, synthetic_time: bool) -> Dataset:
        """items: item_id,title,text[,image],extras; inter: user_id,item_id,timestamp (float),extras.

        images: whether this source has images at all (else no image findings are recorded).
        synthetic_time: timestamps are row positions, so they are left out of the duplicate check.
        """
        items = self._clean_items(items, images)
        inter = self._clean_interactions(inter, set(items["item_id"]), synthetic_time)
        report = self.report

        no_text = items["text"].isna()
        report.add("items_without_text", no_text.sum(), "kept (text None)", items.loc[no_text, "item_id"].tolist())
        if images:
            no_image = items["image"].isna()
            report.add("items_without_image", no_image.sum(), "kept (image None)",
                       items.loc[no_image, "item_id"].tolist())
        unused = ~items["item_id"].isin(set(inter["item_id"]))
        report.add("items_without_interactions", unused.sum(), "kept", items.loc[unused, "item_id"].tolist())
        report.add("non_utf8_input_decoded_as_latin1", len(self.latin1_files),
                   "decoded as latin-1 (check accented characters)", self.latin1_files)

        meta = {"source": self.source, "format": self.fmt, "import_options": self.options,
                "validation": report.as_dict()}
        return Dataset(items=items, interactions=inter, meta=meta)

    def merge_items(self, raw: pd.DataFrame, id_col: str = "item_id") -> pd.DataFrame:
        """Drop catalog rows without an id and merge duplicate ids, both counted.

        Call it on the raw catalog before deriving text from its columns, so that a gap filled from a later
        duplicate row also reaches the text. Rule: first row wins per column, empty cells (missing or blank)
        are filled from later rows in file order; ids whose rows disagree on a value are counted too.
        """
        report = self.report
        self._merged = True
        raw = raw.copy()
        raw[id_col] = clean_ids(raw[id_col])
        for col in raw.columns:
            if raw[col].dtype == object or pd.api.types.is_string_dtype(raw[col]):
                raw[col] = raw[col].mask(raw[col].map(lambda v: isinstance(v, str) and not v.strip()).astype(bool))

        no_id = raw[id_col].isna()
        report.add("items_missing_id_dropped", no_id.sum(), "dropped (row numbers)", raw.index[no_id].tolist())
        raw = raw.loc[~no_id].reset_index(drop=True)

        dup_rows = raw[id_col].duplicated(keep=False)
        dup_ids = raw.loc[dup_rows, id_col].drop_duplicates().tolist()
        extra = int(raw[id_col].duplicated().sum())
        conflicting: list[str] = []
        if dup_ids:
            dups = raw.loc[dup_rows].map(lambda v: repr(v) if isinstance(v, (list, dict)) else v)
            varies = dups.groupby(id_col, sort=False).nunique(dropna=True).gt(1).any(axis=1)
            conflicting = varies[varies].index.tolist()
            # groupby.first() takes the first non-missing value per column: first row wins, gaps filled later.
            raw = raw.groupby(id_col, sort=False, as_index=False).first()
        report.add("duplicate_item_ids_merged", len(dup_ids),
                   f"merged into one row each ({extra} extra rows): first row wins per column, "
                   f"empty cells filled from later rows", dup_ids)
        report.add("duplicate_item_rows_conflicting", len(conflicting), "first row's value kept", conflicting)
        return raw

    def _clean_items(self, items: pd.DataFrame, images: bool) -> pd.DataFrame:
        if not self._merged:
            items = self.merge_items(items)
        items = items.copy()
        items["item_id"] = clean_ids(items["item_id"])
        for col in ("title", "text", "image"):
            items[col] = clean_text(items[col]) if col in items.columns else None

        if images:
            exists = items["image"].map(lambda p: None if p is None else _file_size(p))
            missing = items["image"].notna() & exists.isna()
            empty = exists.eq(0)
            self.report.add("image_files_missing", missing.sum(), "image set to None",
                            items.loc[missing, "image"].tolist())
            self.report.add("image_files_empty", empty.sum(), "image set to None (zero-byte file)",
                            items.loc[empty, "image"].tolist())
            items.loc[missing | empty, "image"] = None
        return items

    def _clean_interactions(self, inter: pd.DataFrame, known: set[str], synthetic_time: bool) -> pd.DataFrame:
        report = self.report
        inter = inter.copy()
        inter["user_id"] = clean_ids(inter["user_id"])
        inter["item_id"] = clean_ids(inter["item_id"])
        inter["timestamp"] = pd.to_numeric(inter["timestamp"], errors="coerce").astype("float64")

        no_key = inter["user_id"].isna() | inter["item_id"].isna()
        report.add("interactions_missing_user_or_item_dropped", no_key.sum(), "dropped",
                   inter.index[no_key].tolist())
        no_time = ~no_key & inter["timestamp"].isna()
        report.add("interactions_missing_timestamp_dropped", no_time.sum(), "dropped",
                   inter.index[no_time].tolist())
        inter = inter.loc[~no_key & ~no_time]

        unknown = ~inter["item_id"].isin(known)
        report.add("unknown_item_interactions_dropped", unknown.sum(), "dropped (item not in catalog)",
                   inter.loc[unknown, "item_id"].drop_duplicates().tolist())
        inter = inter.loc[~unknown]

        self._count_repeats(inter, synthetic_time)

        if inter.empty:
            raise DatasetError(f"{self.source}: no interactions left after cleaning "
                               f"(see findings: {self.report.summary_lines()})")
        # Sort on the exact (float) time first, so sub-second order survives the cast to int64;
        # order_interactions then is a stable no-op that states the contract.
        inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
        inter["timestamp"] = inter["timestamp"].astype("int64")
        return order_interactions(inter)


    def _count_repeats(self, inter: pd.DataFrame, synthetic_time: bool) -> None:
        """Two counts, because "duplicate" means two things: rows identical in every column, and rows that
        repeat (user, item, time) whatever else they hold. Both are repeats beyond a group's first row."""
        extras = [c for c in inter.columns if c not in ("user_id", "item_id", "timestamp")]
        key = ["user_id", "item_id"] if synthetic_time else ["user_id", "item_id", "timestamp"]
        same_row = inter.duplicated(subset=key + extras)
        every = f"user, item{'' if synthetic_time else ', time'}" + "".join(f", {c}" for c in extras)
        clock = " (no time column: the row position is not compared)" if synthetic_time else ""
        self.report.add("duplicate_interactions_kept", same_row.sum(),
                        f"kept (repeat interactions are data): rows identical in every column ({every}) to an "
                        f"earlier row{clock}, counting the repeats beyond the first",
                        (inter.loc[same_row, "user_id"] + ":" + inter.loc[same_row, "item_id"]).tolist())
        same_key = inter.duplicated(subset=key)
        self.report.add("interactions_repeating_user_item_time", same_key.sum(),
                        f"kept: rows repeating an earlier row's ({', '.join(k.replace('timestamp', 'time') for k in key)})"
                        f"{clock}, other columns may differ; counting the repeats beyond the first",
                        (inter.loc[same_key, "user_id"] + ":" + inter.loc[same_key, "item_id"]).tolist())


def _file_size(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if os.path.isfile(path) else None
