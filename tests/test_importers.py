"""Importers: the two real datasets (exact counts from their READMEs) and small generated files for
generic/recbole, one malformed input per test, each ending in a clear DatasetError or a counted repair."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clip4rec.data.dataset import Dataset, DatasetError
from clip4rec.data.importers import import_dataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ML100K = DATA / "ml100k-posters"
BEAUTY = DATA / "amazon-beauty"
CORE_FINDINGS = {"duplicate_item_ids_merged", "unknown_item_interactions_dropped",
                 "interactions_missing_user_or_item_dropped", "duplicate_interactions_kept", "items_without_text",
                 "items_without_interactions", "non_utf8_input_decoded_as_latin1",
                 "interactions_repeating_user_item_time"}


def findings(ds: Dataset) -> dict[str, int]:
    return {f["kind"]: f["count"] for f in ds.meta["validation"]["findings"]}


def rows(ds: Dataset) -> list[tuple]:
    return list(ds.interactions[["user_id", "item_id", "timestamp"]].itertuples(index=False, name=None))


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Values only: Parquet may bring a string column back as another string dtype (NaN vs None)."""
    frame = frame.astype(object)
    return frame.where(frame.notna(), None)


def item(ds: Dataset, item_id: str) -> dict:
    return ds.items.set_index("item_id").loc[item_id].to_dict()


# ---------------------------------------------------------------------------------------------------
# real datasets
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    if not ML100K.is_dir():
        pytest.skip(f"{ML100K} not present")
    return import_dataset("ml100k-posters", str(ML100K))


@pytest.fixture(scope="module")
def beauty() -> Dataset:
    if not BEAUTY.is_dir():
        pytest.skip(f"{BEAUTY} not present")
    return import_dataset("amazon-p5", str(BEAUTY))


def test_ml100k_counts_and_findings(ml100k: Dataset) -> None:
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_interactions) == (943, 1682, 99815)
    f = findings(ml100k)
    assert CORE_FINDINGS <= set(f)
    assert f["duplicate_item_ids_merged"] == 55
    assert f["duplicate_item_rows_conflicting"] == 0
    assert f["items_without_image"] == 19 and f["image_files_missing"] == 19
    assert f["items_without_overview"] == 18
    assert f["unknown_item_interactions_dropped"] == 0
    assert f["items_without_interactions"] == 19  # 1,682 items, 1,663 rated
    assert f["items_without_text"] == 0
    assert ml100k.meta["format"] == "ml100k-posters"


def test_ml100k_item_fields(ml100k: Dataset) -> None:
    toy = item(ml100k, "1")
    assert toy["title"] == "Toy Story (1995)"
    assert toy["text"].startswith("Toy Story (1995). Genres: Animation, Children's, Comedy. Led by Woody")
    assert toy["genres"] == "Animation, Children's, Comedy" and toy["year"] == 1995
    assert Path(toy["image"]).is_absolute() and Path(toy["image"]).is_file()
    assert item(ml100k, "330")["image"] is None  # one of the 19 without a poster
    no_overview = item(ml100k, "563")  # empty overview: text is title and genres only
    assert no_overview["text"].startswith("Stephen King's The Langoliers (1995). Genres:")
    assert no_overview["text"].count(". ") == 1
    assert item(ml100k, "56")["title"] == "Pulp Fiction (1994)"  # a merged duplicate id
    ids = ml100k.items["item_id"]
    assert ids.is_unique and ids.iloc[0] == "1"


def test_ml100k_ties_keep_ratings_file_order(ml100k: Dataset) -> None:
    # User 3's last three ratings share one timestamp; ratings.csv lists them as 320, 317, 181.
    tail = ml100k.interactions[ml100k.interactions["user_id"] == "3"].tail(3)
    assert tail["item_id"].tolist() == ["320", "317", "181"]
    assert tail["timestamp"].nunique() == 1
    per_user = ml100k.interactions.groupby("user_id", sort=False)["timestamp"]
    assert per_user.apply(lambda t: t.is_monotonic_increasing).all()


