"""Peer benchmark: clip4rec side by side with RecBole on the same leave-one-out split, in one run.

  1. our leave-one-out split of a Dataset is exported to RecBole atomic files (bench/peer/export.py);
  2. RecBole 1.2.1 (its own venv, .peer-venv, created here once; never a clip4rec dependency) loads and splits
     them itself; the worker (bench/peer/recbole_worker.py) hashes RecBole's (user, target) pairs, trains one
     model with the matched settings under a wall-clock cap, tests it with RecBole's evaluator and exports its
     top-100 per test user as a TREC run;
  3. clip4rec's `id` (and `text`, `fused-id` when --store is given) train with the same settings and cap;
  4. every model's TREC run is scored by clip4rec's evaluator against one qrels file; both toolkits' own
     numbers are kept too; docs/results/peer_<dataset>.{md,json} is written.

Same threads for both toolkits (--threads, default 1). Resumable: a finished (toolkit, model) result in the
work dir is reused when its settings are unchanged.

    .venv/bin/python bench/peer_recbole.py --dataset artifacts/ml100k --store artifacts/store_ml100k
    .venv/bin/python bench/peer_recbole.py --dataset artifacts/beauty --store artifacts/store_beauty
    # smoke: --models SASRec --variants id --cap-minutes 2 --max-epochs 2 --work /tmp/peer --out /tmp/peer-out
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from clip4rec import __version__ as CLIP4REC_VERSION  # noqa: E402
from clip4rec.config import Config  # noqa: E402
from clip4rec.data.dataset import Dataset  # noqa: E402
from clip4rec.data.splits import make_split  # noqa: E402
from clip4rec.evaluate.trec import metrics_from_trec, write_qrels  # noqa: E402
from peer.export import counts_check, export_atomic, split_check  # noqa: E402
from peer.report import render_markdown, summarize  # noqa: E402
from peer.venv import DEFAULT_VENV, ensure_venv  # noqa: E402

WORKER = ROOT / "bench" / "peer" / "recbole_worker.py"
DEPTH = 100  # ranks per test user in every TREC run (clip4rec's eval.run_depth)
KNOWN_IMPORTS = {  # dataset dir name -> (importer, folder under --data), for a dataset not imported yet
    "ml100k": ("ml100k-posters", "ml100k-posters"),
    "beauty": ("amazon-p5", "amazon-beauty"),
}
MATCHED = dict(hidden=64, layers=2, heads=2, dropout=0.5, lr=1e-3, batch_size=256, max_len=50, patience=10)
MATCHED_TEXT = ("hidden 64, 2 layers, 2 heads, dropout 0.5 (hidden and attention), full-softmax CE loss, Adam lr 1e-3, "
                "no weight decay, batch 256 next-item targets, max length 50, early stopping on validation "
                "NDCG@10 with patience 10, full ranking, seen items not excluded")


# ---- RecBole side ------------------------------------------------------------------------------------------
def recbole_params(model: str, eval_batch_size: int) -> dict[str, Any]:
    common = {
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
        # no filtering, no dedup: RecBole must see exactly our interactions
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "rm_dup_inter": None, "val_interval": None, "filter_inter_by_user_or_item": False,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "MAX_ITEM_LIST_LENGTH": MATCHED["max_len"],
        "train_neg_sample_args": None, "loss_type": "CE",
        "learning_rate": MATCHED["lr"], "weight_decay": 0.0, "train_batch_size": MATCHED["batch_size"],
        "eval_batch_size": eval_batch_size, "eval_step": 1,
        # RecBole stops once MORE than stopping_step evaluations in a row did not improve (utils.early_stopping),
        # clip4rec once `patience` did not: stopping_step = patience - 1 is the same 10-epoch patience.
        "stopping_step": MATCHED["patience"] - 1,
        "valid_metric": "NDCG@10", "metrics": ["Recall", "NDCG", "MRR"], "topk": [5, 10, 20],
        "metric_decimal_place": 6, "reproducibility": True, "show_progress": False, "log_wandb": False,
        "save_dataset": False, "save_dataloaders": False, "worker": 0, "use_gpu": False, "gpu_id": "",
        "state": "INFO",
    }
    transformer = {"hidden_size": MATCHED["hidden"], "inner_size": 4 * MATCHED["hidden"],
                   "n_layers": MATCHED["layers"], "n_heads": MATCHED["heads"],
                   "hidden_dropout_prob": MATCHED["dropout"], "attn_dropout_prob": MATCHED["dropout"],
                   "hidden_act": "gelu"}
    per_model = {
        "SASRec": transformer,
        "BERT4Rec": {**transformer, "mask_ratio": 0.2},  # RecBole's default mask ratio
        "GRU4Rec": {"embedding_size": MATCHED["hidden"], "hidden_size": MATCHED["hidden"],
                    "num_layers": MATCHED["layers"], "dropout_prob": MATCHED["dropout"]},
    }
    if model not in per_model:
        raise SystemExit(f"unknown RecBole model {model!r}; choose from {sorted(per_model)}")
    return {**common, **per_model[model]}


def run_recbole(py: Path, model: str, export: dict[str, Any], atomic_root: Path, name: str, work: Path,
                args) -> dict[str, Any]:
    out = work / "recbole" / model
    spec = {"data_path": str(atomic_root), "dataset": name, "model": model,
            "data_sha256": [export["inter_sha256"], export["item_sha256"]],  # other data -> not reused
            "params": recbole_params(model, args.eval_batch_size), "seed": args.seed, "threads": args.threads,
            "cap_s": args.cap_minutes * 60 if args.cap_minutes else None, "max_epochs": args.max_epochs,
            "depth": DEPTH, "out": str(out)}
    result_path = out / "result.json"
    if result_path.exists():
        saved = json.loads(result_path.read_text())
        if saved.get("spec") == spec:
            print(f"== RecBole {model}: reusing {result_path}")
            return saved
        print(f"== RecBole {model}: settings changed, discarding {out}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "spec.json").write_text(json.dumps(spec, indent=2))
    print(f"== RecBole {model}: training (cap {args.cap_minutes} min, log {out / 'worker.log'})", flush=True)
    timeout = (spec["cap_s"] or 24 * 3600) * 2 + 900  # cap + data loading + test + export, generously
    _run_logged([str(py), str(WORKER), str(out / "spec.json")], out / "worker.log", timeout)
    return json.loads(result_path.read_text())


# ---- clip4rec side -----------------------------------------------------------------------------------------
def content_modalities(variant: str, stores: list[Path], has_images: bool, override: list[str] | None,
                       notes: list[str]) -> list[str]:
    """Fully qualified ENCODER:NAME modalities for a content variant, from the variant's defaults and what the
    stores hold. Without images in the dataset, `image` becomes the lite/CLIP `text` modality."""
    from clip4rec.encode.store import EmbeddingStore
    from clip4rec.model.modalities import DEFAULT_MODALITIES
    available: list[tuple[str, str]] = []
    for path in stores:
        st = EmbeddingStore.load(path)
        available += [(enc, m) for enc in st.encoders for m in st.modalities(enc)]

    def qualify(name: str) -> str | None:
        enc, _, mod = name.rpartition(":")
        found = [f"{e}:{m}" for e, m in available if m == mod and (not enc or e == enc)]
        return found[0] if found else None

    wanted = list(override) if override else list(DEFAULT_MODALITIES[variant])
    out: list[str] = []
    for name in wanted:
        if not override and name == "image" and not has_images:
            notes.append(f"`{variant}`: the dataset has no images, so the `image` modality is replaced by the "
                         f"text tower of the image-text encoder (`text`)")
            name = "text"
        q = qualify(name)
        if q is None and not override and name == "llm_text":
            q = qualify("text")
            if q:
                notes.append(f"`{variant}`: no `llm_text` in the stores, used `{q}`")
        if q is None:
            raise SystemExit(f"modality {name!r} for `{variant}` is in none of the stores {[str(s) for s in stores]}")
        if q not in out:
            out.append(q)
    return out


def clip4rec_config(variant: str, stores: list[Path], modalities: list[str], args) -> dict[str, Any]:
    cfg = {
        "seed": args.seed, "split": {"kind": "loo"},
        "model": {"variant": variant, "stores": [str(s) for s in stores], "modalities": modalities,
                  "hidden": MATCHED["hidden"], "layers": MATCHED["layers"], "heads": MATCHED["heads"],
                  "dropout": MATCHED["dropout"], "max_len": MATCHED["max_len"], "backbone": "scratch",
                  "repeat_term": False},  # RecBole's SASRec has none: the same model on both sides
        "train": {"lr": MATCHED["lr"], "weight_decay": 0.0, "batch_size": MATCHED["batch_size"],
                  "max_epochs": args.max_epochs, "patience": MATCHED["patience"],
                  "time_limit_s": args.cap_minutes * 60 if args.cap_minutes else None, "threads": args.threads},
        "eval": {"run_depth": DEPTH, "n_boot": 0, "exclude_seen": False, "ks": [5, 10, 20]},
    }
    return Config.model_validate(cfg).model_dump()


def run_clip4rec(variant: str, ds_dir: Path, cfg: dict[str, Any], work: Path) -> Path:
    run_dir = work / "clip4rec" / variant
    if (run_dir / "config.json").exists():
        saved = json.loads((run_dir / "config.json").read_text())
        if saved["config"] != cfg or saved["dataset"] != str(ds_dir):
            print(f"== clip4rec {variant}: settings changed, discarding {run_dir}")
            shutil.rmtree(run_dir)
        elif (run_dir / "metrics.json").exists():
            print(f"== clip4rec {variant}: reusing {run_dir}")
            return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "clip4rec" / f"{variant}.config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    print(f"== clip4rec {variant}: training (log {run_dir / 'train.log'})", flush=True)
    cap = cfg["train"]["time_limit_s"]
    _run_logged([sys.executable, "-m", "clip4rec.cli", "train", str(ds_dir), "--out", str(run_dir),
                 "--config", str(cfg_path), "--quiet"], run_dir / "train.log", (cap or 24 * 3600) * 2 + 900)
    return run_dir


def clip4rec_entry(variant: str, run_dir: Path, qrels: Path, test_hash: str) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics["split"]["test_pairs_sha256"] != test_hash:
        raise SystemExit(f"{run_dir} was trained on another split than the one exported")
    training = metrics["training"]
    rows: dict[int, dict] = {}
    for line in (run_dir / "train_log.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["epoch"]] = row  # a resumed run may log an epoch twice: keep the last
    history, elapsed = [], 0.0
    for epoch in sorted(rows):
        elapsed += rows[epoch]["epoch_s"]
        history.append({**rows[epoch], "elapsed_s": round(elapsed, 3)})
    best = training["best_epoch"]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    return {
        "toolkit": "clip4rec", "model": variant,
        "test_ours": metrics_from_trec(run_dir / "test.run.trec", qrels),
        "test_own": metrics["metrics"]["overall"],
        "best_epoch": best, "best_valid_ndcg@10": training["best_valid_ndcg@10"],
        "epochs_run": training["epochs_run"], "seconds_per_epoch": training["seconds_per_epoch"],
        "train_seconds": training["train_seconds"], "stopped_by": training["stopped_by"],
        "time_to_best_s": next((h["elapsed_s"] for h in history if h["epoch"] == best), None),
        "parameters": training.get("parameters"), "history": history, "run_dir": str(run_dir),
        "settings": f"clip4rec train, variant {variant}, modalities {config['model']['modalities'] or '-'}, "
                    f"id_dropout {config['model'].get('id_dropout')}, {training.get('parameters')} parameters",
    }


def recbole_entry(result: dict[str, Any], qrels: Path) -> dict[str, Any]:
    run = Path(result["spec"]["out"]) / "test.run.trec"
    params = result["spec"]["params"]
    keys = ("hidden_size", "inner_size", "n_layers", "n_heads", "hidden_dropout_prob", "attn_dropout_prob",
            "embedding_size", "num_layers", "dropout_prob", "mask_ratio", "stopping_step")
    return {
        "toolkit": "recbole", "model": result["model"],
        "test_ours": metrics_from_trec(run, qrels), "test_own": result["own_test_metrics"],
        "best_epoch": result["best_epoch"], "best_valid_ndcg@10": result["best_valid_ndcg@10"],
        "epochs_run": result["epochs_run"], "seconds_per_epoch": result["seconds_per_epoch"],
        "train_seconds": result["train_seconds"], "stopped_by": result["stopped_by"],
        "time_to_best_s": result["time_to_best_s"], "parameters": result["parameters"],
        "history": result["history"], "run_dir": result["spec"]["out"],
        "settings": ", ".join(f"{k} {params[k]}" for k in keys if k in params)
                    + f", {result['parameters']} parameters",
    }


# ---- plumbing ----------------------------------------------------------------------------------------------
def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


THREADS = 1


def _run_logged(cmd: list[str], log: Path, timeout: float) -> None:
    """Run, appending all output to `log`; echo progress lines; fail loudly with the log's tail."""
    started = time.time()
    with log.open("a") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=_thread_env(THREADS), cwd=ROOT)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            if line.startswith(("[peer]", "epoch ")):
                print("   " + line.rstrip(), flush=True)
            if time.time() - started > timeout:
                proc.kill()
                raise SystemExit(f"{cmd[1]} ran past {timeout:.0f}s; see {log}")
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"command failed ({rc}): {shlex.join(cmd)}\n--- tail of {log} ---\n{tail}")


