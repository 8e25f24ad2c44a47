"""Format the result of ``evaluate_rankings`` as a text or Markdown table (segments x metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def metrics_table(
    result: dict[str, Any],
    metrics: Sequence[str] | None = None,
    with_ci: bool = True,
    fmt: str = "markdown",
    digits: int = 4,
) -> str:
    """One row per segment (with its case count), one column per metric; "-" for empty segments.

    ``metrics`` defaults to every metric of the first non-empty segment. With ``with_ci`` each cell
    reads ``value [lo, hi]`` when CIs were computed.
    """
    segs = list(result["metrics"])
    if metrics is None:
        first = next((result["metrics"][s] for s in segs if result["metrics"][s]), None)
        metrics = list(first) if first else []
    header = ["segment", "n", *metrics]
    rows = []
    for s in segs:
        vals, ci = result["metrics"][s], (result.get("ci") or {}).get(s)
        cells = [s, str(result["counts"][s])]
        for m in metrics:
            if not vals:
                cells.append("-")
                continue
            cell = f"{vals[m]:.{digits}f}"
            if with_ci and ci:
                lo, hi = ci[m]
                cell += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
            cells.append(cell)
        rows.append(cells)

    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    elif fmt == "text":
        widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    else:
        raise ValueError(f"unknown fmt {fmt!r}; use 'markdown' or 'text'")
    return "\n".join(lines) + "\n"
