"""What a cold-start boost costs: the trade-off between cold-item recall and overall accuracy.

A trained content model ranks a cold item among the other cold items about as well as `content-knn` does, but
puts fewer of them in the top 10 than content-knn, which ignores popularity and so treats a cold item like any
other. This script measures that trade-off on finished Runs of a `clip4rec compare` report's cold split: a constant
`boost` is added to the score of every item without an ID (the cold items; serving would put it in one more
table column, at no latency), and for each boost it reports validation and test NDCG@10, and test R@10 on cold
and on warm targets, next to content-knn's cold R@10 from the same report. The validation-chosen boost is the
one a recipe may use; the others show what the cold-start goals would cost.

A catalogue that must show its new items states a cold floor instead (`--cold-floor 0.5`: cold R@10 at least half
of warm R@10). Per seed, the smallest boost whose *validation* cold R@10 reaches the floor is chosen, and the test
numbers at that boost say whether the floor, and what it costs, carry over to unseen cases.

    python bench/cold_frontier.py docs/results/ml100k_content [--variant fused-id] [--cold-floor 0.5]

Writes REPORT/cold_frontier.json and REPORT/cold_frontier.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from clip4rec.data.splits import EvalCases
from clip4rec.evaluate.shifted import shifted_ranks
from clip4rec.files import write_json, write_text
from clip4rec.model.artifact import Run
from clip4rec.ranking import case_metrics

BOOSTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # the frontier table's rows
GRID = tuple(k / 8 for k in range(25))  # 0 to 3 by 1/8: where the choices are made (holds every BOOSTS value)


def seed_dirs(report: Path, variant: str) -> list[Path]:
    found = sorted((report / "runs" / "cold" / variant).glob("seed*"), key=lambda p: int(p.name[4:]))
    done = [p for p in found if (p / "metrics.json").exists()]
    if not done:
        raise SystemExit(f"no finished cold-split {variant} runs under {report / 'runs' / 'cold' / variant}")
    return done


def frontier(run: Run) -> list[dict[str, float]]:
    """Per boost: NDCG@10 and cold and warm R@10 on validation and on test (seen items excluded as in the Run)."""
    side = run.model.item_side
    if getattr(side, "cold_column", False):  # a Run trained with model.cold_floor: the grid starts from no boost
        with torch.no_grad():
            side.cold_boost.zero_()
    cold = torch.from_numpy(run.cold_items).float()
    shifts = {str(boost): boost * cold for boost in GRID}
    rows: list[dict[str, float]] = [{"boost": boost} for boost in GRID]
    for name, cases in (("valid", run.valid), ("test", run.test)):
        ranks, cold_case = shifted_ranks(run, cases, shifts), run.cold_items[cases.targets]
        for row in rows:
            metrics = case_metrics(ranks[str(row["boost"])], ks=(10,))
            row[f"{name}_ndcg@10"] = float(metrics["ndcg@10"].mean())
            row[f"{name}_cold_recall@10"] = float(metrics["recall@10"][cold_case].mean())
            row[f"{name}_warm_recall@10"] = float(metrics["recall@10"][~cold_case].mean())
    return rows


def floor_choice(rows: list[dict[str, float]], floor: float) -> dict[str, float] | None:
    """The row of the smallest boost whose validation cold R@10 is at least `floor` x validation warm R@10
    (None if no boost on the grid gets there)."""
    met = [r for r in rows if r["valid_cold_recall@10"] >= floor * r["valid_warm_recall@10"]]
    return min(met, key=lambda r: r["boost"]) if met else None


def recall_among_cold(run: Run) -> float:
    """Test R@10 of the cold targets when only cold items are ranked: how well a Run orders the cold items among
    themselves, whatever it thinks of them against warm ones."""
    only_cold = torch.zeros(run.n_items).masked_fill(torch.from_numpy(~run.cold_items), float("-inf"))
    cold_cases = np.flatnonzero(run.cold_items[run.test.targets])
    cases = EvalCases([run.test.user_ids[i] for i in cold_cases], [run.test.histories[i] for i in cold_cases],
                      run.test.targets[cold_cases])
    return float(np.mean(shifted_ranks(run, cases, {"cold": only_cold})["cold"] <= 10))


def knn_cold_recalls(report: Path, seeds: list[str]) -> dict[str, float]:
    """content-knn's test cold R@10 per seed, for the seeds that have a content-knn Run in the report."""
    paths = {seed: report / "runs" / "cold" / "content-knn" / seed / "metrics.json" for seed in seeds}
    return {seed: json.loads(path.read_text())["metrics"]["cold"]["recall@10"]
            for seed, path in paths.items() if path.exists()}


def render(result: dict) -> str:
    knn = result["content_knn_cold_recall@10"]
    knn_text = f"content-knn cold R@10 (same seeds): {knn:.4f}." if knn is not None else "No content-knn Runs here."
    lines = [f"# Cold-item boost: what the cold-start goals cost ({result['variant']}, cold split)", "",
             f"Generated by `{result['command']}` from the Runs of this report ({len(result['seeds'])} seeds: "
             f"{', '.join(result['seeds'])}). A constant boost is added to the score of every item without an ID "
             "(the cold items). Means over seeds; seen items excluded as in the Runs. " + knn_text, "",
             "| boost | valid N@10 | test N@10 | vs boost 0 | cold R@10 | warm R@10 | cold / warm | cold / content-knn |",
             "|---|---|---|---|---|---|---|---|"]
    base = result["mean"][0]["test_ndcg@10"]
    for row in (r for r in result["mean"] if r["boost"] in BOOSTS):
        ratio_knn = f"{row['test_cold_recall@10'] / knn:.2f}" if knn else "–"
        lines.append(f"| {row['boost']:g} | {row['valid_ndcg@10']:.4f} | {row['test_ndcg@10']:.4f} | "
                     f"{row['test_ndcg@10'] / base:.3f} | {row['test_cold_recall@10']:.4f} | "
                     f"{row['test_warm_recall@10']:.4f} | "
                     f"{row['test_cold_recall@10'] / max(row['test_warm_recall@10'], 1e-12):.2f} | {ratio_knn} |")
    chosen = ", ".join(f"{s}: {b:g}" for s, b in zip(result["seeds"], result["validation_choice"]))
    lines += ["", f"Boost with the best validation NDCG@10, per seed: {chosen}.", "",
              "Ranked among the cold items only (no boost changes this order), the cold target is in the top 10 for "
              + ", ".join(f"{name} {value:.3f}" for name, value in result["among_cold_recall@10"].items())
              + " of cold test cases (mean over the same seeds)."]
    return "\n".join(lines + render_floor(result, knn)) + "\n"


