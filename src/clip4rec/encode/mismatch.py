"""Image-text mismatch detection: which listings have an image that does not match their text?

score = - cosine(image, text) in the store's shared space (higher = more suspicious).

* ``clip``: CLIP's own space; nothing is trained.
* ``lite`` (a stand-in for CLIP, NOT CLIP): the space comes from heads learned on the catalog's pairs. Scoring
  an item with heads that were fitted on that very pair would hide its mismatch (the heads learn it), so scores
  are **cross-fitted** by default: items are split into ``crossfit`` folds and each fold is scored by heads
  fitted on the other folds only. ``crossfit=0`` uses the stored heads (fitted on every pair: optimistic for
  matched pairs, blind-ish to mismatches it has memorised).

``swap_auc`` measures the detector: swap the images of a seeded fraction of items (a cycle, so each chosen item
shows another chosen item's image), re-run the same scoring (cross-fitted heads re-fitted on the corrupted
catalog, as a user would) and report the ROC AUC of the score at finding the swapped items.
"""

from __future__ import annotations

import csv
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from clip4rec.encode.store import EmbeddingStore, StoreError, align_file
from clip4rec.files import atomic_write


def _pick_encoder(store: EmbeddingStore, encoder: str | None) -> str:
    if encoder:
        return encoder
    for e in store.encoders:
        entry = store.manifest["encoders"][e]
        if entry.get("shared") or entry.get("alignment"):
            return e
    raise StoreError(f"store {store.root} has no encoder with both image and text vectors (use clip or lite)")


def _inputs(store: EmbeddingStore, enc: str, extra_text: list[str] | None = None
            ) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, dict[str, Any] | None]:
    """ids, image feature dict, text feature dict, both-usable mask, alignment spec (None: already shared).

    ``extra_text`` ("encoder:modality", e.g. "item-llm:llm_text") adds text vectors of another encoder in the
    same store to the learned alignment's text side (lite only; rows are matched by item id)."""
    entry = store.entry(enc)
    if extra_text and entry.get("shared"):
        raise StoreError("extra text features only apply to an encoder with learned alignment heads (lite)")
    if entry.get("shared"):
        im, tm = entry["shared"]
        ids, img, mi = store.vectors(im, enc)
        _, txt, mt = store.vectors(tm, enc)
        return ids, {im: img}, {tm: txt}, mi & mt, None
    from clip4rec.encode.align import AlignmentHeads
    spec = AlignmentHeads.load(align_file(store.root, enc)).spec
    feats, masks, ids = {}, [], None
    for m in spec["image_inputs"] + spec["text_inputs"]:
        ids, v, mk = store.vectors(m, enc)
        feats[m] = v
        masks.append(mk)
    txt = {m: feats[m] for m in spec["text_inputs"]}
    for key in extra_text or []:
        other, _, modality = key.partition(":")
        if not modality:
            raise StoreError(f"extra text {key!r}: write it as ENCODER:MODALITY, e.g. item-llm:llm_text")
        o_ids, o_vec, o_mask = store.vectors(modality, other)
        where = {item_id: r for r, item_id in enumerate(o_ids)}
        rows = np.array([where.get(item_id, -1) for item_id in ids])
        vec = np.zeros((len(ids), o_vec.shape[1]), np.float32)
        vec[rows >= 0] = o_vec[rows[rows >= 0]]
        txt[key] = vec
        masks.append((rows >= 0) & np.where(rows >= 0, o_mask[np.maximum(rows, 0)], False))
    if extra_text:
        spec = {**spec, "text_inputs": list(spec["text_inputs"]) + list(extra_text)}
    both = np.logical_and.reduce(masks)
    return ids, {m: feats[m] for m in spec["image_inputs"]}, txt, both, spec


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def _score(img: dict[str, np.ndarray], txt: dict[str, np.ndarray], spec: dict[str, Any] | None,
           crossfit: int, seed: int, heads_path: Path | None) -> np.ndarray:
    """Suspicion per row (rows = items with both inputs)."""
    n = next(iter(img.values())).shape[0]
    if spec is None:  # already one space (CLIP)
        return -_cos(next(iter(img.values())), next(iter(txt.values())))
    from clip4rec.encode.align import AlignmentHeads, train_heads
    if crossfit <= 1:
        heads = AlignmentHeads.load(heads_path) if heads_path else train_heads(img, txt, spec)[0]
        return -_cos(heads.project("image", img), heads.project("text", txt))
    fold = np.random.default_rng(seed).permutation(n) % crossfit
    scores = np.zeros(n, np.float64)
    for f in range(crossfit):
        tr, te = fold != f, fold == f
        if not te.any():
            continue
        heads, _ = train_heads({m: v[tr] for m, v in img.items()}, {m: v[tr] for m, v in txt.items()}, spec)
        scores[te] = -_cos(heads.project("image", {m: v[te] for m, v in img.items()}),
                           heads.project("text", {m: v[te] for m, v in txt.items()}))
    return scores


