"""TREC run / qrels files, and the metrics of a run file.

Run line:   ``user Q0 item rank score tag``  (rank 1-based, item = the item_id string)
Qrels line: ``user 0 item 1``

:func:`metrics_from_trec` reads each query's target position from the files and scores it with the project's
one metric definition (``clip4rec.ranking.case_metrics``); the independent check is trec_eval itself
(``pytrec_eval``), which ``tests/test_trec.py`` runs on the same files.

Caveats, because a run file is a truncated ranking:
- A target missing from the run counts as a miss: 0 for recall/ndcg/hr and reciprocal rank 0, whereas
  the full-rank MRR in ``metrics.json`` is still 1/rank. Runs written with depth = n_items (all items
  rankable) reproduce the full-rank metrics exactly.
- We read ranks from the rank column. trec_eval instead re-sorts by score (ties by docno descending),
  so it may order genuinely tied scores differently; scores are written with 9 significant digits,
  which round-trips float32 exactly, so only true ties are affected.
- The mean runs over every query in the qrels (a query absent from the run scores 0), like
  ``trec_eval -c``.
- One relevant item per query (the next-item protocol's target); qrels with several are refused rather than
  scored by a definition nobody checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clip4rec.evaluate.metrics import summarize
from clip4rec.files import atomic_write
from clip4rec.ranking import PerCase, Rankings, case_metrics


def _check_ids(user_ids: Sequence[str]) -> None:
    if len(set(user_ids)) != len(user_ids):
        raise ValueError("user ids must be unique: each is one TREC query")
    if any(not u or any(c.isspace() for c in u) for u in user_ids):
        raise ValueError("user ids must be non-empty and contain no whitespace")


def write_run(path: str | Path, user_ids: Sequence[str], rankings: Rankings, item_ids: Sequence[str], tag: str) -> None:
    """One line per (user, ranked item); the -1 padding of short lists is skipped. Written atomically, like every
    file of a Run: a reader never sees half a ranking."""
    user_ids = list(user_ids)
    _check_ids(user_ids)
    if len(user_ids) != len(rankings):
        raise ValueError(f"{len(user_ids)} user ids but {len(rankings)} rankings")

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for u, items, scores in zip(user_ids, rankings.top_items, rankings.top_scores):
                f.writelines(f"{u} Q0 {item_ids[i]} {r} {s:.9g} {tag}\n"
                             for r, (i, s) in enumerate(zip(items.tolist(), scores.tolist()), start=1) if i >= 0)

    atomic_write(path, write)


def write_qrels(path: str | Path, user_ids: Sequence[str], targets: np.ndarray, item_ids: Sequence[str]) -> None:
    user_ids = list(user_ids)
    _check_ids(user_ids)
    if len(user_ids) != len(targets):
        raise ValueError(f"{len(user_ids)} user ids but {len(targets)} targets")
    text = "".join(f"{u} 0 {item_ids[t]} 1\n" for u, t in zip(user_ids, np.asarray(targets).tolist()))
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_run(path: str | Path) -> dict[str, list[tuple[str, int, float]]]:
    """{query: [(doc, rank, score), ...]} sorted by rank."""
    run: dict[str, list[tuple[str, int, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            q, _, doc, rank, score, _tag = line.split()
            run.setdefault(q, []).append((doc, int(rank), float(score)))
    for docs in run.values():
        docs.sort(key=lambda d: d[1])
    return run


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """{query: {doc: relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            q, _, doc, rel = line.split()
            qrels.setdefault(q, {})[doc] = int(rel)
    return qrels


def target_ranks(run_path: str | Path, qrels_path: str | Path) -> tuple[list[str], np.ndarray]:
    """(queries, ranks): each qrels query with a relevant item, in file order, and the 1-based position of that
    item in the query's run list (ordered by the rank column); ``np.inf`` where the run does not list it."""
    run, qrels = read_run(run_path), read_qrels(qrels_path)
    queries: list[str] = []
    ranks: list[float] = []
    for q, judged in qrels.items():
        relevant = [d for d, rel in judged.items() if rel > 0]
        if not relevant:
            continue
        if len(relevant) > 1:
            raise ValueError(f"query {q!r} has {len(relevant)} relevant items; these files hold one target per query")
        ranked = [doc for doc, _, _ in run.get(q, [])]
        queries.append(q)
        ranks.append(float(ranked.index(relevant[0]) + 1) if relevant[0] in ranked else np.inf)
    return queries, np.asarray(ranks, dtype=np.float64)


def per_query_metrics(run_path: str | Path, qrels_path: str | Path,
                      ks: Sequence[int] = (5, 10, 20)) -> tuple[list[str], PerCase]:
    """(queries, per-query recall@k, ndcg@k, hr@k and mrr) from a run file and its qrels."""
    queries, ranks = target_ranks(run_path, qrels_path)
    return queries, case_metrics(ranks, ks)


def metrics_from_trec(run_path: str | Path, qrels_path: str | Path, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """Mean recall@k, ndcg@k (binary gain), hr@k and mrr over the qrels queries."""
    queries, per_query = per_query_metrics(run_path, qrels_path, ks)
    if not queries:
        raise ValueError("qrels have no relevant documents")
    return summarize(per_query)
