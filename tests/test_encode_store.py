"""Encode pipeline + EmbeddingStore with a tiny randomly initialised CLIPModel (real loading code path):
bad inputs masked and listed, kill -9 resume, refresh, manifest, similar, mismatch, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")

from clip4rec.config import EncodeConfig, EngineConfig
from clip4rec.data.dataset import Dataset
from clip4rec.encode import EmbeddingStore, encode_dataset
from clip4rec.encode.encoders import load_encoder
from tests.support.catalog import BAD_IMAGE_REASONS

BATCH8 = EncodeConfig(batch_size=8)

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")


def _files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.glob("*.safetensors"))}


def test_clip_encoder_matches_processor_and_is_frozen(tiny_clip):
    import torch
    from PIL import Image
    from transformers import AutoProcessor

    enc = load_encoder(str(tiny_clip))  # a folder with a CLIP config resolves to the clip encoder
    assert enc.name == "clip" and enc.is_clip and enc.shared == ("image", "text")
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8))
    from clip4rec.encode.images import load_image
    im.save(tiny_clip.parent / "probe.png")
    arr, why = load_image(tiny_clip.parent / "probe.png", enc.image_prep)
    ours = enc.image_prep.normalize(arr[None])
    theirs = AutoProcessor.from_pretrained(tiny_clip)(images=[im], return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 0.05  # same geometry + normalisation (resize rounding aside)
    v = enc.encode_images(ours)["image"]
    t = enc.encode_texts(["a film about space", "a love story"])["text"]
    assert v.shape == (1, 16) and t.shape == (2, 16)
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = enc.model.get_image_features(pixel_values=torch.from_numpy(theirs))
        ref = ref if hasattr(ref, "shape") else ref.pooler_output
    ref = ref.numpy() / np.linalg.norm(ref.numpy(), axis=1, keepdims=True)
    assert float((ref * v).sum()) > 0.99


def test_auto_prefers_clip_when_available(tiny_clip, monkeypatch):
    from clip4rec.encode.encoders import resolve_auto
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, opts, reason = resolve_auto(str(tiny_clip), log=lambda m: None)
    assert name == "clip" and opts == {"model": str(tiny_clip)} and "auto -> clip" in reason
    name, opts, reason = resolve_auto("no-such-org/no-such-clip", log=lambda m: None)
    assert name == "lite" and "NOT CLIP" in reason


def test_encode_masks_and_lists_bad_inputs(tiny_clip, catalog, tmp_path):
    out = tmp_path / "store"
    rep = encode_dataset(catalog, encoder=str(tiny_clip), out=out, settings=BATCH8, progress=False, log=lambda m: None)
    n = len(Dataset.load(catalog).items)
    assert rep.items == n and rep.encoded == {"image": n, "text": n} and rep.items_reencoded == n
    bad_img = rep.bad_inputs["image"]
    assert set(bad_img) == set(BAD_IMAGE_REASONS)
    for item_id, reason in BAD_IMAGE_REASONS.items():
        assert bad_img[item_id].startswith(reason), (item_id, bad_img[item_id])
    assert rep.bad_inputs["text"] == {"t_empty": "empty text"}

    store = EmbeddingStore.load(out)
    ids, img, mask = store.vectors("image")
    assert ids == Dataset.load(catalog).items["item_id"].tolist()
    assert img.dtype == np.float32 and img.shape == (n, 16)
    for item_id in BAD_IMAGE_REASONS:
        assert not mask[ids.index(item_id)] and not img[ids.index(item_id)].any()
    for item_id in ("g_cmyk", "g_alpha", "g_palette", "m0"):
        assert mask[ids.index(item_id)] and np.isclose(np.linalg.norm(img[ids.index(item_id)]), 1.0, atol=1e-5)
    _, txt, tmask = store.vectors("text")
    assert tmask.sum() == n - 1 and not tmask[ids.index("t_empty")]
    m = store.manifest["encoders"]["clip"]
    assert m["is_clip"] and m["dims"] == {"image": 16, "text": 16} and m["identity"]["model"] == str(tiny_clip)
    assert m["counts"]["image"] == {"usable": n - len(BAD_IMAGE_REASONS), "bad": len(BAD_IMAGE_REASONS)}
    assert m["bad_inputs"]["image"]["b_empty"] == "empty file"
    assert {"torch", "transformers", "numpy"} <= set(m["versions"]) and m["created"]
    assert not (out / ".work").exists()
    # the files are ordinary safetensors
    from safetensors.numpy import load_file
    raw = load_file(str(out / "clip.image.safetensors"))
    assert np.array_equal(raw["vectors"], img) and raw["hash"].shape == (n, 32)
    # re-running changes nothing and encodes nothing
    before = _files(out)
    rep2 = encode_dataset(catalog, encoder=str(tiny_clip), out=out, settings=BATCH8, progress=False, log=lambda m: None)
    assert rep2.items_reencoded == 0 and rep2.encoded == {"image": 0, "text": 0}
    assert _files(out) == before


def _encode_cmd(dataset: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "clip4rec.encode", "encode", str(dataset), "--encoder", str(model),
            "--out", str(out), "--batch-size", "4", "--quiet", "--workers", "2"]


@pytest.mark.slow  # two fresh Python processes (the killed encode, the CLI resume)
def test_kill9_mid_encode_then_resume_equals_uninterrupted_run(tiny_clip, catalog, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    # reference: one uninterrupted run (in-process: same code, same batch plan)
    encode_dataset(catalog, encoder=str(tiny_clip), out=ref, settings=EncodeConfig(batch_size=4, engine=EngineConfig(workers=2)), progress=False,
                   log=lambda m: None)

    # the same encode, pausing after each shard (tests/support/slow_encode.py), so that it is killed mid-way
    slow = [sys.executable, "-m", "tests.support.slow_encode", str(catalog), str(tiny_clip), str(killed)]
    proc = subprocess.Popen(slow, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = killed / ".work" / "clip"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("image-*/shard-*.safetensors"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # kill -9, mid-encode
    proc.wait()
    shards = list(work.glob("*/shard-*.safetensors"))
    assert 2 <= len(shards) and not (killed / "manifest.json").exists(), "killed before it finished"

    res = subprocess.run(_encode_cmd(catalog, tiny_clip, killed), env=env, capture_output=True, text=True, check=True)
    assert "resuming" in res.stderr
    a, b = EmbeddingStore.load(ref), EmbeddingStore.load(killed)
    for modality in ("image", "text"):
        ia, va, ma = a.vectors(modality)
        ib, vb, mb = b.vectors(modality)
        assert ia == ib and len(set(ib)) == len(ib)  # same ids, none lost or duplicated
        assert np.array_equal(va, vb) and np.array_equal(ma, mb)  # bit-identical vectors
        assert np.array_equal(a.file(modality).hash, b.file(modality).hash)
    assert _files(ref) == _files(killed)
    assert a.bad_inputs() == b.bad_inputs()
    assert not (killed / ".work").exists()


def test_refresh_reencodes_only_changed_and_new_items(tiny_clip, catalog, tmp_path):
    out = tmp_path / "store"
    encode_dataset(catalog, encoder=str(tiny_clip), out=out, settings=BATCH8, progress=False, log=lambda m: None)
    old = EmbeddingStore.load(out)
    old_img, old_txt = old.vectors("image"), old.vectors("text")

    ds = Dataset.load(catalog)
    items = ds.items.copy()
    items.loc[items.item_id == "m3", "text"] = "A completely different plot about pirates."
    items.loc[items.item_id == "m7", "text"] = "Now a documentary about bees."
    new = items.iloc[[0]].copy()
    new["item_id"] = "m_new"
    new["text"] = "A brand new item."
    items = pd.concat([items, new], ignore_index=True)
    ds2 = Dataset(items, ds.interactions, meta=ds.meta, root=ds.root)
    rep = encode_dataset(ds2, encoder=str(tiny_clip), out=out, settings=BATCH8, progress=False, log=lambda m: None)
    assert rep.items_reencoded == 3
    assert rep.encoded == {"image": 1, "text": 3} and rep.reused == {"image": len(items) - 1, "text": len(items) - 3}
    store = EmbeddingStore.load(out)
    assert store.manifest["encoders"]["clip"]["last_run"]["items_reencoded"] == 3
    ids, img, _ = store.vectors("image")
    _, txt, _ = store.vectors("text")
    assert ids == old_img[0] + ["m_new"]
    changed = {"m3", "m7", "m_new"}
    for i, item_id in enumerate(old_img[0]):
        assert img[i].tobytes() == old_img[1][i].tobytes()  # images: all untouched
        if item_id not in changed:
            assert txt[i].tobytes() == old_txt[1][i].tobytes()  # byte-identical
        else:
            assert not np.array_equal(txt[i], old_txt[1][i])
    # the new item's image is m0's file: same input, same vector (fresh batch, same numbers up to float noise)
    assert np.allclose(img[ids.index("m_new")], img[ids.index("m0")], atol=1e-5)


def test_duplicate_item_ids_stop_with_clear_message(tmp_path):
    from clip4rec.data.dataset import DatasetError
    items = pd.DataFrame({"item_id": ["a", "a"], "title": ["x", "y"]})
    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]})
    with pytest.raises(DatasetError, match="duplicate item_id"):
        Dataset(items, inter)


def test_similar_and_mismatch_and_cli(tiny_clip, catalog, tmp_path):
    from typer.testing import CliRunner

    from clip4rec.encode.cli import make_app
    from clip4rec.encode.mismatch import swap_auc
    from clip4rec.encode.similar import similar_items

    out = tmp_path / "store"
    runner = CliRunner()
    app = make_app()
    res = runner.invoke(app, ["encode", str(catalog), "--encoder", str(tiny_clip), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "without a usable image" in res.output and "b_truncated" in res.output

    store = EmbeddingStore.load(out)
    # g_alpha (fully transparent -> white) and the white... every cosine is exact: check against numpy
    ids, img, mask = store.vectors("image")
    hits = similar_items(store, "m0", by="image", k=5)
    assert len(hits) == 5 and "m0" not in [h["item_id"] for h in hits]
    sims = img @ img[ids.index("m0")]
    sims[~mask] = -np.inf
    sims[ids.index("m0")] = -np.inf
    assert [h["item_id"] for h in hits] == [ids[i] for i in np.argsort(-sims, kind="stable")[:5]]
    assert all(h["item_id"] not in BAD_IMAGE_REASONS for h in hits)
    fused = similar_items(store, "m0", by="fused", k=3)
    assert len(fused) == 3
    res = runner.invoke(app, ["similar", str(out), "m0", "--by", "text", "--k", "3", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)) == 3
    res = runner.invoke(app, ["similar", str(out), "b_empty", "--by", "image"])
    assert res.exit_code == 2 and "no usable image" in res.output

    mdir = tmp_path / "mm"
    res = runner.invoke(app, ["mismatch", str(out), "--out", str(mdir), "--top", "6"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(mdir / "mismatch.csv", dtype={"item_id": str})
    assert list(table.columns) == ["item_id", "score"]
    _, _, tmask = store.vectors("text")
    assert set(table.item_id) == {i for i, a, b in zip(ids, mask, tmask) if a and b}
    assert table.score.is_monotonic_decreasing
    i0 = ids.index(table.item_id[0])
    _, txt, _ = store.vectors("text")
    assert np.isclose(table.score[0], -float(img[i0] @ txt[i0]), atol=1e-5)
    from PIL import Image
    assert Image.open(mdir / "mismatch_top.png").size[0] > 100
    ev = swap_auc(store, frac=0.2, seed=0)
    assert ev["encoder"] == "clip" and ev["swapped"] >= 2 and 0.0 <= ev["auc"] <= 1.0


@pytest.mark.slow  # spawns decode worker processes
def test_process_decode_workers_give_the_same_store(tiny_clip, catalog, tmp_path):
    a, b = tmp_path / "threads", tmp_path / "procs"
    encode_dataset(catalog, encoder=str(tiny_clip), out=a, settings=EncodeConfig(batch_size=8, engine=EngineConfig(workers=2, decode="thread")),
                   progress=False, log=lambda m: None)
    encode_dataset(catalog, encoder=str(tiny_clip), out=b, settings=EncodeConfig(batch_size=8, engine=EngineConfig(workers=2, decode="process")),
                   progress=False, log=lambda m: None)
    assert _files(a) == _files(b)


def test_contact_sheet_font_draws_dashes_and_accents():
    from clip4rec.encode.mismatch import sheet_font
    font = sheet_font()
    assert Path(font.path).name == "DejaVuSans.ttf"
    def drawn(text: str) -> bytes:
        from PIL import Image, ImageDraw
        img = Image.new("L", (20, 20))
        ImageDraw.Draw(img).text((2, 2), text, fill=255, font=font)
        return img.tobytes()

    missing = drawn("\ue000")  # a private-use code point: the "no glyph" box
    for ch in "–êé—’":
        assert drawn(ch) != missing, ch
