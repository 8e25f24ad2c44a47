"""A compare grid's user-tower axis: each LLM tower against the scratch tower of the same variant.

Paired per-user tests (as the variant tests: seeds pooled by averaging each user's values) and the goals of
"The LLM user tower, measured": the LLM tower's NDCG@10 >= 1.03 x scratch with paired t p < 0.05, and its
training seconds per epoch (validation left out, as bench/backbones.py counts them) <= 4 x scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clip4rec.experiments.arms import Arm, paired_tests
from clip4rec.model.backbone import SCRATCH

QUALITY_LIFT = 1.03   # LLM tower NDCG@10 >= 1.03 x scratch (overall) ...
QUALITY_P = 0.05      # ... with a paired t p below this
SPEED_FACTOR = 4.0    # LLM tower training s/epoch <= 4 x scratch


def llm_arms(arms: Sequence[Arm]) -> list[Arm]:
    return [a for a in arms if a.backbone not in (None, SCRATCH)]


def against_scratch(out: Path, split: str, arms: Sequence[Arm], seeds: Sequence[int]) -> dict[str, Any]:
    """Per LLM-tower arm whose variant also has a scratch arm: its paired tests against that arm."""
    keys = {a.key for a in arms}
    return {a.key: {"variant": a.variant, "backbone": a.backbone, "against": a.variant,
                    "tests": paired_tests(out, split, a.key, a.variant, seeds)}
            for a in llm_arms(arms) if a.variant in keys}


def _train_s(agg: dict[str, Any], split: str, key: str) -> float | None:
    summary = agg[split][key]["training"].get("train_seconds_per_epoch")
    return summary["mean"] if summary else None


def _ndcg(agg: dict[str, Any], split: str, key: str) -> float | None:
    summary = (agg[split][key]["metrics"]["overall"] or {}).get("ndcg@10")
    return summary["mean"] if summary else None


def tower_goals(agg: dict[str, Any], arms: Sequence[Arm], tests: dict[str, Any],
                machines: dict[str, dict[str, list[str]]]) -> list[dict[str, Any]]:
    """Per split and LLM-tower arm: the quality goal and the speed goal against the scratch arm of its variant.
    `tests`: {split: against_scratch(...)}; `machines`: {split: {arm key: the distinct machines its seeds were
    trained on}} (seconds compare only within one machine). No LLM tower in the grid: no rows."""
    rows: list[dict[str, Any]] = []
    for a in llm_arms(arms):
        quality = (f"{a.variant}: {a.backbone} NDCG@10 >= {QUALITY_LIFT:.2f} x scratch (overall), "
                   f"paired t p < {QUALITY_P}")
        speed = f"{a.variant}: {a.backbone} training s/epoch <= {SPEED_FACTOR:.0f} x scratch"
        common = {"variant": a.variant, "backbone": a.backbone}
        if not any(a.variant in agg[split] for split in agg):
            note = "not evaluated: needs scratch in --backbones"
            rows += [{"goal": g, "text": t, "split": None, "values": {}, "ratio": None, "threshold": f, "met": None,
                      "note": note, **common}
                     for g, t, f in (("llm_tower_quality", quality, QUALITY_LIFT),
                                     ("llm_tower_speed", speed, SPEED_FACTOR))]
            continue
        for split in agg:
            x, y = _ndcg(agg, split, a.key), _ndcg(agg, split, a.variant)
            test = ((tests.get(split) or {}).get(a.key) or {}).get("tests", {}).get("ndcg@10")
            p = test["t_p"] if test else None
            rows.append({"goal": "llm_tower_quality", "text": quality, "split": split, **common,
                         "values": {f"{a.key} ndcg@10": x, f"{a.variant} ndcg@10": y},
                         "ratio": x / y if x is not None and y else None, "threshold": QUALITY_LIFT,
                         "paired_t_p": p,
                         "met": bool(x is not None and y is not None and x >= QUALITY_LIFT * y
                                     and p is not None and p < QUALITY_P)})
            s_llm, s_scratch = _train_s(agg, split, a.key), _train_s(agg, split, a.variant)
            row = {"goal": "llm_tower_speed", "text": speed, "split": split, **common, "at_most": True,
                   "values": {f"{a.key} train s/epoch": s_llm, f"{a.variant} train s/epoch": s_scratch},
                   "ratio": s_llm / s_scratch if s_llm is not None and s_scratch else None,
                   "threshold": SPEED_FACTOR, "met": None}
            where = machines.get(split, {})
            if s_llm is None or s_scratch is None:
                row.update(values={}, note="not evaluated: a Run without per-epoch training times")
            elif len(where.get(a.key, [])) != 1 or where.get(a.key) != where.get(a.variant):
                row["note"] = "not evaluated: the two towers' Runs were not all trained on one machine"
            else:
                row["met"] = bool(s_llm <= SPEED_FACTOR * s_scratch)
            rows.append(row)
    return rows
