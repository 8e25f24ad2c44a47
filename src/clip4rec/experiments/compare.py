"""`clip4rec compare`: train every (split, variant, backbone, seed) cell, then aggregate, test and report.

REPORT/runs/{split}/{variant}/seed{S}/   one Run directory per cell (a finished cell is never re-run); the
                                         scratch tower's, or a training-free variant's (pop, content-knn)
REPORT/runs/{split}/{variant}/{backbone}/seed{S}/   an LLM tower's (e.g. backbone smollm2-2L-lora)
REPORT/report.json                       everything: command, configs, dataset, encoders, aggregates, tests, goals
REPORT/report.md                         tables rendered from report.json (``experiments.report``)
REPORT/*.png                             NDCG@10 by segment per split; training time per variant

Two kinds of interval, both kept: the t-interval over seeds (how much the result moves when training is
repeated: "mean [lo, hi]" in the tables) and each seed's bootstrap CI over users from its metrics.json
(used as the interval when there is a single seed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clip4rec.config import Config
from clip4rec.evaluate.significance import t_interval
from clip4rec.experiments import plots, towers
from clip4rec.experiments.arms import Arm, cell_dir, grid_arms, paired_tests
from clip4rec.experiments.pipeline import fit_content_weight_of_finished, train_and_evaluate
from clip4rec.experiments.report import PROTOCOL_METRICS, SEGMENTS, TRAINING_FIELDS, render_markdown
from clip4rec.files import write_json, write_text
from clip4rec.machine import versions
from clip4rec.model.backbone import Backbone, parse_backbones
from clip4rec.model.build import VARIANTS
from clip4rec.train.run import made_with

SPLITS = ("loo", "cold")
BASELINES = ("text", "id", "content-knn")
CONTENT_VARIANTS = ("text", "image", "fused", "fused-id")  # trained on content vectors
Log = Callable[[str], None]


# ---- the grid ---------------------------------------------------------------------------------------
def cell_config(base: Config, split: str, variant: str, seed: int, stores: Sequence[str],
                backbone: Backbone | None = None) -> Config:
    """The base config with this cell's split, variant and seed (and the stores and tower, when given)."""
    cfg = base.model_copy(deep=True)
    cfg.seed, cfg.split.kind, cfg.model.variant = seed, split, variant
    if stores:
        cfg.model.stores = [str(Path(s).resolve()) for s in stores]
    if backbone is not None:
        cfg.model = backbone.apply(cfg.model)
    return cfg


def item_vector_sources(config: Config) -> list[str]:
    """The "encoder:modality" content tables a variant's item vectors are made from ([] = learned IDs only).

    Resolved from the stores' manifests before any training, so that a missing modality fails in seconds,
    not after hours of other cells; mirrors the lookup in ``model.modalities.load_modalities``.
    """
    from clip4rec.encode.store import EmbeddingStore
    from clip4rec.model.modalities import default_modalities
    m = config.model
    if m.variant in ("id", "pop"):
        return []
    if not m.stores:
        raise ValueError(f"variant {m.variant!r} reads content vectors: pass --store (from `clip4rec encode`)")
    opened = [EmbeddingStore.load(s) for s in m.stores]
    sources = []
    for spec in m.modalities or default_modalities(m.variant, m.stores):
        encoder, _, name = spec.rpartition(":")
        found = [enc for st in opened for enc in st.encoders
                 if (not encoder or enc == encoder) and name in st.modalities(enc)]
        if len(found) != 1:
            raise ValueError(f"variant {m.variant!r}: modality {spec!r} is in {len(found)} encoders of the stores "
                             f"{m.stores} ({found}); it must be in exactly one (write ENCODER:{name})")
        sources.append(f"{found[0]}:{name}")
    return sources


