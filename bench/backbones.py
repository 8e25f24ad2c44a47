"""User-tower backbones side by side: seconds per epoch, parameters and peak memory, same data, same variant.

scratch  = the SASRec-sized causal transformer (hidden 64, 2 layers)
smollm2  = the first N layers of pretrained SmolLM2-135M via inputs_embeds (LoRA, or frozen, or full);
           `-bf16`: the same model with the LM's matmuls under bfloat16 autocast (model.llm_dtype;
           weights, adapters and loss stay float32), which CPUs with AVX512-BF16 and GPUs run ~2x faster
Names as `clip4rec compare --backbones` reads them (clip4rec.model.backbone), which measures the same towers'
quality next to their cost.

Each backbone trains a few epochs of the same variant on the same split in its own subprocess, so peak RSS
(ru_maxrss) belongs to that backbone alone. Backbones run one after another, twice, interleaved, and the
faster of the two runs is kept, so background load on a shared machine hurts every backbone alike.
Writes bench/results/backbones.json.

    python bench/backbones.py [--dataset artifacts/ml100k] [--store artifacts/store_ml100k] [--variant text]
                              [--epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_BACKBONES = "scratch,smollm2-2L-lora,smollm2-1L-lora,smollm2-2L-lora-bf16,smollm2-1L-lora-bf16"
TOWER_FIELDS = ("backbone", "llm_layers", "llm_train", "llm_dtype")  # what a backbone name sets


def measure_one(args: argparse.Namespace, name: str) -> dict:
    """Runs in the child process: train `epochs` epochs, report timing and memory."""
    import torch

    from clip4rec.config import Config
    from clip4rec.data.dataset import Dataset
    from clip4rec.model.backbone import parse_backbone
    from clip4rec.model.build import build_model, split_for
    from clip4rec.model.modalities import content_for
    from clip4rec.train.trainer import train_model

    torch.set_num_threads(args.threads)
    cfg = Config(seed=0)
    cfg.model.variant, cfg.model.stores = args.variant, [str(Path(args.store).resolve())] if args.store else []
    cfg.model = parse_backbone(name).apply(cfg.model)
    cfg.train.max_epochs, cfg.train.patience = args.epochs, args.epochs + 1
    dataset = Dataset.load(args.dataset)
    split = split_for(dataset, cfg)
    m = cfg.model
    model = build_model(cfg, split.train_counts, content_for(m.variant, m.stores, m.modalities, split.item_ids))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        result = train_model(model, split, cfg, Path(tmp), progress=False)
    train_s = [h["train_s"] for h in result.history]
    return {"backbone": name, "settings": {k: getattr(m, k) for k in TOWER_FIELDS}, "epochs": result.epochs_run,
            "train_seconds_per_epoch": min(train_s), "epoch_seconds_incl_validation": min(h["epoch_s"] for h in result.history),
            "valid_ndcg@10_last": result.history[-1]["valid_ndcg@10"],
            "parameters_total": total, "parameters_trainable": trainable,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def prepare(dataset: Path, store: Path, data: Path) -> None:
    """Import ML-100K and encode its item-LLM text vectors when they are not there yet (same as `make demo`)."""
    from clip4rec.data.dataset import Dataset
    from clip4rec.encode.pipeline import encode_dataset
    from clip4rec.encode.store import EmbeddingStore
    if not (dataset / "dataset.json").is_file():
        from clip4rec.data.importers import import_dataset
        print(f"importing {data / 'ml100k-posters'} into {dataset}", flush=True)
        import_dataset("ml100k-posters", str(data / "ml100k-posters")).save(dataset)
    if not (store / "manifest.json").is_file() or "item-llm" not in EmbeddingStore.load(store).encoders:
        print(f"encoding item-llm text vectors into {store} (a few minutes)", flush=True)
        encode_dataset(Dataset.load(dataset), "item-llm", store)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=str(ROOT / "artifacts" / "ml100k"))
    ap.add_argument("--store", default=str(ROOT / "artifacts" / "store_ml100k"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="raw data, for the import")
    ap.add_argument("--variant", default="text")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backbones", default=DEFAULT_BACKBONES, help="comma-separated, e.g. scratch,smollm2-2L-frozen")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_one(args, args.child)))
        return
    from clip4rec.model.backbone import parse_backbones
    names = [b.name for b in parse_backbones(args.backbones)]  # a bad name fails here, before any work
    prepare(Path(args.dataset), Path(args.store), Path(args.data))
    load_start = os.getloadavg()  # the machine is shared: say how loaded it was
    best: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for name in names:
            cmd = [sys.executable, __file__, "--child", name, "--dataset", args.dataset, "--store", args.store,
                   "--variant", args.variant, "--epochs", str(args.epochs), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            row = json.loads(out)
            print(f"[{repeat + 1}/{args.repeats}] {name}: {row['train_seconds_per_epoch']:.1f} s/epoch, "
                  f"peak {row['peak_rss_gib']:.2f} GiB", flush=True)
            if name not in best or row["train_seconds_per_epoch"] < best[name]["train_seconds_per_epoch"]:
                best[name] = row
    base = best.get("scratch")
    print(f"\n{'backbone':<20}{'s/epoch':>9}{'vs scratch':>11}{'params':>12}{'trainable':>11}{'peak GiB':>10}")
    for name, row in best.items():
        ratio = row["train_seconds_per_epoch"] / base["train_seconds_per_epoch"] if base else float("nan")
        row["seconds_per_epoch_vs_scratch"] = ratio
        print(f"{name:<20}{row['train_seconds_per_epoch']:>9.1f}{ratio:>11.1f}{row['parameters_total']:>12,}"
              f"{row['parameters_trainable']:>11,}{row['peak_rss_gib']:>10.2f}")
    result = {"bench": "backbones", "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.platform()}",
              "dataset": args.dataset, "store": args.store, "variant": args.variant, "epochs": args.epochs,
              "threads": args.threads, "repeats": args.repeats, "note": "train seconds per epoch exclude validation; "
              "peak RSS is the whole child process (model, data, content tables)",
              "load_average": {"start": load_start, "end": os.getloadavg()}, "results": list(best.values())}
    out_path = HERE / "results" / "backbones.json"
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
