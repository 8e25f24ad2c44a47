"""Rewrite the README's headline results table from `clip4rec compare` reports (report.json), so that the
README never carries a number typed by hand.

    python bench/headline.py docs/results/ml100k_content docs/results/beauty_content_seed0

The table goes between the `<!-- headline:start -->` and `<!-- headline:end -->` lines of README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from clip4rec.model.build import TRAINING_FREE

START, END = "<!-- headline:start -->", "<!-- headline:end -->"
COLUMNS = (("overall", "ndcg@10", "N@10"), ("overall", "recall@10", "R@10"), ("cold", "recall@10", "cold R@10"),
           ("tail", "recall@10", "tail R@10"), ("head", "ndcg@10", "head N@10"))


def cell(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    text = f"{summary['mean']:.4f}"
    if summary.get("ci") and summary.get("ci_kind", "").startswith("t"):
        text += f" ± {(summary['ci'][1] - summary['ci'][0]) / 2:.4f}"
    return text


def training(report: dict[str, Any], variant: str) -> str:
    """How a row's models were trained: none (a baseline), to early stopping, or cut at a time limit."""
    if variant in TRAINING_FREE:  # the baselines: the same cells whatever the limit
        return "none"
    limit = report["base_config"]["train"].get("time_limit_s")
    return f"capped {limit / 60:g} min" if limit else "early stopping"


CONTENT_ONLY = ("text", "image", "fused")


def content_map(report: dict[str, Any]) -> str:
    """How a content-only row maps content to its table: the MLP since model.content_mlp (a report made before
    it records no value and used the linear map)."""
    return "MLP map" if report["base_config"].get("model", {}).get("content_mlp", 0) else "linear map"


def table(report_dirs: list[Path]) -> str:
    lines = ["| dataset | split | variant | item vectors | training | seeds | " + " | ".join(c[2] for c in COLUMNS)
             + " |", "|" + "---|" * (6 + len(COLUMNS))]
    notes = []
    for folder in report_dirs:
        report = json.loads((folder / "report.json").read_text())
        name = Path(report["dataset"]["path"]).name
        seeds = len(report["grid"]["seeds"])
        for split, per_variant in report["aggregate"].items():
            for variant, agg in per_variant.items():  # a row per arm: "variant", or "variant/backbone" (LLM tower)
                vectors = " + ".join(report["item_vectors"].get(variant.partition("/")[0]) or []) or "learned IDs" \
                    if variant != "pop" else "training counts"
                if variant.partition("/")[0] in CONTENT_ONLY:
                    vectors += f" ({content_map(report)})"
                floor = report["base_config"].get("model", {}).get("cold_floor")
                if floor is not None and variant.partition("/")[0] in (*CONTENT_ONLY, "fused-id"):
                    vectors += f", cold floor {floor:g}"  # its cold items boosted: model.cold_floor
                values = [cell((agg["metrics"].get(seg) or {}).get(metric)) for seg, metric, _ in COLUMNS]
                row = (f"| {name} | {split} | {variant} | {vectors} | {training(report, variant)} | {seeds} | "
                       + " | ".join(values) + " |")
                if row not in lines:  # two reports of one dataset share their baselines' cells: show them once
                    lines.append(row)
        protocol = "seen items excluded" if report["base_config"]["eval"]["exclude_seen"] else "seen items ranked"
        notes.append(f"[{folder}/report.md]({folder}/report.md) ({protocol}; `{report['command']}`)")
    return "\n".join(lines + ["", "Mean over seeds ± half the 95% t-interval (one seed: its value). From: "
                              + "; ".join(notes) + "."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="compare output folders holding report.json")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args()
    text = args.readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{args.readme} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{table(args.reports)}\n{END}{tail}")
    print(f"rewrote the headline table of {args.readme} from {len(args.reports)} report(s)")


if __name__ == "__main__":
    main()