def test_beauty_counts_and_findings(beauty: Dataset) -> None:
    assert (beauty.n_users, beauty.n_items, beauty.n_interactions) == (22363, 12101, 198502)
    f = findings(beauty)
    assert CORE_FINDINGS <= set(f)
    assert f["items_without_text"] == 7
    assert f["items_missing_from_titles_added"] == 0 and f["duplicate_item_ids_merged"] == 0
    assert item(beauty, "B001S3I57S")["title"] is None and item(beauty, "B001S3I57S")["text"] is None
    assert beauty.items["image"].isna().all()


def test_beauty_html_entities_unescaped(beauty: Dataset) -> None:
    utopia = "Utopia 4\u00bd inch Ice Tempered Stainless Steel Styling Shears / Scissors"  # was 4&frac12;
    assert item(beauty, "B00AVQ0JI6")["title"] == utopia
    assert "\u2605LIMITED SALE\u2605" in item(beauty, "B00KD73PBQ")["text"]
    titles = beauty.items["title"].dropna()
    assert not titles.str.contains(r"&(?:#\d+|amp|quot|frac12);").any()


def test_beauty_sequence_order_matches_file(beauty: Dataset) -> None:
    seq = beauty.interactions[beauty.interactions["user_id"] == "A60XNB876KYML"]
    assert seq["item_id"].tolist() == ["B0009P4PZC", "B009HULFLW", "B00BZ1QN2C", "B00G2TQNZ4", "B00812ZWOS",
                                       "7806397051", "B0000YUX4O"]
    assert seq["timestamp"].tolist() == list(range(7))


