"""Full-ranking evaluation of a Run on its validation and test cases: metrics.json and TREC run/qrels files.

Reads the Run alone (model, item table, cases: see model.artifact), never its Dataset or stores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clip4rec.data.splits import EvalCases
from clip4rec.evaluate.segments import evaluate_rankings
from clip4rec.evaluate.trec import write_qrels, write_run
from clip4rec.files import write_json
from clip4rec.model.artifact import Run
from clip4rec.ranking import Rankings, rank_cases


def evaluate(run: Run | str | Path, progress: bool = True) -> dict[str, Any]:
    """Evaluate a Run (or the Run directory at that path); writes metrics.json and the TREC files beside it
    and returns the metrics dict."""
    if not isinstance(run, Run):
        run = Run.load(run)
    if run.root is None:
        raise ValueError("save the Run (Run.save) before evaluating it: the results are written beside it")
    ev = run.config.eval
    out: dict[str, Any] = {}
    for name, cases in (("test", run.test), ("valid", run.valid)):
        rankings = _rank(run, cases, ev.exclude_seen, min(ev.run_depth, run.n_items), progress)
        out[name] = evaluate_rankings(rankings, cases.targets, run.train_counts, _cold(run), ks=tuple(ev.ks),
                                      item_vectors=run.model.item_vectors(run.item_table).cpu().numpy(), n_boot=ev.n_boot,
                                      seed=run.config.seed)
        write_run(run.root / f"{name}.run.trec", cases.user_ids, rankings, run.item_ids,
                  tag=f"clip4rec-{run.config.model.variant}")
        write_qrels(run.root / f"{name}.qrels.trec", cases.user_ids, cases.targets, run.item_ids)
    metrics = {**out["test"], "valid": out["valid"], "variant": run.config.model.variant, "split": run.split,
               "exclude_seen": ev.exclude_seen, "other_protocol": _other_protocol(run)}
    training_path = run.root / "training.json"
    if training_path.exists():
        metrics["training"] = json.loads(training_path.read_text())
    write_json(run.root / "metrics.json", metrics)
    return metrics


def _rank(run: Run, cases: EvalCases, exclude_seen: bool, depth: int, progress: bool = False) -> Rankings:
    model, table = run.model.eval(), run.item_table
    return rank_cases(lambda hs: model.score(hs, table), cases.histories, cases.targets, run.n_items,
                      exclude_seen=exclude_seen, depth=depth, batch_size=run.config.eval.batch_size,
                      progress=progress)


def _cold(run: Run) -> np.ndarray | None:
    """The cold-item mask where the split has cold items (the cold segment is empty otherwise)."""
    return run.cold_items if run.kind == "cold" else None


def _other_protocol(run: Run) -> dict[str, Any]:
    """Test metrics (no CIs, no TREC files) under the opposite `exclude_seen` setting, so every report shows a
    result both with seen items excluded and with them ranked (where users repeat items, excluding them is wrong)."""
    ev = run.config.eval
    flipped = not ev.exclude_seen
    rankings = _rank(run, run.test, flipped, max(ev.ks))
    result = evaluate_rankings(rankings, run.test.targets, run.train_counts, _cold(run), ks=tuple(ev.ks), n_boot=0)
    return {"exclude_seen": flipped, "metrics": result["metrics"], "counts": result["counts"]}
