"""`clip4rec compare`: train every (split, variant, seed) cell, then aggregate, test and report.

REPORT/runs/{split}/{variant}/seed{S}/   one Run directory per cell (a finished cell is never re-run)
REPORT/report.json                       everything: command, configs, dataset, encoders, aggregates, tests, goals
REPORT/report.md                         tables rendered from report.json (``render_markdown``)
REPORT/*.png                             NDCG@10 by segment per split; training time per variant

Two kinds of interval, both kept: the t-interval over seeds (how much the result moves when training is
repeated: "mean [lo, hi]" in the tables) and each seed's bootstrap CI over users from its metrics.json
(used as the interval when there is a single seed).
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from clip4rec import __version__
from clip4rec.config import Config
from clip4rec.machine import describe
from clip4rec.evaluate.significance import SIG_METRICS, paired_test, pooled_pairs

SPLITS = ("loo", "cold")
SEGMENTS = ("overall", "warm", "cold", "head", "tail")
BASELINES = ("text", "id", "content-knn")
CONTENT_VARIANTS = ("text", "image", "fused", "fused-id")  # trained on content vectors
PROTOCOL_METRICS = ("recall@10", "ndcg@10")
TRAINING_FIELDS = ("train_seconds", "seconds_per_epoch", "best_epoch", "epochs_run")
Log = Callable[[str], None]


# ---- the grid ---------------------------------------------------------------------------------------
def cell_dir(out: Path, split: str, variant: str, seed: int) -> Path:
    return out / "runs" / split / variant / f"seed{seed}"


def cell_config(base: Config, split: str, variant: str, seed: int, stores: Sequence[str]) -> Config:
    """The base config with this cell's split, variant and seed (and the stores, when given)."""
    cfg = base.model_copy(deep=True)
    cfg.seed, cfg.split.kind, cfg.model.variant = seed, split, variant
    if stores:
        cfg.model.stores = [str(Path(s).resolve()) for s in stores]
    return cfg


