"""Encode pipeline throughput vs the raw model forward, same encoder, same batch size, one process.

raw      = encoder.encode_images on already decoded+resized+normalised batches, plus encoder.encode_texts on
           already composed texts (i.e. the model alone: no file I/O, no decode, no hashing, no shards).
pipeline = clip4rec.encode.encode_dataset end to end on the same items into a fresh store (hashing, parallel
           decode overlapped with the forward, shard writes, final assembly, alignment heads), model load excluded.
ratio    = pipeline items/s / raw items/s   (target >= 0.9)

Runs are interleaved (raw, pipeline, raw, pipeline) and the best of each is kept, so background load on a
shared machine hurts both sides alike. Writes bench/results/encode_throughput.json.

    python bench/encode_throughput.py [--encoder lite] [--items 192] [--batch-size 32] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent))  # tests.support: the generated catalog

from clip4rec.data.dataset import Dataset  # noqa: E402
from clip4rec.encode.encoders import load_encoder  # noqa: E402
from clip4rec.encode.images import load_image  # noqa: E402
from clip4rec.config import EncodeConfig  # noqa: E402
from clip4rec.encode.pipeline import encode_dataset  # noqa: E402
from clip4rec.encode.text import compose_text  # noqa: E402


def catalog(data: Path | None, items: int, tmp: Path) -> tuple[Dataset, str]:
    posters = data or Path(__file__).resolve().parents[2] / "shared" / "data" / "ml100k-posters"
    if (posters / "items.csv").is_file():
        from clip4rec.data.importers import import_dataset
        ds = import_dataset("ml100k-posters", str(posters))
        source = f"ml100k-posters (first {items} items)"
    else:
        from tests.support.catalog import make_catalog
        make_catalog(tmp / "synthetic", n=items, bad=False)
        ds = Dataset.load(tmp / "synthetic" / "dataset")
        source = f"synthetic catalog ({items} items; ML-100K posters not found)"
    sub = ds.items.iloc[:items]
    inter = ds.interactions[ds.interactions.item_id.isin(set(sub.item_id))]
    out = Dataset(sub, inter, meta={"source": source})
    out.save(tmp / "ds")
    return Dataset.load(tmp / "ds"), source


def raw_forward(enc, pixels: list[np.ndarray], texts: list[list[str]]) -> float:
    t0 = time.perf_counter()
    for batch in pixels:
        enc.encode_images(batch)
    for batch in texts:
        enc.encode_texts(batch)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="lite")
    ap.add_argument("--items", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "encode_throughput.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="c4r-bench-"))
    try:
        ds, source = catalog(args.data, args.items, tmp)
        enc = load_encoder(args.encoder)
        rows = ds.items.to_dict("records")
        bs = args.batch_size
        # pre-decode / pre-compose exactly what the pipeline feeds the model (usable inputs only)
        pixels, texts = [], []
        if enc.image_outputs:
            arrs = [a for a, why in (load_image(ds.image_path(r.get("image")), enc.image_prep) for r in rows)
                    if a is not None]
            pixels = [enc.image_prep.normalize(np.stack(arrs[s:s + bs])) for s in range(0, len(arrs), bs)]
        if enc.text_outputs:
            ts = [t for t in (compose_text(r, enc.text_fields) for r in rows) if t]
            texts = [ts[s:s + bs] for s in range(0, len(ts), bs)]
        n = len(rows)
        raw_forward(enc, pixels[:1], texts[:1])  # warm-up (first-call allocations)
        raw_times, pipe_times = [], []
        for rep in range(args.repeats):
            raw_times.append(raw_forward(enc, pixels, texts))
            store = tmp / f"store{rep}"
            t0 = time.perf_counter()
            encode_dataset(ds, encoder=enc, out=store, settings=EncodeConfig(batch_size=bs), progress=False, log=lambda m: None)
            pipe_times.append(time.perf_counter() - t0)
            shutil.rmtree(store, ignore_errors=True)
            print(f"repeat {rep}: raw {raw_times[-1]:.1f}s, pipeline {pipe_times[-1]:.1f}s", flush=True)
        raw_ips, pipe_ips = n / min(raw_times), n / min(pipe_times)
        result = {
            "encoder": enc.name,
            "encoder_is_clip": bool(enc.is_clip),
            "encoder_note": enc.note,
            "data": source,
            "items": n,
            "batch_size": bs,
            "raw_forward_items_per_s": round(raw_ips, 3),
            "pipeline_items_per_s": round(pipe_ips, 3),
            "ratio": round(pipe_ips / raw_ips, 4),
            "target": 0.9,
            "raw_times_s": [round(t, 2) for t in raw_times],
            "pipeline_times_s": [round(t, 2) for t in pipe_times],
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        print(f"encode throughput [{enc.name}{'' if enc.is_clip else ', a stand-in for CLIP, not CLIP'}]: "
              f"pipeline {pipe_ips:.2f} items/s / raw forward {raw_ips:.2f} items/s = {pipe_ips / raw_ips:.3f} "
              f"(target >= 0.9) -> {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
