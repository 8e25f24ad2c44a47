"""Paired significance between two variants, per user, from the Runs' TREC files.

Why TREC files and not metrics.json: metrics.json keeps only means and CIs, while a paired test needs each
user's value. The run files hold every user's ranking (depth 100 by default, enough for @10/@20), so any
past Run can be compared without re-scoring its model.

Seeds are pooled by averaging each user's per-seed values (over the seeds where both variants have that
user, which is every seed for leave-one-out; the cold split draws its cold items per seed, so a few users
can drop out of some seeds). The test then runs over users: the unit that was sampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from clip4rec.evaluate.trec import per_query_metrics, read_qrels

SIG_METRICS = ("ndcg@10", "recall@10")


def per_user_metrics(run_path: str | Path, qrels_path: str | Path,
                     metrics: Sequence[str] = SIG_METRICS) -> dict[str, dict[str, float]]:
    """{user: {metric: value}} for every qrels user with a relevant item (``trec.per_query_metrics``: the
    project's one metric definition); a target absent from the run is a miss."""
    ks = sorted({int(name.partition("@")[2]) for name in metrics if "@" in name} or {10})
    users, per_case = per_query_metrics(run_path, qrels_path, ks)
    unknown = [name for name in metrics if name not in per_case]
    if unknown:
        raise ValueError(f"unsupported metric(s) {unknown}; use recall@K, ndcg@K, hr@K or mrr")
    columns = {name: per_case[name].tolist() for name in metrics}
    return {user: {name: columns[name][i] for name in metrics} for i, user in enumerate(users)}


def pooled_pairs(run_pairs: Sequence[tuple[Path, Path]], metric: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-user arrays (a, b) of one metric, averaged over seeds.

    ``run_pairs``: one (run_dir_a, run_dir_b) per seed; both must hold the same test cases for that seed
    (same split), which is checked: pairing users across different targets would be meaningless.
    """
    sums_a: dict[str, float] = {}
    sums_b: dict[str, float] = {}
    seen: dict[str, int] = {}
    for dir_a, dir_b in run_pairs:
        qa, qb = read_qrels(dir_a / "test.qrels.trec"), read_qrels(dir_b / "test.qrels.trec")
        if qa != qb:
            raise ValueError(f"{dir_a} and {dir_b} were evaluated on different test cases; cannot pair them")
        va, vb = _per_user_cached(dir_a, metric), _per_user_cached(dir_b, metric)
        for user in va:
            sums_a[user] = sums_a.get(user, 0.0) + va[user][metric]
            sums_b[user] = sums_b.get(user, 0.0) + vb[user][metric]
            seen[user] = seen.get(user, 0) + 1
    users = sorted(seen)
    a = np.array([sums_a[u] / seen[u] for u in users])
    b = np.array([sums_b[u] / seen[u] for u in users])
    return a, b, users


def _per_user_cached(run_dir: Path, metric: str) -> dict[str, dict[str, float]]:
    """Every SIG_METRICS value from one parse of a Run's test files: a report pairs each Run with several
    others, and a large catalog's run file (22k users x 100 ranks) takes seconds to parse."""
    run, qrels = run_dir / "test.run.trec", run_dir / "test.qrels.trec"
    if metric not in SIG_METRICS:
        return per_user_metrics(run, qrels, [metric])
    stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in (run, qrels))
    return _per_user_all(str(run), str(qrels), stamp)


@lru_cache(maxsize=64)
def _per_user_all(run: str, qrels: str, stamp: tuple) -> dict[str, dict[str, float]]:
    return per_user_metrics(run, qrels, SIG_METRICS)


def paired_test(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """Paired t-test and Wilcoxon signed-rank of a vs b over the same units, the mean difference a - b with
    its t-interval, and the relative lift of a over b in %.

    JSON-ready: a statistic that is undefined (no differences at all, or a zero baseline mean) is None, not NaN.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired arrays must be 1-D and equal length, got {a.shape} and {b.shape}")
    n = len(a)
    d = a - b
    out: dict[str, Any] = {"n": n, "mean_a": _num(a.mean()) if n else None, "mean_b": _num(b.mean()) if n else None,
                           "mean_diff": _num(d.mean()) if n else None, "diff_ci": None, "lift_pct": None,
                           "t_p": None, "wilcoxon_p": None}
    if n and b.mean() != 0:
        out["lift_pct"] = _num(100.0 * (a.mean() - b.mean()) / b.mean())
    if n < 2:
        return out
    out["diff_ci"] = [_num(v) for v in t_interval(d, alpha)]
    if d.std(ddof=1) > 0:
        out["t_p"] = _num(stats.ttest_rel(a, b).pvalue)
    elif d.mean() == 0:  # identical on every unit: no evidence of a difference
        out["t_p"] = 1.0
    # else: a constant non-zero shift has no t-test p (zero variance); Wilcoxon still answers below.
    if np.any(d != 0):
        out["wilcoxon_p"] = _num(stats.wilcoxon(a, b).pvalue)
    else:
        out["wilcoxon_p"] = 1.0
    return out


def t_interval(x: np.ndarray | Sequence[float], alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided (1 - alpha) Student-t interval of the mean of ``x`` (at least two values): the interval over
    seeds in compare reports, and over users for a paired difference."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"a t-interval needs a 1-D sample of at least 2 values, got shape {x.shape}")
    mean, sem = float(x.mean()), float(stats.sem(x))
    if sem == 0:  # scipy wants scale > 0; a constant sample's interval is the value itself
        return mean, mean
    lo, hi = stats.t.interval(1 - alpha, len(x) - 1, loc=mean, scale=sem)
    return float(lo), float(hi)


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