def item_vector_sources(config: Config) -> list[str]:
    """The "encoder:modality" content tables a variant's item vectors are made from ([] = learned IDs only).

    Resolved from the stores' manifests before any training, so that a missing modality fails in seconds,
    not after hours of other cells; mirrors the lookup in ``train.run.load_modalities``.
    """
    from clip4rec.encode.store import EmbeddingStore
    from clip4rec.train.modalities import default_modalities
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
    # compare orchestrates training: the one place evaluate reaches back into train
    from clip4rec.train.run import made_with, train
    done = run_dir / "metrics.json"
    if done.exists():
        if not made_with(json.loads((run_dir / "config.json").read_text()), config, dataset):
            raise ValueError(f"{run_dir} holds a finished run with another config or dataset; "
                             "use a new --out or the settings it was made with")
        return json.loads(done.read_text()), False
    train(dataset, run_dir, config, progress=progress)
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
        half = float(stats.t.ppf(1 - alpha / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
        out["ci"], out["ci_kind"] = [mean - half, mean + half], "t over seeds"
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
    params = sorted({t.get("parameters") for t in training if t.get("parameters") is not None})
    return {
        "n_seeds": len(runs),
        "counts": {seg: [r["counts"].get(seg) for r in runs] for seg in SEGMENTS},
        "metrics": segments,
        "beyond": beyond,
        "training": {f: seed_summary([t.get(f) for t in training]) for f in TRAINING_FIELDS},
        "parameters": params[0] if len(params) == 1 else params or None,
        "other_protocol": other,
        # What a recipe is chosen by (never the test): validation NDCG@10 over all validation cases.
        "valid_ndcg@10": seed_summary([((r.get("valid") or {}).get("metrics", {}).get("overall") or {}).get("ndcg@10")
                                       for r in runs]),
    }


def significance(out: Path, split: str, variants: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """Each variant against each baseline present ("vs_text", "vs_id"): paired per-user tests, seeds pooled."""
    result: dict[str, Any] = {}
    for base in BASELINES:
        if base not in variants:
            continue
        block: dict[str, Any] = {}
        for v in variants:
            if v == base:
                continue
            pairs = [(cell_dir(out, split, v, s), cell_dir(out, split, base, s)) for s in seeds]
            block[v] = {}
            for metric in SIG_METRICS:
                a, b, _ = pooled_pairs(pairs, metric)
                block[v][metric] = paired_test(a, b)
        result[f"vs_{base}"] = block
    return result


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
            command: str | None = None, argv: Sequence[str] | None = None, progress: bool = False,
            log: Log = print, note: str | None = None) -> dict[str, Any]:
    """Train/evaluate the grid into ``out``/runs (resuming), write report.json, report.md and plots;
    returns the report dict. ``seeds``: a count N (seeds 0..N-1) or the seed values."""
    from clip4rec.data.dataset import Dataset
    from clip4rec.evaluate import plots
    from clip4rec.train.run import VARIANTS

    base = base_config or Config()
    variants, splits = list(dict.fromkeys(variants)), list(dict.fromkeys(splits))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(dict.fromkeys(int(s) for s in seeds))
    bad = [v for v in variants if v not in VARIANTS] + [s for s in splits if s not in SPLITS]
    if bad or not variants or not splits or not seed_list:
        raise ValueError(f"need >= 1 variant of {VARIANTS}, split of {SPLITS} and seed; bad: {bad}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = Dataset.load(Path(dataset_dir).resolve())
    store_list = [str(Path(s).resolve()) for s in stores] or list(base.model.stores)
    configs = {(sp, v, s): cell_config(base, sp, v, s, store_list) for sp in splits for v in variants for s in seed_list}
    sources = {v: item_vector_sources(configs[(splits[0], v, seed_list[0])]) for v in variants}

    t0, cells, results = time.perf_counter(), [], {}
    for i, ((sp, v, s), cfg) in enumerate(configs.items(), start=1):
        run_dir = cell_dir(out, sp, v, s)
        tag = f"[{i}/{len(configs)}] split={sp} variant={v} seed={s}"
        if not (run_dir / "metrics.json").exists():
            log(f"{tag}: training -> {run_dir}")
        c0 = time.perf_counter()
        metrics, trained = run_cell(dataset, run_dir, cfg, progress)
        took = time.perf_counter() - c0
        overall = metrics["metrics"]["overall"]
        log(f"{tag}: {'done in ' + format(took, '.1f') + 's' if trained else 'finished earlier, reused'}  "
            f"ndcg@10 {overall['ndcg@10']:.4f}  recall@10 {overall['recall@10']:.4f}")
        results[(sp, v, s)] = metrics
        cells.append({"split": sp, "variant": v, "seed": s, "run_dir": str(run_dir.relative_to(out)),
                      "status": "trained" if trained else "reused", "seconds": round(took, 3),
                      "config": cfg.model_dump()})

    agg = {sp: {v: {**aggregate_cells([results[(sp, v, s)] for s in seed_list]), "item_vectors": sources[v]}
                for v in variants} for sp in splits}
    report: dict[str, Any] = {
        "command": command or f"compare({str(dataset_dir)!r}, variants={variants}, seeds={seed_list}, "
                              f"splits={splits}, stores={store_list}, out={str(out)!r})",
        "argv": list(argv) if argv is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": {"clip4rec": __version__, "python": platform.python_version(), "numpy": np.__version__},
        "machines": training_machines(cells, results),
        "dataset": {"path": str(dataset.root), "source": dataset.meta.get("source"), "users": dataset.n_users,
                    "items": dataset.n_items, "interactions": dataset.n_interactions,
                    "splits": {sp: results[(sp, variants[0], seed_list[0])]["split"] for sp in splits}},
        "grid": {"splits": splits, "variants": variants, "seeds": seed_list, "cells": len(cells),
                 "trained_now": sum(c["status"] == "trained" for c in cells),
                 "wall_seconds": round(time.perf_counter() - t0, 3)},
        "base_config": base.model_dump(),
        "stores": store_encoders(store_list),
        "item_vectors": sources,
        "aggregate": agg,
        "significance": {sp: significance(out, sp, variants, seed_list) for sp in splits},
        "cells": cells,
    }
    report["goals"] = goals(agg, report["significance"])
    if note:
        report["note"] = note
    report["plots"] = plots.write_plots(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    log(f"wrote {out / 'report.md'}, {out / 'report.json'} and {len(report['plots'])} plots")
    return report


def rerender(out: str | Path, note: str | None = None) -> dict[str, Any]:
    """Rewrite the plots and report.md of ``out`` from its report.json alone (no Run is read or trained), e.g.
    after a change to the rendering, or where the Runs' files are not on this machine."""
    from clip4rec.evaluate import plots
    out = Path(out)
    path = out / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `clip4rec compare` first")
    report = json.loads(path.read_text())
    if note:
        report["note"] = note
    report["plots"] = plots.write_plots(report, out)
    path.write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    return report


# ---- Markdown (rendered from report.json alone, so it can be regenerated) ----------------------------
def vectors_label(report: dict[str, Any], variant: str) -> str:
    src = report["item_vectors"].get(variant) or []
    if variant == "pop":
        return "training popularity (nothing learned)"
    return " + ".join(src) if src else "learned ID embeddings"


def training_machines(cells: Sequence[dict[str, Any]], results: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
    """Distinct machines the cells were trained on (from each Run's training.json), with their cell counts."""
    found: dict[str, dict[str, Any]] = {}
    for c in cells:
        machine = (results[(c["split"], c["variant"], c["seed"])].get("training") or {}).get("machine")
        key = json.dumps(machine, sort_keys=True)
        found.setdefault(key, {"machine": machine, "cells": 0})["cells"] += 1
    return list(found.values())


def _legacy_machine(report: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Reports of 2026-11-27 morning recorded one machine for the whole report (the one that wrote it)."""
    machine = report.get("machine")
    return [{"machine": machine, "cells": len(report["cells"])}] if machine else None


def _machine_lines(machines: Sequence[dict[str, Any]] | None) -> list[str]:
    if not machines:  # reports written before machines were recorded
        return []
    lines = ["", "Trained on (seconds per epoch compare only within one machine):"]
    for m in machines:
        where = describe(m["machine"]) if m["machine"] else "not recorded (trained before clip4rec recorded machines)"
        lines.append(f"- {m['cells']} cell(s): {where}")
    return lines


def _fmt(summary: dict[str, Any] | None, digits: int = 4) -> str:
    if not summary:
        return "-"
    cell = f"{summary['mean']:.{digits}f}"
    if summary.get("ci"):
        lo, hi = summary["ci"]
        cell += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return cell


def _count(per_seed: Sequence[int]) -> str:
    """Case count of a segment: one number, or min-max when seeds differ (the cold split draws per seed)."""
    lo, hi = min(per_seed), max(per_seed)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _training_cell(summary: dict[str, Any] | None, field: str) -> str:
    """Seconds as `mean [CI]`; epoch counts as integers: one number, or min-max when seeds differ."""
    if field in ("best_epoch", "epochs_run"):
        return _count([int(round(x)) for x in summary["per_seed"]]) if summary else "-"
    return _fmt(summary, 2)


def _p(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2e}" if x < 1e-3 else f"{x:.4f}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def render_markdown(report: dict[str, Any]) -> str:
    g, ds, agg = report["grid"], report["dataset"], report["aggregate"]
    cfg = report["base_config"]
    lines = [f"# Variant comparison: {Path(ds['path']).name}", "",
             *([f"> {report['note']}", ""] if report.get("note") else []),
             f"Command: `{report['command']}`  ", f"Created {report['created']}, clip4rec {report['versions']['clip4rec']}.",
             "", f"Dataset `{ds['path']}` (source {ds['source']}): {ds['users']} users, {ds['items']} items, {ds['interactions']} interactions. "
             f"Splits {', '.join(g['splits'])}; seeds {g['seeds']}; backbone {cfg['model']['backbone']}, "
             f"hidden {cfg['model']['hidden']}, max_len {cfg['model']['max_len']}, id_dropout {cfg['model'].get('id_dropout')}, "
             f"max_epochs {cfg['train']['max_epochs']}, patience {cfg['train']['patience']}, "
             f"time limit {cfg['train']['time_limit_s']} s; full ranking (exclude_seen={cfg['eval']['exclude_seen']}).",
             *_machine_lines(report.get("machines") or _legacy_machine(report)),
             "", "## Item vectors (which encoder made them)", ""]
    lines += _table(["variant", "item vectors"], [[v, vectors_label(report, v)] for v in g["variants"]])
    if not report["stores"]:
        lines.append("No embedding store: every variant here learns ID embeddings only.")
    for store, encs in report["stores"].items():
        for name, e in encs.items():
            kind = "CLIP" if e.get("is_clip") else ("stand-in for CLIP" if e.get("stand_in_for_clip") else "")
            lines.append(f"- `{name}` in `{store}`{f' ({kind})' if kind else ''}: {e.get('note') or ''} "
                         f"identity {json.dumps(e.get('identity'))}")
    lines += ["", "Intervals: `mean [lo, hi]` = 95% t-interval over seeds (a single seed shows its bootstrap CI "
              "over users); per-seed bootstrap CIs are in report.json.", ""]
    for split in g["splits"]:
        lines += [f"## Split `{split}`", ""]
        lines += _split_tables(report, split)
    lines += _goal_lines(report["goals"])
    if report.get("plots"):
        lines += ["## Plots", "", *(f"![{p}]({p})" for p in report["plots"]), ""]
    lines += _run_lines(report)
    return "\n".join(lines)


def _run_lines(report: dict[str, Any]) -> list[str]:
    """Where each cell's Run directory is (relative to the report): what `clip4rec serve` / `evaluate` take."""
    dirs: dict[tuple[str, str], list[str]] = {}
    for c in report.get("cells", []):
        dirs.setdefault((c["split"], c["variant"]), []).append(f"`{c['run_dir']}`")
    if not dirs:
        return []
    return ["## Run directories (relative to this report)", "",
            *_table(["split", "variant", "Run directories"], [[sp, v, ", ".join(d)] for (sp, v), d in dirs.items()])]


def _split_tables(report: dict[str, Any], split: str) -> list[str]:
    agg, variants = report["aggregate"][split], report["grid"]["variants"]
    lines: list[str] = []
    ks = sorted({int(m.split("@")[1]) for v in variants for m in (agg[v]["metrics"]["overall"] or {}) if "@" in m})
    overall_cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")] + ["mrr"]
    lines += ["### Overall", ""]
    lines += _table(["variant", "item vectors", *overall_cols],
                    [[v, vectors_label(report, v), *(_fmt((agg[v]["metrics"]["overall"] or {}).get(c))
                                                     for c in overall_cols)] for v in variants])
    for a, b in (("cold", "warm"), ("head", "tail")):
        lines += [f"### {a.capitalize()} vs {b}", ""]
        if all(agg[v]["metrics"][a] is None for v in variants):
            lines += [f"No {a}-item test cases in this split.", ""]
            continue
        rows = []
        for v in variants:
            m = agg[v]["metrics"]
            ra = (m[a] or {}).get("recall@10")
            rb = (m[b] or {}).get("recall@10")
            ratio = f"{ra['mean'] / rb['mean']:.3f}" if ra and rb and rb["mean"] else "-"
            rows.append([v, f"{_count(agg[v]['counts'][a])} / {_count(agg[v]['counts'][b])}", _fmt(ra), _fmt((m[a] or {}).get("ndcg@10")), _fmt(rb),
                         _fmt((m[b] or {}).get("ndcg@10")), ratio])
        lines += _table(["variant", f"cases {a} / {b}", f"{a} R@10", f"{a} N@10", f"{b} R@10", f"{b} N@10",
                         f"{a}/{b} R@10"], rows)
    lines += _protocol_lines(report, split)
    beyond = sorted({k for v in variants for k in agg[v]["beyond"]}, key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    lines += ["### Beyond accuracy (top-k lists over all test users)", ""]
    lines += _table(["variant", *beyond], [[v, *(_fmt(agg[v]["beyond"].get(k)) for k in beyond)] for v in variants])
    lines += ["### Paired significance (per user, seeds pooled by averaging each user's values)", ""]
    rows = []
    shown: set[frozenset[str]] = set()  # "id vs text" and "text vs id" are one comparison: show it once
    for base, block in report["significance"][split].items():
        for v, per_metric in block.items():
            if frozenset((v, base[3:])) in shown:
                continue
            shown.add(frozenset((v, base[3:])))
            for metric, t in per_metric.items():
                ci = f" [{t['diff_ci'][0]:+.4f}, {t['diff_ci'][1]:+.4f}]" if t["diff_ci"] else ""
                lift = "-" if t["lift_pct"] is None else f"{t['lift_pct']:+.1f}%"
                rows.append([f"{v} vs {base[3:]}", metric, str(t["n"]), f"{t['mean_diff']:+.4f}{ci}", lift,
                             _p(t["t_p"]), _p(t["wilcoxon_p"])])
    lines += _table(["comparison", "metric", "users", "mean diff [95% CI]", "lift", "paired t p", "Wilcoxon p"], rows) \
        if rows else ["No baseline (text or id) in the grid.", ""]
    lines += ["### Training time and parameters", ""]
    lines += _table(["variant", "parameters", "train s", "s / epoch", "best epoch", "epochs run"],
                    [[v, str(agg[v]["parameters"]), *(_training_cell(agg[v]["training"][f], f) for f in TRAINING_FIELDS)]
                     for v in variants])
    return lines


def _protocol_lines(report: dict[str, Any], split: str) -> list[str]:
    """Test results with seen items excluded and with them ranked, side by side (the tables above use the
    report's own setting)."""
    agg, variants = report["aggregate"][split], report["grid"]["variants"]
    own = report["base_config"]["eval"]["exclude_seen"]
    if not any(agg[v].get("other_protocol") for v in variants):
        return []
    name = {True: "seen excluded", False: "seen ranked"}
    segs = ["overall", "cold"] if split == "cold" else ["overall"]
    header = ["variant"] + [f"{seg} {m.replace('recall', 'R').replace('ndcg', 'N')} ({name[p]})"
                            for seg in segs for m in PROTOCOL_METRICS for p in (own, not own)]
    rows = []
    for v in variants:
        other = (agg[v].get("other_protocol") or {}).get("metrics", {})
        row = [v]
        for seg in segs:
            for m in PROTOCOL_METRICS:
                row += [_fmt((agg[v]["metrics"][seg] or {}).get(m)), _fmt((other.get(seg) or {}).get(m))]
        rows.append(row)
    return [f"### Protocol: seen items excluded vs ranked (this report's goals use: {name[own]})", "",
            *_table(header, rows)]


def _goal_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Goals", ""]
    for r in rows:
        if r["met"] is None:
            lines.append(f"- **not evaluated** — {r['text']}: {r['note']}")
            continue
        vals = ", ".join(f"{k} {v:.4f}" for k, v in r["values"].items())
        ratio = f"ratio {r['ratio']:.3f} (needs >= {r['threshold']:.2f})" if r["ratio"] is not None else ""
        extra = f"; chosen: `{r['chosen']}`" if r.get("chosen") else ""
        if "paired_t_p" in r:
            extra += f"; paired t p {_p(r['paired_t_p'])}"
        lines.append(f"- **{'met' if r['met'] else 'missed'}** — {r['text']}, split `{r['split']}`: {vals}; {ratio}{extra}")
    return lines + [""]
