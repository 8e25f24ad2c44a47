"""Our side of the peer benchmark (runs in clip4rec's venv, never imports recbole).

export_atomic: a Dataset -> RecBole atomic files, so that RecBole's own leave-one-out split
(eval_args.split LS valid_and_test, order TO, group_by user) is our `make_split(ds, "loo")`:
  NAME.inter  user_id:token  item_id:token  timestamp:float   one row per interaction, in our order
  NAME.item   item_id:token                                   every catalog item (full ranking is over all of them)
The timestamp written is the row's position in the user's sequence (0, 1, 2, ...), never the source timestamp:
RecBole sorts by (user, timestamp) and would otherwise be free to reorder timestamp ties (ML-100K has many).
Nothing is filtered, deduplicated or remapped here; users with fewer than 3 interactions, which our
split skips entirely (no train, validation or test), are left out so both toolkits see the same users.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from clip4rec.data.dataset import Dataset
from clip4rec.data.splits import user_sequences

MIN_SEQ = 3  # as clip4rec.data.splits.make_split: a training item, a validation target, a test target
_BAD_TOKEN = re.compile(r"[\s\"']")  # breaks RecBole's TSV reader or a whitespace-separated TREC file


def export_atomic(dataset: Dataset, root: str | Path, name: str) -> dict[str, Any]:
    """Write root/name/name.{inter,item}; returns counts and the files' sha256."""
    users, sequences, item_ids = user_sequences(dataset)
    bad = [t for t in [*users, *item_ids] if not t or _BAD_TOKEN.search(t)]
    if bad:
        raise ValueError(f"ids with whitespace or quotes cannot be exported to atomic/TREC files: {bad[:5]}")
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    inter_lines = ["user_id:token\titem_id:token\ttimestamp:float\n"]
    n_users = n_rows = skipped = 0
    for user, seq in zip(users, sequences):
        if len(seq) < MIN_SEQ:
            skipped += 1
            continue
        n_users += 1
        n_rows += len(seq)
        inter_lines += [f"{user}\t{item_ids[code]}\t{t}\n" for t, code in enumerate(seq.tolist())]
    _write(folder / f"{name}.inter", "".join(inter_lines))
    _write(folder / f"{name}.item", "".join(["item_id:token\n", *(f"{i}\n" for i in item_ids)]))
    return {
        "dir": str(folder), "users": n_users, "items": len(item_ids), "interactions": n_rows,
        "users_too_short_skipped": skipped,
        "inter_sha256": _sha256(folder / f"{name}.inter"), "item_sha256": _sha256(folder / f"{name}.item"),
    }


def read_atomic_inter(path: str | Path) -> list[tuple[str, str, int]]:
    """(user, item, timestamp) rows of an exported .inter file (for tests and checks)."""
    lines = Path(path).read_text().splitlines()
    if lines[0] != "user_id:token\titem_id:token\ttimestamp:float":
        raise ValueError(f"unexpected header in {path}: {lines[0]!r}")
    rows = []
    for line in lines[1:]:
        u, i, t = line.split("\t")
        rows.append((u, i, int(float(t))))
    return rows


def split_check(ours: dict[str, str], theirs: dict[str, str]) -> dict[str, Any]:
    """Compare the (user, target) pair hashes of the two toolkits' validation and test cases."""
    out: dict[str, Any] = {}
    for part in ("valid", "test"):
        a, b = ours[f"{part}_pairs_sha256"], theirs[f"{part}_pairs_sha256"]
        out[part] = {"clip4rec": a, "recbole": b, "equal": a == b}
    out["identical"] = all(out[p]["equal"] for p in ("valid", "test"))
    return out


def counts_check(ours: dict[str, int], theirs: dict[str, int]) -> dict[str, Any]:
    keys = ("users", "items", "interactions")
    rows = {k: {"clip4rec": int(ours[k]), "recbole": int(theirs[k])} for k in keys}
    return {"counts": rows, "equal": all(r["clip4rec"] == r["recbole"] for r in rows.values())}


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