def store_encoders(stores: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per store, per encoder: what made the vectors (the manifest's "encoders" entries, minus bulky fields)."""
    from clip4rec.encode.store import read_manifest
    keep = ("encoder", "is_clip", "stand_in_for_clip", "note", "identity", "settings", "dims", "fingerprint",
            "items", "updated")
    return {str(s): {name: {k: entry.get(k) for k in keep}
                     for name, entry in read_manifest(s).get("encoders", {}).items()} for s in stores}


def run_cell(dataset: Any, run_dir: Path, config: Config, progress: bool) -> tuple[dict[str, Any], bool]:
    """(metrics, trained_now). A cell with metrics.json is finished; it is reused only if it was made with
    this exact config and dataset, so a report never mixes settings."""
    done = run_dir / "metrics.json"
    if done.exists():
        if not made_with(json.loads((run_dir / "config.json").read_text()), config, dataset):
            raise ValueError(f"{run_dir} holds a finished run with another config or dataset; "
                             "use a new --out or the settings it was made with")
        fit_content_weight_of_finished(run_dir, progress=progress)  # a Run trained before that step existed
        return json.loads(done.read_text()), False
    train_and_evaluate(dataset, run_dir, config, progress=progress)
    # Read back what was written, so fresh and reused cells go through the same (JSON-clean) numbers.
    return json.loads(done.read_text()), True


# ---- aggregation ------------------------------------------------------------------------------------
def seed_summary(values: Sequence[float | None], boot: Sequence[Sequence[float] | None] | None = None,
                 alpha: float = 0.05) -> dict[str, Any] | None:
    """Mean over seeds with a t-interval (>= 2 seeds); with one seed the interval is its bootstrap CI.
    None when any seed lacks the value (e.g. the cold segment of a leave-one-out split is empty)."""
    if not values or any(v is None for v in values):
        return None
    x = np.asarray(values, dtype=np.float64)
    n, mean = len(x), float(x.mean())
    out: dict[str, Any] = {"mean": mean, "n": n, "sd": float(x.std(ddof=1)) if n > 1 else None,
                           "ci": None, "ci_kind": None, "per_seed": [float(v) for v in x]}
    if boot is not None:
        out["per_seed_bootstrap_ci"] = [list(b) if b is not None else None for b in boot]
    if n >= 2:
        out["ci"], out["ci_kind"] = list(t_interval(x, alpha)), "t over seeds"
    elif boot is not None and boot[0] is not None:
        out["ci"], out["ci_kind"] = list(boot[0]), "bootstrap over users (one seed)"
    return out


def aggregate_cells(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate of one (split, variant) over its seeds; ``runs`` are the seeds' metrics.json dicts."""
    segments: dict[str, Any] = {}
    for seg in SEGMENTS:
        if any(r["metrics"].get(seg) is None for r in runs):
            segments[seg] = None
            continue
        names = list(runs[0]["metrics"][seg])
        segments[seg] = {m: seed_summary([r["metrics"][seg][m] for r in runs],
                                         [((r.get("ci") or {}).get(seg) or {}).get(m) for r in runs])
                         for m in names}
    beyond = {k: seed_summary([r["beyond"].get(k) for r in runs]) for k in runs[0].get("beyond", {})}
    other = None
    if all(r.get("other_protocol") for r in runs):  # Runs evaluated before it existed have none
        other = {"exclude_seen": runs[0]["other_protocol"]["exclude_seen"],
                 "metrics": {seg: {m: seed_summary([r["other_protocol"]["metrics"][seg][m] for r in runs])
                                   for m in PROTOCOL_METRICS}
                             for seg in ("overall", "cold") if all(r["other_protocol"]["metrics"].get(seg) for r in runs)}}
    training = [r.get("training") or {} for r in runs]
    return {
        "n_seeds": len(runs),
        "counts": {seg: [r["counts"].get(seg) for r in runs] for seg in SEGMENTS},
        "metrics": segments,
        "beyond": beyond,
        "training": {**{f: seed_summary([t.get(f) for t in training]) for f in TRAINING_FIELDS},
                     **training_costs(training)},
        "parameters": _one_or_all([t.get("parameters") for t in training]),
        "parameters_trainable": _one_or_all([t.get("parameters_trainable") for t in training]),
        "peak_memory_kind": _one_or_all([(t.get("peak_memory") or {}).get("kind") for t in training]),
        "other_protocol": other,
        "knn_fit": knn_fits(training),
        "cold_boost": cold_boosts(training),
        # What a recipe is chosen by (never the test): validation NDCG@10 over all validation cases.
        "valid_ndcg@10": seed_summary([((r.get("valid") or {}).get("metrics", {}).get("overall") or {}).get("ndcg@10")
                                       for r in runs]),
    }


def knn_fits(training: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Per seed, what train.calibrate chose for the knn term on validation (content weight, profile recency, the
    paired p of the best setting against the trained one), and the rule it was chosen by. None for a variant
    without a content term."""
    fits = [t.get("content_weight") for t in training]
    if not any(fits):
        return None
    return {"rule": _one_or_all([f.get("rule") for f in fits if f]),
            "weight": [f.get("chosen") if f else None for f in fits],
            "recency": [f.get("chosen_recency", 1.0) if f else None for f in fits],  # older Runs fitted weight only
            "paired_p": [f.get("paired_p") if f else None for f in fits]}


def cold_boosts(training: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Per seed, the cold boost train.calibrate kept for model.cold_floor, whether it reached the floor, and the
    validation cold and warm R@10 at it. None for Runs trained without a cold floor."""
    fits = [t.get("cold_boost") for t in training]
    if not any(fits):
        return None

    def at_chosen(f: dict[str, Any] | None, key: str) -> float | None:
        return f[key][f["boosts"].index(f["chosen"])] if f else None
    return {"floor": _one_or_all([f.get("floor") for f in fits if f]),
            "boost": [f.get("chosen") if f else None for f in fits],
            "reached": [f.get("reached") if f else None for f in fits],
            "valid_cold_recall@10": [at_chosen(f, "valid_cold_recall@10") for f in fits],
            "valid_warm_recall@10": [at_chosen(f, "valid_warm_recall@10") for f in fits]}


def _one_or_all(values: Sequence[Any]) -> Any:
    """The seeds' common value, or their distinct values sorted (None when no seed recorded one)."""
    found = sorted({v for v in values if v is not None})
    return found[0] if len(found) == 1 else found or None


def training_costs(training: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a tower costs to train, over seeds: the median epoch's training seconds (validation left out, so a
    tower's cost is not diluted by ranking; the median, so one epoch slowed by a busy machine does not count)
    and the peak memory (train.memory). None where a Run did not record it (training-free, or older Runs)."""
    def median_train_s(t: dict[str, Any]) -> float | None:
        times = [h["train_s"] for h in t.get("history") or [] if "train_s" in h]
        return float(np.median(times)) if times else None

    def peak_gib(t: dict[str, Any]) -> float | None:
        peak = t.get("peak_memory")
        return peak["bytes"] / 2**30 if peak else None

    return {"train_seconds_per_epoch": seed_summary([median_train_s(t) for t in training]),
            "peak_memory_gib": seed_summary([peak_gib(t) for t in training])}


def significance(out: Path, split: str, arms: Sequence[Arm], seeds: Sequence[int]) -> dict[str, Any]:
    """Each arm against each baseline variant present with the same tower ("vs_text", "vs_id", and for an LLM
    tower "vs_id/smollm2-2L-lora"); a training-free baseline (content-knn) and training-free arms pair with
    every tower. Paired per-user tests, seeds pooled."""
    result: dict[str, Any] = {}
    for variant in BASELINES:
        for base in (a for a in arms if a.variant == variant):
            result[f"vs_{base.key}"] = {a.key: paired_tests(out, split, a.key, base.key, seeds)
                                        for a in arms if a != base and _same_tower(a, base)}
    return result


def _same_tower(a: Arm, b: Arm) -> bool:
    """Paired in the variant tests: the same tower, or either has none (pop, content-knn)."""
    return a.backbone == b.backbone or None in (a.backbone, b.backbone)


# ---- goals (the targets, computed from the aggregate) ----------------------------------------
def _mean(agg: dict[str, Any], split: str, variant: str, segment: str, metric: str) -> float | None:
    seg = ((agg.get(split) or {}).get(variant) or {}).get("metrics", {}).get(segment)
    return seg[metric]["mean"] if seg and seg.get(metric) else None


def best_content_variant(agg: dict[str, Any], split: str) -> str | None:
    """The trained content variant with the best validation NDCG@10 in this split (chosen without the test)."""
    scored = [(((agg[split][v].get("valid_ndcg@10") or {}).get("mean")), v) for v in CONTENT_VARIANTS if v in agg[split]]
    scored = [(x, v) for x, v in scored if x is not None]
    return max(scored)[1] if scored else None


def _best_vs_knn_cold(agg: dict[str, Any], split: str) -> tuple[float | None, float | None]:
    best = best_content_variant(agg, split)
    if best is None:
        return None, None
    return _mean(agg, split, best, "cold", "recall@10"), _mean(agg, split, "content-knn", "cold", "recall@10")


def goals(agg: dict[str, Any], sig: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per (goal, split) that can be evaluated; a goal no split can evaluate gets one row, met None.
    `sig` (compare's significance block): the fused-id vs id goal also needs a paired t p < 0.05."""
    specs = [
        ("content_vs_knn_cold", "best trained content variant (by validation NDCG@10) cold R@10 >= 1.5 x content-knn",
         1.50, lambda s: _best_vs_knn_cold(agg, s), ("best content cold recall@10", "content-knn cold recall@10"),
         "needs content-knn, a trained content variant and the cold split"),
        ("fused_id_vs_id", "fused-id NDCG@10 >= 1.05 x id (overall), paired t p < 0.05", 1.05,
         lambda s: (_mean(agg, s, "fused-id", "overall", "ndcg@10"), _mean(agg, s, "id", "overall", "ndcg@10")),
         ("fused-id ndcg@10", "id ndcg@10"), "needs variants fused-id and id"),
        ("fused_id_tail", "fused-id tail R@10 >= 1.3 x id", 1.30,
         lambda s: (_mean(agg, s, "fused-id", "tail", "recall@10"), _mean(agg, s, "id", "tail", "recall@10")),
         ("fused-id tail recall@10", "id tail recall@10"), "needs variants fused-id and id"),
        ("fused_vs_text", "fused NDCG@10 >= +10% over text (overall)", 1.10,
         lambda s: (_mean(agg, s, "fused", "overall", "ndcg@10"), _mean(agg, s, "text", "overall", "ndcg@10")),
         ("fused ndcg@10", "text ndcg@10"), "needs variants fused and text"),
        ("fused_id_cold", "fused-id cold R@10 >= 0.5 x its warm R@10", 0.50,
         lambda s: (_mean(agg, s, "fused-id", "cold", "recall@10"), _mean(agg, s, "fused-id", "warm", "recall@10")),
         ("fused-id cold recall@10", "fused-id warm recall@10"), "needs variant fused-id and the cold split"),
        ("fused_id_head", "fused-id head NDCG@10 within -2% of id", 0.98,
         lambda s: (_mean(agg, s, "fused-id", "head", "ndcg@10"), _mean(agg, s, "id", "head", "ndcg@10")),
         ("fused-id head ndcg@10", "id head ndcg@10"), "needs variants fused-id and id"),
    ]
    rows: list[dict[str, Any]] = []
    for key, text, factor, values, names, missing in specs:
        found = False
        for split in agg:
            a, b = values(split)
            if a is None or b is None:
                continue
            found = True
            ratio = a / b if b else None
            row = {"goal": key, "text": text, "split": split, "values": {names[0]: a, names[1]: b},
                   "ratio": ratio, "threshold": factor, "met": bool(a >= factor * b)}
            if key == "content_vs_knn_cold":
                row["chosen"] = best_content_variant(agg, split)
            if key == "fused_id_vs_id":
                test = ((((sig or {}).get(split) or {}).get("vs_id") or {}).get("fused-id") or {}).get("ndcg@10")
                row["paired_t_p"] = test["t_p"] if test else None
                row["met"] = row["met"] and row["paired_t_p"] is not None and row["paired_t_p"] < 0.05
            rows.append(row)
        if not found:
            rows.append({"goal": key, "text": text, "split": None, "values": {}, "ratio": None,
                         "threshold": factor, "met": None, "note": f"not evaluated: {missing}"})
    return rows


# ---- the one call -----------------------------------------------------------------------------------
def compare(dataset_dir: str | Path, variants: Sequence[str], seeds: int | Sequence[int], splits: Sequence[str],
            stores: Sequence[str | Path], base_config: Config | None, out: str | Path, *,
            backbones: Sequence[str] | str | None = None, command: str | None = None,
            argv: Sequence[str] | None = None, progress: bool = False, log: Log = print,
            note: str | None = None) -> dict[str, Any]:
    """Train/evaluate the grid into ``out``/runs (resuming), write report.json, report.md and plots;
    returns the report dict. ``seeds``: a count N (seeds 0..N-1) or the seed values. ``backbones``: user-tower
    names (model.backbone: ``scratch``, ``smollm2-2L-lora``, ...); None = the base config's tower alone."""
    from clip4rec.data.dataset import Dataset

    base = base_config or Config()
    variants, splits = list(dict.fromkeys(variants)), list(dict.fromkeys(splits))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(dict.fromkeys(int(s) for s in seeds))
    bad = [v for v in variants if v not in VARIANTS] + [s for s in splits if s not in SPLITS]
    if bad or not variants or not splits or not seed_list:
        raise ValueError(f"need >= 1 variant of {VARIANTS}, split of {SPLITS} and seed; bad: {bad}")
    towers_given = parse_backbones(backbones) if backbones is not None else [Backbone.of(base.model)]
    by_name = {b.name: b for b in towers_given}
    arms = grid_arms(variants, list(by_name))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = Dataset.load(Path(dataset_dir).resolve())
    store_list = [str(Path(s).resolve()) for s in stores] or list(base.model.stores)
    # A training-free arm (no tower) keeps the base config's tower fields: what it was trained with before.
    configs = {(sp, a.key, s): cell_config(base, sp, a.variant, s, store_list, by_name.get(a.backbone))
               for sp in splits for a in arms for s in seed_list}
    sources = {v: item_vector_sources(cell_config(base, splits[0], v, seed_list[0], store_list)) for v in variants}
    arm_of = {a.key: a for a in arms}

    t0, cells, results = time.perf_counter(), [], {}
    for i, ((sp, key, s), cfg) in enumerate(configs.items(), start=1):
        run_dir = cell_dir(out, sp, key, s)
        tag = f"[{i}/{len(configs)}] split={sp} variant={key} seed={s}"
        if not (run_dir / "metrics.json").exists():
            log(f"{tag}: training -> {run_dir}")
        c0 = time.perf_counter()
        metrics, trained = run_cell(dataset, run_dir, cfg, progress)
        took = time.perf_counter() - c0
        overall = metrics["metrics"]["overall"]
        log(f"{tag}: {'done in ' + format(took, '.1f') + 's' if trained else 'finished earlier, reused'}  "
            f"ndcg@10 {overall['ndcg@10']:.4f}  recall@10 {overall['recall@10']:.4f}")
        results[(sp, key, s)] = metrics
        cells.append({"split": sp, "variant": arm_of[key].variant, "backbone": arm_of[key].backbone, "arm": key,
                      "seed": s, "run_dir": str(run_dir.relative_to(out)),
                      "status": "trained" if trained else "reused", "seconds": round(took, 3),
                      "config": cfg.model_dump()})

    agg = {sp: {a.key: {**aggregate_cells([results[(sp, a.key, s)] for s in seed_list]),
                        "item_vectors": sources[a.variant]} for a in arms} for sp in splits}
    report: dict[str, Any] = {
        "command": command or f"compare({str(dataset_dir)!r}, variants={variants}, seeds={seed_list}, "
                              f"splits={splits}, stores={store_list}, out={str(out)!r})",
        "argv": list(argv) if argv is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": versions(),
        "machines": training_machines(cells, results),
        "dataset": {"path": str(dataset.root), "source": dataset.meta.get("source"), "users": dataset.n_users,
                    "items": dataset.n_items, "interactions": dataset.n_interactions,
                    "splits": {sp: results[(sp, arms[0].key, seed_list[0])]["split"] for sp in splits}},
        "grid": {"splits": splits, "variants": variants, "backbones": list(by_name), "arms": list(arm_of),
                 "seeds": seed_list, "cells": len(cells),
                 "trained_now": sum(c["status"] == "trained" for c in cells),
                 "wall_seconds": round(time.perf_counter() - t0, 3)},
        "base_config": base.model_dump(),
        "stores": store_encoders(store_list),
        "item_vectors": sources,
        "aggregate": agg,
        "significance": {sp: significance(out, sp, arms, seed_list) for sp in splits},
        "backbone_significance": {sp: towers.against_scratch(out, sp, arms, seed_list) for sp in splits},
        "cells": cells,
    }
    report["goals"] = goals(agg, report["significance"]) + towers.tower_goals(
        agg, arms, report["backbone_significance"], arm_machines(cells, results))
    if note:
        report["note"] = note
    report["plots"] = plots.write_plots(report, out)
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    log(f"wrote {out / 'report.md'}, {out / 'report.json'} and {len(report['plots'])} plots")
    return report


def rerender(out: str | Path, note: str | None = None) -> dict[str, Any]:
    """Rewrite the plots and report.md of ``out`` from its report.json alone (no Run is read or trained), e.g.
    after a change to the rendering, or where the Runs' files are not on this machine."""
    out = Path(out)
    path = out / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `clip4rec compare` first")
    report = json.loads(path.read_text())
    if note:
        report["note"] = note
    report["plots"] = plots.write_plots(report, out)
    write_json(path, report)
    write_text(out / "report.md", render_markdown(report))
    return report


def _machine(cell: dict[str, Any], results: dict[Any, dict[str, Any]]) -> dict[str, Any] | None:
    return (results[(cell["split"], cell["arm"], cell["seed"])].get("training") or {}).get("machine")


def training_machines(cells: Sequence[dict[str, Any]], results: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
    """Distinct machines the cells were trained on (from each Run's training.json), with their cell counts."""
    found: dict[str, dict[str, Any]] = {}
    for c in cells:
        machine = _machine(c, results)
        key = json.dumps(machine, sort_keys=True)
        found.setdefault(key, {"machine": machine, "cells": 0})["cells"] += 1
    return list(found.values())


def arm_machines(cells: Sequence[dict[str, Any]],
                 results: dict[Any, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """{split: {arm key: the distinct machines (as JSON) its seeds were trained on}}."""
    found: dict[str, dict[str, set[str]]] = {}
    for c in cells:
        machine = json.dumps(_machine(c, results), sort_keys=True)
        found.setdefault(c["split"], {}).setdefault(c["arm"], set()).add(machine)
    return {sp: {k: sorted(v) for k, v in per_arm.items()} for sp, per_arm in found.items()}
