"""A compare report as Markdown, rendered from its report.json alone (so it can be regenerated: `clip4rec compare
--render-only`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clip4rec.experiments.arms import Arm, arm_keys
from clip4rec.machine import describe

SEGMENTS = ("overall", "warm", "cold", "head", "tail")
PROTOCOL_METRICS = ("recall@10", "ndcg@10")
TRAINING_FIELDS = ("train_seconds", "seconds_per_epoch", "best_epoch", "epochs_run")


def vectors_label(report: dict[str, Any], key: str) -> str:
    """What made the item vectors of an arm (a variant, or variant/backbone): its variant's encoders."""
    variant = Arm.from_key(key).variant
    src = report["item_vectors"].get(variant) or []
    if variant == "pop":
        return "training popularity (nothing learned)"
    return " + ".join(src) if src else "learned ID embeddings"


def _legacy_machine(report: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Reports of 2026-11-27 morning recorded one machine for the whole report (the one that wrote it)."""
    machine = report.get("machine")
    return [{"machine": machine, "cells": len(report["cells"])}] if machine else None


def _repeat_phrase(cfg: dict[str, Any]) -> str:
    """Where seen items are ranked, whether the trained variants learned a repeat bias (model.repeat_term; a
    config saved before the option had none)."""
    if cfg["eval"]["exclude_seen"]:
        return ""
    return f", repeat bias {'learned' if cfg['model'].get('repeat_term', False) else 'off'}"


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
             f"Splits {', '.join(g['splits'])}; seeds {g['seeds']}; {_backbone_phrase(report)}, "
             f"hidden {cfg['model']['hidden']}, max_len {cfg['model']['max_len']}, id_dropout {cfg['model'].get('id_dropout')}, "
             f"max_epochs {cfg['train']['max_epochs']}, patience {cfg['train']['patience']}, "
             f"time limit {cfg['train']['time_limit_s']} s; full ranking (exclude_seen={cfg['eval']['exclude_seen']}"
             f"{_repeat_phrase(cfg)}).",
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


def _backbone_phrase(report: dict[str, Any]) -> str:
    """"backbone scratch" (every report before backbones were an axis), or the towers compared."""
    model = report["base_config"]["model"]
    names = report["grid"].get("backbones") or [model["backbone"]]
    rank = f" (LoRA rank {model['lora_rank']})" if any("-lora" in n for n in names) else ""
    return f"backbone{'s' if len(names) > 1 else ''} {', '.join(names)}{rank}"


def _run_lines(report: dict[str, Any]) -> list[str]:
    """Where each cell's Run directory is (relative to the report): what `clip4rec serve` / `evaluate` take."""
    dirs: dict[tuple[str, str], list[str]] = {}
    for c in report.get("cells", []):
        dirs.setdefault((c["split"], c.get("arm", c["variant"])), []).append(f"`{c['run_dir']}`")
    if not dirs:
        return []
    return ["## Run directories (relative to this report)", "",
            *_table(["split", "variant", "Run directories"], [[sp, v, ", ".join(d)] for (sp, v), d in dirs.items()])]


def _split_tables(report: dict[str, Any], split: str) -> list[str]:
    agg, variants = report["aggregate"][split], arm_keys(report)
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
                rows.append([f"{v} vs {base[3:]}", metric, *_test_cells(t)])
    lines += _table(["comparison", "metric", "users", "mean diff [95% CI]", "lift", "paired t p", "Wilcoxon p"], rows) \
        if rows else ["No baseline (text or id) in the grid.", ""]
    lines += ["### Training time and parameters", ""]
    lines += _table(["variant", "parameters", "train s", "s / epoch", "best epoch", "epochs run"],
                    [[v, str(agg[v]["parameters"]), *(_training_cell(agg[v]["training"][f], f) for f in TRAINING_FIELDS)]
                     for v in variants])
    return lines + _knn_fit_lines(agg, variants) + _cold_boost_lines(agg, variants) + _tower_lines(report, split)


def _knn_fit_lines(agg: dict[str, Any], variants: Sequence[str]) -> list[str]:
    """The knn term each content Run kept after training (train.calibrate), per seed; absent from older reports."""
    fits = {v: agg[v].get("knn_fit") for v in variants if agg[v].get("knn_fit")}
    if not fits:
        return []
    rules = sorted({r for f in fits.values() for r in _as_list(f["rule"])})

    def seeds(values: Sequence[Any], fmt: str) -> str:
        return ", ".join("-" if x is None else format(x, fmt) for x in values)
    return ["### Knn term fitted on validation (per seed)", "",
            *_table(["variant", "content weight", "profile recency", "paired p (best vs trained)"],
                    [[v, seeds(f["weight"], "g"), seeds(f["recency"], "g"), seeds(f["paired_p"], ".2g")]
                     for v, f in fits.items()]),
            *(f"Rule: {r}." for r in rules), ""]


def _cold_boost_lines(agg: dict[str, Any], variants: Sequence[str]) -> list[str]:
    """The cold boost each Run kept for model.cold_floor (train.calibrate.fit_cold_boost), per seed."""
    fits = {v: agg[v].get("cold_boost") for v in variants if agg[v].get("cold_boost")}
    if not fits:
        return []

    def seeds(values: Sequence[Any], fmt: str) -> str:
        return ", ".join("-" if x is None else format(x, fmt) for x in values)
    floors = ", ".join(sorted({format(x, "g") for f in fits.values() for x in _as_list(f["floor"])}))
    return ["### Cold boost fitted on validation (per seed)", "",
            *_table(["variant", "boost", "floor reached", "valid cold R@10", "valid warm R@10"],
                    [[v, seeds(f["boost"], "g"), seeds([None if r is None else "yes" if r else "no" for r in f["reached"]], "s"),
                      seeds(f["valid_cold_recall@10"], ".4f"), seeds(f["valid_warm_recall@10"], ".4f")]
                     for v, f in fits.items()]),
            f"Rule (model.cold_floor {floors}): the smallest boost for items without training interactions whose "
            "validation cold R@10 is at least the floor x validation warm R@10; the largest tried if none is.", ""]


def _tower_lines(report: dict[str, Any], split: str) -> list[str]:
    """The user towers side by side (only in a grid with an LLM tower): quality, cost, and the paired tests
    of each LLM tower against the scratch tower of the same variant."""
    arms = [Arm.from_key(k) for k in arm_keys(report)]
    if not any(a.backbone not in (None, "scratch") for a in arms):
        return []
    agg = report["aggregate"][split]
    lines = ["### User-tower backbones", "",
             "Train s / epoch: the median epoch's training seconds (validation left out), mean over seeds; "
             "x scratch: against the scratch tower of the same variant. Peak memory: "
             + _memory_kinds(agg) + ".", ""]
    rows = []
    for a in (a for a in arms if a.backbone is not None):
        entry, scratch = agg[a.key], agg.get(a.variant) if a.backbone != "scratch" else None
        speed = entry["training"].get("train_seconds_per_epoch")
        base_speed = (scratch or {}).get("training", {}).get("train_seconds_per_epoch")
        ratio = f"{speed['mean'] / base_speed['mean']:.2f}" if speed and base_speed and base_speed["mean"] else "-"
        overall = entry["metrics"]["overall"] or {}
        rows.append([a.variant, a.backbone, _fmt(overall.get("ndcg@10")), _fmt(overall.get("recall@10")),
                     _fmt(speed, 2), ratio, _fmt(entry["training"].get("peak_memory_gib"), 2),
                     _int(entry.get("parameters")), _int(entry.get("parameters_trainable"))])
    lines += _table(["variant", "backbone", "N@10", "R@10", "train s / epoch", "x scratch", "peak memory GiB",
                     "parameters", "trainable"], rows)
    tests = (report.get("backbone_significance") or {}).get(split) or {}
    lines += ["### LLM towers against scratch (paired per user, seeds pooled by averaging each user's values)", ""]
    rows = [[t["variant"], t["backbone"], metric, *_test_cells(test)]
            for t in tests.values() for metric, test in t["tests"].items()]
    return lines + (_table(["variant", "backbone", "metric", "users", "mean diff [95% CI]", "lift", "paired t p",
                            "Wilcoxon p"], rows) if rows else ["No scratch tower in the grid to test against.", ""])


def _memory_kinds(agg: dict[str, Any]) -> str:
    names = {"peak_rss": "the training process's peak resident memory during the Run (everything it held)",
             "process_peak_rss": "the process's peak resident memory since it started (no per-Run reset here)",
             "cuda_max_allocated": "torch's peak allocated GPU memory during the Run"}
    kinds = {k for e in agg.values() for k in _as_list(e.get("peak_memory_kind"))}
    return "; ".join(names.get(k, k) for k in sorted(kinds)) or "not recorded"


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _int(value: Any) -> str:
    """A parameter count with thousands separators; seeds that differ show every value."""
    return "-" if value is None else ", ".join(f"{v:,}" for v in _as_list(value))


def _test_cells(t: dict[str, Any]) -> list[str]:
    """users, mean difference [CI], lift, paired t p, Wilcoxon p of one paired test."""
    ci = f" [{t['diff_ci'][0]:+.4f}, {t['diff_ci'][1]:+.4f}]" if t["diff_ci"] else ""
    lift = "-" if t["lift_pct"] is None else f"{t['lift_pct']:+.1f}%"
    return [str(t["n"]), f"{t['mean_diff']:+.4f}{ci}", lift, _p(t["t_p"]), _p(t["wilcoxon_p"])]


def _protocol_lines(report: dict[str, Any], split: str) -> list[str]:
    """Test results with seen items excluded and with them ranked, side by side (the tables above use the
    report's own setting)."""
    agg, variants = report["aggregate"][split], arm_keys(report)
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
            where = f", split `{r['split']}`" if r.get("split") else ""
            lines.append(f"- **not evaluated** — {r['text']}{where}: {r['note']}")
            continue
        vals = ", ".join(f"{k} {v:.4f}" for k, v in r["values"].items())
        needs = "<=" if r.get("at_most") else ">="
        ratio = f"ratio {r['ratio']:.3f} (needs {needs} {r['threshold']:.2f})" if r["ratio"] is not None else ""
        extra = f"; chosen: `{r['chosen']}`" if r.get("chosen") else ""
        if "paired_t_p" in r:
            extra += f"; paired t p {_p(r['paired_t_p'])}"
        lines.append(f"- **{'met' if r['met'] else 'missed'}** — {r['text']}, split `{r['split']}`: {vals}; {ratio}{extra}")
    return lines + [""]