def load_or_import(ds_dir: Path, data: Path) -> Dataset:
    if (ds_dir / "dataset.json").exists():
        return Dataset.load(ds_dir)
    key = next((k for k in KNOWN_IMPORTS if k in ds_dir.name.lower()), None)
    if key is None:
        raise SystemExit(f"{ds_dir} is not a Dataset; create it first, e.g. "
                         f"`clip4rec import generic SRC --out {ds_dir}`")
    fmt, folder = KNOWN_IMPORTS[key]
    src = data / folder
    if not src.exists():
        raise SystemExit(f"{ds_dir} is missing and {src} is not there to import; run "
                         f"`clip4rec import {fmt} PATH/{folder} --out {ds_dir}`")
    print(f"== importing {src} ({fmt}) into {ds_dir}")
    from clip4rec.data.importers import import_dataset
    import_dataset(fmt, str(src)).save(ds_dir)
    return Dataset.load(ds_dir)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "-"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    info["summary"] = f"{cpu}, {info['cpus']} CPUs visible, {platform.system()} {platform.machine()}"
    return info


def parse_modalities(items: list[str]) -> dict[str, list[str]]:
    out = {}
    for item in items:
        variant, _, specs = item.partition("=")
        if not specs:
            raise SystemExit(f"--modalities takes VARIANT=MOD[,MOD], got {item!r}")
        out[variant] = [s for s in specs.split(",") if s]
    return out


