"""Bad and unusual inputs: images (PIL + numpy decode) and texts. Pure CPU, no models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clip4rec.encode.images import ImagePrep, file_hash, load_image
from clip4rec.encode.text import clean_text, compose_text, text_hash

PREP = ImagePrep(size=(32, 32), mode="squash", mean=(0, 0, 0), std=(1, 1, 1))


def test_missing_empty_notimage_truncated(tmp_path):
    assert load_image(None, PREP) == (None, "missing")
    assert load_image(tmp_path / "nope.jpg", PREP) == (None, "missing")
    (tmp_path / "e.jpg").write_bytes(b"")
    assert load_image(tmp_path / "e.jpg", PREP) == (None, "empty file")
    (tmp_path / "x.jpg").write_text("not a jpeg at all")
    assert load_image(tmp_path / "x.jpg", PREP) == (None, "not an image")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(tmp_path / "f.jpg", quality=95)
    data = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    arr, why = load_image(tmp_path / "t.jpg", PREP)
    assert arr is None and why.startswith("truncated or corrupt")


def test_tiny_and_huge_images_are_refused(tmp_path):
    Image.new("RGB", (1, 1), "red").save(tmp_path / "one.png")
    assert load_image(tmp_path / "one.png", PREP) == (None, "too small (1x1)")
    # 12000 x 12000 = 144 Mpx: PIL's own bomb check (> 2x 89 Mpx) and ours both refuse it without decoding
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    arr, why = load_image(tmp_path / "bomb.png", PREP)
    assert arr is None and why == f"too large (12000x12000 > {PREP.max_pixels} pixels; decompression-bomb guard)"
    # our own limit is configurable and checked from the header
    Image.new("RGB", (100, 100), "red").save(tmp_path / "mid.png")
    arr, why = load_image(tmp_path / "mid.png", ImagePrep(size=(32, 32), max_pixels=5000))
    assert arr is None and why == "too large (100x100 > 5000 pixels; decompression-bomb guard)"


def test_the_bomb_reason_does_not_depend_on_which_thread_decodes(tmp_path):
    """Decode threads run side by side; the reason an image is refused must not depend on their timing (it did
    while load_image swapped the process-wide warning filters)."""
    from concurrent.futures import ThreadPoolExecutor

    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")
    Image.new("RGB", (64, 48), "blue").save(tmp_path / "ok.png")
    paths = [tmp_path / ("bomb.png" if j % 2 else "ok.png") for j in range(24)]
    with ThreadPoolExecutor(4) as pool:
        reasons = list(pool.map(lambda path: load_image(path, PREP)[1], paths))
    assert set(reasons[1::2]) == {f"too large (12000x12000 > {PREP.max_pixels} pixels; decompression-bomb guard)"}
    assert set(reasons[0::2]) == {None}


def test_modes_cmyk_alpha_palette(tmp_path):
    Image.new("CMYK", (40, 60), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    arr, why = load_image(tmp_path / "c.jpg", PREP)
    assert why is None and arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert arr[..., 0].mean() > 200 and arr[..., 1].mean() < 60 and arr[..., 2].mean() < 60  # red
    Image.new("RGBA", (40, 60), (255, 0, 0, 0)).save(tmp_path / "a.png")  # fully transparent red
    arr, why = load_image(tmp_path / "a.png", PREP)
    assert why is None and (arr == 255).all()  # composited on white, not black, not red
    Image.new("RGB", (40, 60), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    arr, why = load_image(tmp_path / "p.png", PREP)
    assert why is None and tuple(arr[5, 5]) == (0, 0, 255)
    pal = Image.new("P", (40, 60), 0)
    pal.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    arr, why = load_image(tmp_path / "pt.png", PREP)
    assert why is None and (arr == 255).all()
    Image.new("L", (40, 60), 128).save(tmp_path / "g.png")
    arr, why = load_image(tmp_path / "g.png", PREP)
    assert why is None and (arr == 128).all()
    Image.new("I;16", (40, 60), 1000).save(tmp_path / "i16.png")
    arr, why = load_image(tmp_path / "i16.png", PREP)
    assert why is None and arr.shape == (32, 32, 3)


def test_exif_orientation_is_applied(tmp_path):
    # stored 60 wide x 30 high, left half red / right half blue; EXIF orientation 6 = rotate 90 CW for display,
    # so the displayed image is 30 x 60 with red on top
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out, why = load_image(tmp_path / "r.jpg", PREP)
    assert why is None
    top, bottom = out[3, 16].astype(int), out[28, 16].astype(int)
    assert top[0] > 200 and top[2] < 60, top       # red on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue at the bottom


def test_crop_mode_matches_clip_geometry(tmp_path):
    arr = np.zeros((100, 50, 3), np.uint8)
    arr[:25] = 255  # white top quarter is cropped away by shortest-side + centre crop
    Image.fromarray(arr).save(tmp_path / "p.png")
    out, why = load_image(tmp_path / "p.png", ImagePrep(size=(32, 32), mode="crop"))
    assert why is None and out.shape == (32, 32, 3) and out.max() < 30


def test_normalize_layout():
    prep = ImagePrep(size=(2, 2), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = np.full((3, 2, 2, 3), 255, np.uint8)
    x = prep.normalize(batch)
    assert x.shape == (3, 3, 2, 2) and x.dtype == np.float32 and np.allclose(x, 1.0)


def test_file_hash_changes_with_content(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    h1 = file_hash(tmp_path / "a")
    (tmp_path / "a").write_bytes(b"abd")
    assert file_hash(tmp_path / "a") != h1 and len(h1) == 32
    assert file_hash(None) == file_hash(None) != file_hash(tmp_path / "missing")


@pytest.mark.parametrize("raw,expected", [
    (b"caf\xe9 cr\xe8me", "café crème"),                        # cp1252 / latin-1 bytes, not UTF-8
    ("caf\u00e9".encode("utf-8"), "café"),
    ("Tom &amp; Jerry&#39;s <b>big</b> caf&eacute;", "Tom & Jerry's big café"),
    ("&amp;quot;quoted&amp;quot;", '"quoted"'),
    ("  line\n\n\tbreaks  ", "line breaks"),
    ("nul\x00 and bell\x07", "nul and bell"),
    ("   ", None), ("", None), (None, None), (float("nan"), None),
])
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected


def test_compose_text_and_hash():
    row = {"title": "Toy Story (1995)", "genres": "Animation|Children", "year": "1995", "text": "Woody &amp; Buzz."}
    assert compose_text(row, ("title", "genres", "year", "text")) == \
        "Toy Story (1995). Genres: Animation, Children. Year: 1995. Woody & Buzz."
    assert compose_text({"title": None, "text": " "}, ("title", "text")) is None
    assert text_hash("a") != text_hash("b") and text_hash("a") == text_hash("a")


def test_compose_text_drops_fields_already_in_the_text():
    row = {"title": "Toy Story (1995)", "genres": "Animation, Children's",
           "year": "1995", "text": "Toy Story (1995). Genres: Animation, Children's. Woody."}
    assert compose_text(row, ("title", "genres", "year", "text")) == \
        "Year: 1995. Toy Story (1995). Genres: Animation, Children's. Woody."