def render_floor(result: dict, knn: float | None) -> list[str]:
    floor = result["floor"]
    lines = ["", f"## A cold floor of {floor['cold_floor']:g}, its boost chosen on validation", "",
             f"Per seed, the smallest boost (steps of {GRID[1]:g}) whose validation cold R@10 is at least "
             f"{floor['cold_floor']:g} x validation warm R@10; then its test numbers.", "",
             "| seed | boost | valid cold / warm | test N@10 | vs boost 0 | cold R@10 | warm R@10 | cold / warm | "
             "cold / content-knn |", "|---|---|---|---|---|---|---|---|---|"]
    for seed, row in floor["per_seed"].items():
        if row is None:
            lines.append(f"| {seed} | none on the grid (up to {GRID[-1]:g}) | - | - | - | - | - | - | - |")
            continue
        base = result["per_seed"][seed][0]["test_ndcg@10"]
        lines.append(f"| {seed} | {row['boost']:g} | "
                     f"{row['valid_cold_recall@10'] / max(row['valid_warm_recall@10'], 1e-12):.2f} | "
                     f"{row['test_ndcg@10']:.4f} | {row['test_ndcg@10'] / base:.3f} | "
                     f"{row['test_cold_recall@10']:.4f} | {row['test_warm_recall@10']:.4f} | "
                     f"{row['test_cold_recall@10'] / max(row['test_warm_recall@10'], 1e-12):.2f} | "
                     + (f"{row['test_cold_recall@10'] / knn_seed:.2f} |"
                        if (knn_seed := result["content_knn_per_seed"].get(seed)) else "- |"))
    mean = floor["mean"]
    if mean is not None:
        lines.append(f"| mean | - | - | {mean['test_ndcg@10']:.4f} | "
                     f"{mean['test_ndcg@10'] / result['mean'][0]['test_ndcg@10']:.3f} | "
                     f"{mean['test_cold_recall@10']:.4f} | {mean['test_warm_recall@10']:.4f} | "
                     f"{mean['test_cold_recall@10'] / max(mean['test_warm_recall@10'], 1e-12):.2f} | "
                     + (f"{mean['test_cold_recall@10'] / knn:.2f} |" if knn else "- |"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a `clip4rec compare` output directory with a cold split")
    parser.add_argument("--variant", default="fused-id")
    parser.add_argument("--cold-floor", type=float, default=0.5,
                        help="cold R@10 >= this x warm R@10 on validation picks the floor's boost")
    args = parser.parse_args()
    runs = seed_dirs(args.report, args.variant)
    per_seed: dict[str, list[dict[str, float]]] = {}
    among_seeds: dict[str, list[float]] = {args.variant: []}
    for run_dir in runs:
        run = Run.load(run_dir)  # once per seed: an old-format Run reloads its Dataset and stores
        per_seed[run_dir.name] = frontier(run)
        among_seeds[args.variant].append(recall_among_cold(run))
    knn_dirs = [run.parent.parent / "content-knn" / run.name for run in runs]
    if all((d / "metrics.json").exists() for d in knn_dirs):
        among_seeds["content-knn"] = [recall_among_cold(Run.load(d)) for d in knn_dirs]
    keys = [k for k in per_seed[runs[0].name][0] if k != "boost"]
    mean = [{"boost": b, **{k: float(np.mean([per_seed[s][i][k] for s in per_seed])) for k in keys}}
            for i, b in enumerate(GRID)]
    choice = [max(rows, key=lambda r: r["valid_ndcg@10"])["boost"] for rows in per_seed.values()]
    among = {variant: float(np.mean(values)) for variant, values in among_seeds.items()}
    knn_seeds = knn_cold_recalls(args.report, list(per_seed))
    floor_rows = {seed: floor_choice(rows, args.cold_floor) for seed, rows in per_seed.items()}
    chosen_rows = [r for r in floor_rows.values() if r is not None]
    floor = {"cold_floor": args.cold_floor, "per_seed": floor_rows,
             "mean": ({k: float(np.mean([r[k] for r in chosen_rows])) for k in keys}
                      if len(chosen_rows) == len(floor_rows) else None)}
    result = {"command": f"python bench/cold_frontier.py {args.report} --variant {args.variant} "
                         f"--cold-floor {args.cold_floor:g}",
              "variant": args.variant, "seeds": list(per_seed), "per_seed": per_seed, "mean": mean,
              "validation_choice": choice, "content_knn_per_seed": knn_seeds,
              "content_knn_cold_recall@10": (float(np.mean(list(knn_seeds.values())))
                                             if len(knn_seeds) == len(per_seed) else None),
              "among_cold_recall@10": among, "floor": floor}
    write_json(args.report / "cold_frontier.json", result)
    text = render(result)
    write_text(args.report / "cold_frontier.md", text)
    print(text)


if __name__ == "__main__":
    main()