def main() -> None:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, required=True, help="clip4rec Dataset directory (imported if missing)")
    ap.add_argument("--name", default=None, help="dataset name in file names (default: the directory's name)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="raw data, for importing")
    ap.add_argument("--store", type=Path, action="append", default=[], help="embedding store (repeatable)")
    ap.add_argument("--models", default="SASRec,GRU4Rec,BERT4Rec", help="RecBole models")
    ap.add_argument("--variants", default="id,text,fused-id", help="clip4rec variants")
    ap.add_argument("--modalities", action="append", default=[], help="VARIANT=ENC:MOD[,ENC:MOD] override")
    ap.add_argument("--cap-minutes", type=float, default=30.0, help="training wall-clock cap per run (0 = none)")
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1, help="threads for every run, both toolkits")
    ap.add_argument("--eval-batch-size", type=int, default=1024, help="RecBole users per full-sort batch")
    ap.add_argument("--work", type=Path, default=None, help="default artifacts/peer/<name>")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the RecBole venv (created if missing)")
    args = ap.parse_args()
    THREADS = args.threads
    started = time.time()

    ds_dir = args.dataset.resolve()
    name = args.name or ds_dir.name
    work = (args.work or ROOT / "artifacts" / "peer" / name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    notes: list[str] = []
    stores = []
    for store in args.store:
        if (store / "manifest.json").is_file():
            stores.append(store.resolve())
        else:
            msg = (f"store {store} not found (create it with `clip4rec encode {args.dataset} --encoder item-llm "
                   f"--out {store}`); content variants cannot use it")
            print("== " + msg)
            notes.append(msg)

    py = ensure_venv(args.venv)
    ds = load_or_import(ds_dir, args.data)
    split = make_split(ds, "loo", seed=args.seed)
    ours_hashes = {"valid_pairs_sha256": split.valid.pairs_hash(split.item_ids),
                   "test_pairs_sha256": split.test.pairs_hash(split.item_ids)}
    atomic_root = work / "atomic"
    export = export_atomic(ds, atomic_root, name)
    qrels = work / "test.qrels.trec"
    write_qrels(qrels, split.test.user_ids, split.test.targets, split.item_ids)
    print(f"== {name}: {export['users']} users, {export['items']} items, {export['interactions']} interactions "
          f"exported to {export['dir']}; test pairs sha256 {ours_hashes['test_pairs_sha256'][:16]}…")

    entries: list[dict[str, Any]] = []
    recbole_results = []
    for model in models:
        result = run_recbole(py, model, export, atomic_root, name, work, args)
        check = split_check(ours_hashes, result)
        if not check["identical"]:
            raise SystemExit(f"RecBole's split differs from ours for {model}: {json.dumps(check, indent=2)}")
        counts = counts_check(export, result["counts"])
        if not counts["equal"]:
            raise SystemExit(f"RecBole dropped or added rows: {json.dumps(counts, indent=2)}")
        recbole_results.append(result)
        entries.append(recbole_entry(result, qrels))

    if recbole_results:
        notes.append("Per epoch both toolkits train on every next-item target once; RecBole feeds one padded "
                     f"{MATCHED['max_len']}-item history per target (its sequential data augmentation), clip4rec "
                     "windows of up to 50 items in which every position is a target, so an epoch costs RecBole "
                     "far more compute")
    has_images = int(ds.items["image"].notna().sum()) > 0
    overrides = parse_modalities(args.modalities)
    for variant in variants:
        mods: list[str] = []
        if variant != "id":
            if not stores:
                msg = f"`{variant}` skipped: no --store given (content variants need an embedding store)"
                print("== " + msg)
                notes.append(msg)
                continue
            mods = content_modalities(variant, stores, has_images, overrides.get(variant), notes)
        cfg = clip4rec_config(variant, stores if variant != "id" else [], mods, args)
        run_dir = run_clip4rec(variant, ds_dir, cfg, work)
        entries.append(clip4rec_entry(variant, run_dir, qrels, ours_hashes["test_pairs_sha256"]))

    if recbole_results:
        check = split_check(ours_hashes, recbole_results[0])
        counts = counts_check(export, recbole_results[0]["counts"])
    else:
        check = {p: {"clip4rec": ours_hashes[f"{p}_pairs_sha256"], "recbole": None, "equal": None}
                 for p in ("valid", "test")} | {"identical": None}
        counts = {"counts": {k: {"clip4rec": export[k], "recbole": None} for k in ("users", "items", "interactions")},
                  "equal": None}
    import torch
    report = {
        "dataset": {"name": name, "dir": str(ds_dir), "export": export},
        "command": ".venv/bin/python bench/peer_recbole.py " + shlex.join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "threads": args.threads,
        "versions": {"clip4rec": CLIP4REC_VERSION, "torch": torch.__version__,
                     **({"recbole": recbole_results[0]["versions"]["recbole"],
                         "recbole_torch": recbole_results[0]["versions"]["torch"]} if recbole_results else {})},
        "caps": {"cap_minutes": args.cap_minutes or None, "max_epochs": args.max_epochs,
                 "rule": "checked before each epoch against the summed epoch seconds (training + validation); "
                         "the best checkpoint so far is tested",
                 "capped_runs": [f"{e['toolkit']} {e['model']}" for e in entries if e["stopped_by"] == "time_limit"]},
        "matched_settings": MATCHED_TEXT,
        "split_check": check, "counts_check": counts,
        "models": entries, "summary": summarize(entries), "notes": notes,
        "bench_wall_s": round(time.time() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"peer_{name}.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / f"peer_{name}.md").write_text(render_markdown(report))
    print(f"\n{'toolkit':9} {'model':9} {'ndcg@10 ours':>12} {'ndcg@10 own':>11} {'best ep':>7} {'s/epoch':>8} "
          f"{'to best s':>9}")
    for e in entries:
        print(f"{e['toolkit']:9} {e['model']:9} {e['test_ours']['ndcg@10']:12.4f} "
              f"{e['test_own'].get('ndcg@10', float('nan')):11.4f} {e['best_epoch']!s:>7} "
              f"{e['seconds_per_epoch'] or 0:8.1f} {e['time_to_best_s'] or 0:9.1f}")
    print(f"split identical: {check['identical']}; goals: {json.dumps(report['summary']['goals'])}")
    print(f"wrote {args.out / f'peer_{name}.md'} and .json")


if __name__ == "__main__":
    main()