def mismatch_scores(store: EmbeddingStore | str, encoder: str | None = None, crossfit: int = 5,
                    seed: int = 0, extra_text: list[str] | None = None) -> tuple[list[str], np.ndarray, str]:
    """(item ids having both an image and a text, suspicion scores, encoder used)."""
    if not isinstance(store, EmbeddingStore):
        store = EmbeddingStore.load(store)
    enc = _pick_encoder(store, encoder)
    ids, img, txt, both, spec = _inputs(store, enc, extra_text)
    if extra_text and crossfit <= 1:
        raise StoreError("extra text features need cross-fitted heads (crossfit >= 2): the stored heads do not use them")
    rows = np.flatnonzero(both)
    scores = _score({m: np.asarray(v)[rows] for m, v in img.items()}, {m: np.asarray(v)[rows] for m, v in txt.items()},
                    spec, crossfit, seed, align_file(store.root, enc) if crossfit <= 1 else None)
    return [ids[i] for i in rows], scores, enc


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import rankdata
    labels = np.asarray(labels, bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if not n1 or not n0:
        raise ValueError("ROC AUC needs both positives and negatives")
    r = rankdata(scores)
    return float((r[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def swap_auc(store: EmbeddingStore | str, frac: float = 0.05, seed: int = 0, encoder: str | None = None,
             crossfit: int = 5, extra_text: list[str] | None = None) -> dict[str, Any]:
    """Inject image swaps into a seeded ``frac`` of items and measure the detector's ROC AUC."""
    if not isinstance(store, EmbeddingStore):
        store = EmbeddingStore.load(store)
    enc = _pick_encoder(store, encoder)
    ids, img, txt, both, spec = _inputs(store, enc, extra_text)
    rows = np.flatnonzero(both)
    n = len(rows)
    rng = np.random.default_rng(seed)
    k = max(2, int(round(frac * n)))
    chosen = rng.choice(n, k, replace=False)
    perm = np.arange(n)
    perm[chosen] = np.roll(chosen, 1)  # a cycle: every chosen item now shows another chosen item's image
    labels = np.zeros(n, bool)
    labels[chosen] = True
    img_sw = {m: np.asarray(v)[rows][perm] for m, v in img.items()}
    txt_rows = {m: np.asarray(v)[rows] for m, v in txt.items()}
    scores = _score(img_sw, txt_rows, spec, crossfit, seed + 1, None)
    return {"encoder": enc, "is_clip": bool(store.entry(enc).get("is_clip")), "items": n, "swapped": int(k),
            "frac": frac, "seed": seed, "crossfit": crossfit if spec is not None else None,
            "method": (spec or {}).get("method", "clip cosine"), "text_inputs": (spec or {}).get("text_inputs"),
            "image_inputs": (spec or {}).get("image_inputs"), "auc": roc_auc(scores, labels)}


def write_report(store: EmbeddingStore | str, out: str | os.PathLike[str], top: int = 24, encoder: str | None = None,
                 crossfit: int = 5, seed: int = 0, dataset: str | None = None,
                 extra_text: list[str] | None = None) -> dict[str, Any]:
    """DIR/mismatch.csv (item_id,score for every item with both, most suspicious first) + contact sheet PNG."""
    if not isinstance(store, EmbeddingStore):
        store = EmbeddingStore.load(store)
    ids, scores, enc = mismatch_scores(store, encoder, crossfit, seed, extra_text)
    order = np.argsort(-scores, kind="stable")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["item_id", "score"])
            for i in order:
                w.writerow([ids[i], f"{scores[i]:.6f}"])

    atomic_write(out / "mismatch.csv", write_csv)
    worst = [(ids[i], float(scores[i])) for i in order[:top]]
    sheet = None
    ds_dir = dataset or store.entry(enc).get("dataset")
    if ds_dir and Path(ds_dir).exists() and worst:
        sheet = contact_sheet(worst, ds_dir, out / "mismatch_top.png", store.entry(enc).get("text_fields"))
    return {"encoder": enc, "items_scored": len(ids), "csv": str(out / "mismatch.csv"),
            "contact_sheet": str(sheet) if sheet else None, "worst": worst}


DEJAVU_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)  # Debian's fonts-dejavu-core


def sheet_font(size: int = 10):
    """DejaVu Sans: PIL's default font draws "–" or "ê" as boxes. matplotlib (a dependency) bundles DejaVu;
    Debian's copy is the second choice, PIL's default the last."""
    from PIL import ImageFont
    candidates = list(DEJAVU_PATHS)
    try:
        import matplotlib
        candidates.insert(0, str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"))
    except ImportError:
        pass
    for path in candidates:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default()


def contact_sheet(worst: list[tuple[str, float]], dataset_dir: str | os.PathLike[str], path: Path,
                  text_fields: list[str] | None = None, thumb: tuple[int, int] = (92, 138), cols: int = 4) -> Path:
    """A PNG grid: each cell = the item's image, id, score and the start of its text."""
    from PIL import Image, ImageDraw, ImageFont

    from clip4rec.data.dataset import Dataset
    from clip4rec.encode.images import ImagePrep, load_image
    from clip4rec.encode.text import compose_text

    ds = Dataset.load(dataset_dir)
    by_id = ds.items.set_index("item_id")
    tw, th = thumb
    cell_w, cell_h = tw + 260, th + 16
    rows = (len(worst) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = sheet_font()
    prep = ImagePrep(size=(th, tw), mode="squash")
    for k, (item_id, score) in enumerate(worst):
        x0, y0 = (k % cols) * cell_w, (k // cols) * cell_h
        row = by_id.loc[item_id] if item_id in by_id.index else None
        if row is not None:
            arr, why = load_image(ds.image_path(row.get("image")), prep)
            if arr is not None:
                sheet.paste(Image.fromarray(arr), (x0 + 4, y0 + 4))
            text = compose_text({"item_id": item_id, **row.to_dict()}, text_fields or ("title", "text")) or "(no text)"
        else:
            text = "(not in dataset)"
        draw.text((x0 + tw + 10, y0 + 4), f"{item_id}  score {score:+.3f}", fill="red", font=font)
        lines = textwrap.wrap(text, 40)[:10]
        for j, line in enumerate(lines):
            draw.text((x0 + tw + 10, y0 + 18 + 12 * j), line, fill="black", font=font)
    # The temporary name has no .png suffix: PIL is told the format.
    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
