"""PNG figures of a comparison report (matplotlib, Agg backend: no display needed).

Every figure names the encoder(s) behind each variant's item vectors in its legend, so a figure that leaves
the report still says what produced its numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clip4rec.experiments.arms import Arm, arm_keys  # noqa: E402
from clip4rec.files import atomic_write  # noqa: E402

PLOT_SEGMENTS = ("overall", "cold", "warm", "head", "tail")
OVERALL_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr")


def _label(report: dict[str, Any], key: str) -> str:
    """An arm (variant, or variant/backbone) and the encoders of its variant's item vectors."""
    variant = Arm.from_key(key).variant
    src = report["item_vectors"].get(variant) or []
    if variant == "pop":
        return "pop (training popularity)"
    return f"{key} ({' + '.join(src) if src else 'learned IDs'})"


def _bar(summary: dict[str, Any] | None) -> tuple[float, float, float]:
    """(height, lower error, upper error); NaN height for a missing value so the bar is simply absent."""
    if not summary:
        return float("nan"), 0.0, 0.0
    mean, ci = summary["mean"], summary.get("ci")
    return (mean, mean - ci[0], ci[1] - mean) if ci else (mean, 0.0, 0.0)


def grouped_bars(groups: list[str], series: dict[str, list[dict[str, Any] | None]], title: str, ylabel: str,
                 path: Path) -> None:
    """One group of bars per entry of ``groups``, one bar per series, CI error bars."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for j, (name, values) in enumerate(series.items()):
        bars = [_bar(v) for v in values]
        ax.bar(x + (j - (len(series) - 1) / 2) * width, [b[0] for b in bars], width,
               yerr=np.array([[b[1] for b in bars], [b[2] for b in bars]]), capsize=3, label=name)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))  # the temporary name says no format
    plt.close(fig)


def write_plots(report: dict[str, Any], out: Path) -> list[str]:
    """Per split: overall Recall/NDCG/MRR and NDCG@10 by segment; training time per variant. Returns file names
    relative to ``out``."""
    agg, variants, n = report["aggregate"], arm_keys(report), len(report["grid"]["seeds"])
    interval = "95% t-interval over seeds" if n > 1 else "95% bootstrap CI over users"
    written = []
    for split, per_variant in agg.items():
        name = f"overall_{split}.png"
        series = {_label(report, v): [per_variant[v]["metrics"]["overall"].get(m) for m in OVERALL_METRICS]
                  for v in variants}
        grouped_bars(list(OVERALL_METRICS), series, f"Overall test metrics, split {split}, {n} seed(s), {interval}",
                     "value", out / name)
        written.append(name)
        name = f"ndcg10_{split}.png"
        series = {_label(report, v): [(per_variant[v]["metrics"][seg] or {}).get("ndcg@10") for seg in PLOT_SEGMENTS]
                  for v in variants}
        grouped_bars(list(PLOT_SEGMENTS), series, f"NDCG@10 by test segment, split {split}, {n} seed(s), {interval}",
                     "NDCG@10", out / name)
        written.append(name)
    series = {_label(report, v): [agg[split][v]["training"]["train_seconds"] for split in agg] for v in variants}
    grouped_bars([f"split {s}" for s in agg], series, f"Training time per run, {n} seed(s), {interval}",
                 "seconds", out / "train_time.png")
    written.append("train_time.png")
    return written