@pytest.mark.parametrize("which", ["ml100k", "beauty"])
def test_real_dataset_save_load_round_trip(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    ds: Dataset = request.getfixturevalue(which)
    copy = Dataset(ds.items, ds.interactions, dict(ds.meta))
    copy.save(tmp_path / which)
    back = Dataset.load(tmp_path / which)
    pd.testing.assert_frame_equal(plain(back.items), plain(ds.items))
    pd.testing.assert_frame_equal(plain(back.interactions), plain(ds.interactions))
    assert back.meta["validation"] == ds.meta["validation"]
    assert back.meta["counts"]["interactions"] == ds.n_interactions


# ---------------------------------------------------------------------------------------------------
# generic
# ---------------------------------------------------------------------------------------------------
def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


JPEG = b"\xff\xd8\xff\xe0fake-jpeg"
ITEMS_CSV = "sku,name,blurb,pic\n007,Red Mug,A red mug.,img/007.jpg\nB2,Blue Pen,,img/b2.jpg\nC3,Green Hat,Wool.,\n"
LOG_CSV = "uid,sku,when\nu1,C3,20\nu1,007,10\nu2,B2,5\nu1,B2,20\n"
GENERIC_COLS = dict(id_col="sku", title_col="name", text_col="name,blurb", image_col="pic",
                    user_col="uid", item_col="sku", time_col="when")


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    write(tmp_path / "catalog" / "items.csv", ITEMS_CSV)
    write(tmp_path / "catalog" / "img" / "007.jpg", JPEG)
    write(tmp_path / "catalog" / "img" / "b2.jpg", JPEG)
    write(tmp_path / "log.csv", LOG_CSV)
    return tmp_path


def generic(root: Path, **options) -> Dataset:
    opts = dict(items="catalog/items.csv", interactions="log.csv", **GENERIC_COLS)
    opts.update(options)
    return import_dataset("generic", str(root), **{k: v for k, v in opts.items() if v is not None})


def test_generic_happy_path(shop: Path) -> None:
    ds = generic(shop)
    # u1's two ratings at time 20 keep file order (C3 before B2); ids keep leading zeros.
    assert rows(ds) == [("u1", "007", 10), ("u1", "C3", 20), ("u1", "B2", 20), ("u2", "B2", 5)]
    assert ds.items["item_id"].tolist() == ["007", "B2", "C3"]
    assert ds.items["title"].tolist() == ["Red Mug", "Blue Pen", "Green Hat"]
    assert ds.items["text"].tolist() == ["Red Mug. A red mug.", "Blue Pen", "Green Hat. Wool."]
    img = shop / "catalog" / "img"
    assert ds.items["image"].tolist() == [str(img / "007.jpg"), str(img / "b2.jpg"), None]
    f = findings(ds)
    assert CORE_FINDINGS <= set(f)
    assert f["items_without_image"] == 1 and f["image_files_missing"] == 0
    assert sum(f.values()) == 1  # nothing else found
    assert ds.meta["import_options"]["time_col"] == "when"


def test_generic_src_is_catalog_file_and_default_names(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\n1,One\n2,Two\n")
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,2\nu,1\nv,1\n")
    by_dir = import_dataset("generic", str(tmp_path))
    by_file = import_dataset("generic", str(tmp_path / "items.csv"))
    # No time column: the file order is the order, timestamp = row position.
    assert rows(by_dir) == rows(by_file) == [("u", "2", 0), ("u", "1", 1), ("v", "1", 2)]
    assert by_dir.items["text"].tolist() == ["One", "Two"]  # no text column: the title is the text


def test_generic_missing_interaction_column_names_it(shop: Path) -> None:
    with pytest.raises(DatasetError, match=r"log\.csv.*'user'"):
        generic(shop, user_col="user")


def test_generic_missing_text_column_names_it(shop: Path) -> None:
    with pytest.raises(DatasetError, match=r"items\.csv.*'description'"):
        generic(shop, text_col="name,description")


def test_generic_missing_default_columns_list_what_was_found_and_the_option_to_map_them(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "sku,name\n1,One\n")
    write(tmp_path / "interactions.csv", "customer,item_id\nu,1\n")
    with pytest.raises(DatasetError) as err:
        import_dataset("generic", str(tmp_path))
    assert str(err.value) == (f"{tmp_path / 'items.csv'}: missing required column 'item_id' (columns found: "
                              "['sku', 'name']); say which column holds it with -o id_col=COLUMN")
    with pytest.raises(DatasetError) as err:
        import_dataset("generic", str(tmp_path), id_col="sku")
    assert str(err.value) == (f"{tmp_path / 'interactions.csv'}: missing required column 'user_id' (columns found: "
                              "['customer', 'item_id']); say which column holds it with -o user_col=COLUMN")
    assert import_dataset("generic", str(tmp_path), id_col="sku", user_col="customer").n_interactions == 1


def test_import_help_shows_every_generic_option_with_its_default() -> None:
    from typer.testing import CliRunner

    from clip4rec.cli import app
    from clip4rec.data.importers.generic import OPTIONS
    result = CliRunner().invoke(app, ["import", "generic", "--help"], terminal_width=200)
    assert result.exit_code == 0
    shown = " ".join(result.output.split())
    assert len(OPTIONS) == 10
    for key, default in OPTIONS.items():
        assert f"{key}= (default: {default})" in shown, key
    assert "(default: item_id); title_col=" in shown and "user_col= (default: user_id)" in shown


def test_generic_without_title_column_takes_the_first_text_column_and_says_so(tmp_path: Path) -> None:
    long = "A " + "very " * 30 + "long line"
    write(tmp_path / "items.csv", f"item_id,description,blurb\n1,A red mug. Made of clay.,x\n2,{long},y\n3,,z\n")
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,1\nu,2\n")
    ds = import_dataset("generic", str(tmp_path), text_col="description,blurb")
    assert ds.items["title"].tolist() == ["A red mug", "A " + "very " * 14 + "very…", None]
    assert ds.items["text"].tolist() == ["A red mug. Made of clay. x", f"{long}. y", "z"]
    found = next(f for f in ds.meta["validation"]["findings"] if f["kind"] == "title_from_other_column")
    assert (found["count"], found["examples"]) == (3, ["description"])
    assert "column 'description'" in found["action"] and "-o title_col=COLUMN" in found["action"]
    assert ds.meta["import_options"]["title_col"] == "description"
    # No text column either: the first column holding strings; the text is that column, whole.
    write(tmp_path / "items.csv", "item_id,price,label\n1,3,Red mug. Clay.\n2,4,Pen\n")
    ds = import_dataset("generic", str(tmp_path))
    assert ds.items["title"].tolist() == ["Red mug", "Pen"]
    assert ds.items["text"].tolist() == ["Red mug. Clay.", "Pen"]
    assert findings(ds)["title_from_other_column"] == 2
    # A title column present: nothing to report.
    write(tmp_path / "items.csv", "item_id,title\n1,One\n2,Two\n")
    assert findings(import_dataset("generic", str(tmp_path)))["title_from_other_column"] == 0


def test_generic_duplicates_counted_both_ways(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\nA,a\nB,b\n")
    write(tmp_path / "interactions.csv", "user_id,item_id,ts,rating\n"
                                         "u,A,1,5\nu,A,1,5\nu,A,1,4\nu,B,2,5\nu,A,3,5\nv,A,1,5\n")
    f = {x["kind"]: x for x in import_dataset("generic", str(tmp_path), time_col="ts").meta["validation"]["findings"]}
    assert f["duplicate_interactions_kept"]["count"] == 1          # row 2 repeats row 1 in every column
    assert f["interactions_repeating_user_item_time"]["count"] == 2  # rows 2 and 3 repeat (u, A, 1)
    assert "every column (user, item, time, rating)" in f["duplicate_interactions_kept"]["action"]
    assert "(user_id, item_id, time)" in f["interactions_repeating_user_item_time"]["action"]
    # Without a time column the row position is not compared: (user, item) repeats.
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,A\nu,A\nu,B\n")
    f = findings(import_dataset("generic", str(tmp_path)))
    assert (f["duplicate_interactions_kept"], f["interactions_repeating_user_item_time"]) == (1, 1)


def test_generic_missing_file_names_it(shop: Path) -> None:
    with pytest.raises(DatasetError, match="nope.csv"):
        generic(shop, interactions="nope.csv")


def test_generic_unknown_option_is_an_error(shop: Path) -> None:
    with pytest.raises(DatasetError, match="colour"):
        generic(shop, colour="red")


def test_generic_unknown_items_dropped_and_counted(shop: Path) -> None:
    write(shop / "log.csv", LOG_CSV + "u2,ZZ,7\nu3,ZZ,8\n")
    ds = generic(shop)
    assert findings(ds)["unknown_item_interactions_dropped"] == 2
    assert "ZZ" not in set(ds.interactions["item_id"]) and "u3" not in set(ds.interactions["user_id"])
    assert ds.n_interactions == 4


def test_generic_missing_user_or_item_dropped_and_duplicates_kept(shop: Path) -> None:
    write(shop / "log.csv", LOG_CSV + ",B2,7\nu2,,8\nu2,B2,5\n")
    ds = generic(shop)
    f = findings(ds)
    assert f["interactions_missing_user_or_item_dropped"] == 2
    assert f["duplicate_interactions_kept"] == 1
    assert rows(ds)[-2:] == [("u2", "B2", 5), ("u2", "B2", 5)]


def test_generic_duplicate_ids_merged_first_row_wins(shop: Path) -> None:
    write(shop / "catalog" / "items.csv", ITEMS_CSV + "B2,Blue Pen v2,Fills the gap.,img/b2.jpg\n007,Mug,,\n")
    ds = generic(shop)
    f = findings(ds)
    assert f["duplicate_item_ids_merged"] == 2 and f["duplicate_item_rows_conflicting"] == 2
    assert ds.items["item_id"].tolist() == ["007", "B2", "C3"]
    pen = item(ds, "B2")
    assert pen["title"] == "Blue Pen"  # first row wins
    assert pen["text"] == "Blue Pen. Fills the gap."  # its empty blurb is filled from the later row
    assert item(ds, "007")["title"] == "Red Mug" and item(ds, "007")["text"] == "Red Mug. A red mug."


def test_generic_missing_and_zero_byte_images(shop: Path) -> None:
    (shop / "catalog" / "img" / "007.jpg").unlink()
    write(shop / "catalog" / "img" / "b2.jpg", b"")
    ds = generic(shop)
    f = findings(ds)
    assert f["image_files_missing"] == 1 and f["image_files_empty"] == 1
    assert f["items_without_image"] == 3
    assert ds.items["image"].isna().all()


def test_generic_images_folder_lookup(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\na,A\nb,B\nc,C\n")
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,a\n")
    write(tmp_path / "pics" / "a.png", JPEG)
    write(tmp_path / "pics" / "a.webp", JPEG)  # .png ranks before .webp
    write(tmp_path / "pics" / "b.JPG", b"")
    ds = import_dataset("generic", str(tmp_path), images="pics")
    assert ds.items["image"].tolist() == [str(tmp_path / "pics" / "a.png"), None, None]
    f = findings(ds)
    assert f["image_files_empty"] == 1 and f["items_without_image"] == 2
    assert f["items_without_interactions"] == 2


def test_generic_empty_text_counted(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title,text\n1,One,Nice\n2,,  \n3,Three,\n")
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu,1,1\n")
    ds = import_dataset("generic", str(tmp_path))
    assert ds.items["text"].tolist() == ["Nice", None, None]
    assert ds.items["title"].tolist() == ["One", None, "Three"]
    assert findings(ds)["items_without_text"] == 2


def test_generic_non_utf8_csv_decoded_as_latin1(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\n1,Caf\xe9 cr\xe8me\n".encode("latin-1"))
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,1\n")
    ds = import_dataset("generic", str(tmp_path))
    assert item(ds, "1")["title"] == "Caf\u00e9 cr\u00e8me"
    assert findings(ds)["non_utf8_input_decoded_as_latin1"] == 1


def test_generic_utf8_bom_is_not_part_of_the_header(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "\ufeffitem_id,title\n1,Caf\u00e9\n".encode("utf-8"))
    write(tmp_path / "interactions.csv", "\ufeffuser_id,item_id\nu,1\n".encode("utf-8"))
    ds = import_dataset("generic", str(tmp_path))
    assert item(ds, "1")["title"] == "Caf\u00e9"
    assert findings(ds)["non_utf8_input_decoded_as_latin1"] == 0


@pytest.mark.parametrize("content, message", [("", "empty"), ("user_id,item_id\n", "no interactions left")])
def test_generic_empty_interactions_is_an_error(tmp_path: Path, content: str, message: str) -> None:
    write(tmp_path / "items.csv", "item_id,title\n1,One\n")
    write(tmp_path / "interactions.csv", content)
    with pytest.raises(DatasetError, match=message):
        import_dataset("generic", str(tmp_path))


def test_generic_jsonl_catalog(tmp_path: Path) -> None:
    write(tmp_path / "items.jsonl", '{"item_id": "001", "title": "One", "image": "1.jpg"}\n'
                                    '{"item_id": "002", "title": "Two \\u00e9", "tags": ["x"]}\n')
    write(tmp_path / "1.jpg", JPEG)
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu,002,2\nu,001,1\n")
    ds = import_dataset("generic", str(tmp_path))
    assert ds.items["item_id"].tolist() == ["001", "002"]
    assert ds.items["title"].tolist() == ["One", "Two \u00e9"]
    assert ds.items["image"].tolist() == [str(tmp_path / "1.jpg"), None]
    assert rows(ds) == [("u", "001", 1), ("u", "002", 2)]


def test_generic_parquet_catalog_and_log_with_dates(tmp_path: Path) -> None:
    pd.DataFrame({"id": [1, 2, 3], "title": ["One", "Two", "Three"], "price": [1.5, 2.0, 3.0]}) \
        .to_parquet(tmp_path / "items.parquet")
    pd.DataFrame({"user": ["u", "u", "v"], "item_id": [3, 1, 2],
                  "ts": ["2024-01-02", "2024-01-01T00:00:01", "2024-01-01"]}).to_parquet(tmp_path / "log.parquet")
    ds = import_dataset("generic", str(tmp_path), interactions="log.parquet", id_col="id", user_col="user",
                        time_col="ts")
    assert ds.items["item_id"].tolist() == ["1", "2", "3"]
    assert ds.items["price"].tolist() == [1.5, 2.0, 3.0]
    assert rows(ds) == [("u", "1", 1704067201), ("u", "3", 1704153600), ("v", "2", 1704067200)]


# ---------------------------------------------------------------------------------------------------
# recbole
# ---------------------------------------------------------------------------------------------------
INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "1\t10\t4\t100\n2\t20\t5\t50\n1\t30\t3\t100\n1\t20\t2\t90\n")
ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\n10\tToy Story\t1995\n20\tHeat\t1995\n30\t\t1996\n"


@pytest.fixture
def atomic(tmp_path: Path) -> Path:
    write(tmp_path / "ml.inter", INTER)
    write(tmp_path / "ml.item", ITEM)
    return tmp_path


def test_recbole_happy_path(atomic: Path) -> None:
    ds = import_dataset("recbole", str(atomic))
    assert rows(ds) == [("1", "20", 90), ("1", "10", 100), ("1", "30", 100), ("2", "20", 50)]
    assert ds.interactions["rating"].tolist() == [2.0, 4.0, 3.0, 5.0]
    assert ds.items["item_id"].tolist() == ["10", "20", "30"]
    assert ds.items["title"].tolist() == ["Toy Story", "Heat", None]
    assert ds.items["text"].tolist() == ["Toy Story", "Heat", None]
    assert ds.items["release_year"].tolist() == ["1995", "1995", "1996"]
    f = findings(ds)
    assert CORE_FINDINGS <= set(f) and f["items_without_text"] == 1
    assert sum(f.values()) == 1
    assert ds.meta["import_options"]["title_col"] == "movie_title"


def test_recbole_text_col_and_inter_file_as_src(atomic: Path) -> None:
    ds = import_dataset("recbole", str(atomic / "ml.inter"), text_col="movie_title,release_year")
    assert ds.items["text"].tolist() == ["Toy Story. 1995", "Heat. 1995", "1996"]


def test_recbole_without_timestamp_uses_file_order(tmp_path: Path) -> None:
    write(tmp_path / "x.inter", "user_id:token\titem_id:token\nb\t1\na\t2\nb\t3\n")
    ds = import_dataset("recbole", str(tmp_path))
    assert rows(ds) == [("a", "2", 1), ("b", "1", 0), ("b", "3", 2)]
    f = findings(ds)
    assert f["item_file_missing"] == 1 and f["items_without_text"] == 3
    assert ds.items["item_id"].tolist() == ["1", "2", "3"]


def test_recbole_missing_item_column_names_it(tmp_path: Path) -> None:
    write(tmp_path / "x.inter", "user_id:token\tmovie:token\n1\t2\n")
    with pytest.raises(DatasetError, match=r"x\.inter.*'item_id'"):
        import_dataset("recbole", str(tmp_path))


def test_recbole_unknown_items_dropped_and_duplicate_ids_merged(atomic: Path) -> None:
    write(atomic / "ml.inter", INTER + "2\t99\t1\t60\n")
    write(atomic / "ml.item", ITEM + "30\tJumanji\t1995\n")
    ds = import_dataset("recbole", str(atomic))
    f = findings(ds)
    assert f["unknown_item_interactions_dropped"] == 1 and f["duplicate_item_ids_merged"] == 1
    assert item(ds, "30")["title"] == "Jumanji"  # empty first-row title filled from the later row
    assert item(ds, "30")["release_year"] == "1996"  # the first row wins where it has a value
    assert ds.n_interactions == 4


def test_recbole_images_folder(atomic: Path) -> None:
    write(atomic / "img" / "10.jpg", JPEG)
    write(atomic / "img" / "20.jpg", b"")
    ds = import_dataset("recbole", str(atomic), images="img")
    assert ds.items["image"].tolist() == [str(atomic / "img" / "10.jpg"), None, None]
    f = findings(ds)
    assert f["image_files_empty"] == 1 and f["items_without_image"] == 2


def test_recbole_non_utf8(atomic: Path) -> None:
    write(atomic / "ml.item", "item_id:token\tmovie_title:token_seq\n10\tAm\xe9lie\n".encode("latin-1"))
    ds = import_dataset("recbole", str(atomic))
    assert item(ds, "10")["title"] == "Am\u00e9lie"
    assert findings(ds)["non_utf8_input_decoded_as_latin1"] == 1


@pytest.mark.parametrize("content", ["", "user_id:token\titem_id:token\n"])
def test_recbole_empty_inter_is_an_error(tmp_path: Path, content: str) -> None:
    write(tmp_path / "x.inter", content)
    with pytest.raises(DatasetError, match=r"x\.inter|no interactions"):
        import_dataset("recbole", str(tmp_path))


def test_recbole_needs_a_name_when_ambiguous(tmp_path: Path) -> None:
    write(tmp_path / "a.inter", "user_id:token\titem_id:token\n1\t2\n")
    write(tmp_path / "b.inter", "user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(DatasetError, match="--name"):
        import_dataset("recbole", str(tmp_path))
    assert import_dataset("recbole", str(tmp_path), name="b").meta["import_options"]["name"] == "b"
