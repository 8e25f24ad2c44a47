"""bench/headline.py: the README's headline table is rewritten from report.json, between its markers only."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "headline.py"


def report(folder: Path, time_limit_s: float | None = None, content_mlp: int | None = None,
           cold_floor: float | None = None) -> Path:
    summary = lambda mean, lo, hi: {"mean": mean, "ci": [lo, hi], "ci_kind": "t over seeds"}  # noqa: E731
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps({
        "dataset": {"path": "/data/toy"}, "grid": {"seeds": [0, 1]},
        "item_vectors": {"id": [], "fused-id": ["lite:text"], "text": ["lite:text"]},
        "base_config": {"eval": {"exclude_seen": True}, "train": {"time_limit_s": time_limit_s},
                        "model": {**({} if content_mlp is None else {"content_mlp": content_mlp}),
                                  **({} if cold_floor is None else {"cold_floor": cold_floor})}},
        "command": "clip4rec compare toy",
        "aggregate": {"cold": {
            "pop": {"metrics": {"overall": {"ndcg@10": summary(0.05, 0.05, 0.05)}, "cold": None, "tail": None,
                                "head": None}},
            "id": {"metrics": {"overall": {"ndcg@10": summary(0.1, 0.09, 0.11), "recall@10": summary(0.2, 0.2, 0.2)},
                               "cold": {"recall@10": summary(0.0, 0.0, 0.0)}, "tail": None, "head": None}},
            "fused-id": {"metrics": {"overall": {"ndcg@10": summary(0.12, 0.1, 0.14)}, "cold": None,
                                     "tail": None, "head": None}},
            "text": {"metrics": {"overall": {"ndcg@10": summary(0.07, 0.07, 0.07)}, "cold": None,
                                 "tail": None, "head": None}}}}}))
    return folder


def test_headline_table_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- headline:start -->\nold table\n<!-- headline:end -->\nafter\n")
    capped = report(tmp_path / "capped", time_limit_s=1080.0, content_mlp=256, cold_floor=0.5)
    subprocess.run([sys.executable, str(BENCH), str(report(tmp_path / "r")), str(capped), "--readme", str(readme)],
                   check=True)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- headline:start -->\n") and text.endswith("<!-- headline:end -->\nafter\n")
    assert "old table" not in text
    row = "| toy | cold | id | learned IDs | {} | 2 | 0.1000 ± 0.0100 | 0.2000 ± 0.0000 | 0.0000 ± 0.0000 | - | - |"
    assert row.format("early stopping") in text and row.format("capped 18 min") in text
    assert "| toy | cold | fused-id | lite:text | early stopping | 2 | 0.1200 ± 0.0200 | - | - | - | - |" in text
    # A content-only row says how it maps content: a report made before model.content_mlp used the linear map.
    text_row = "| toy | cold | text | lite:text ({}) | {} | 2 | 0.0700 ± 0.0000 | - | - | - | - |"
    assert text_row.format("linear map", "early stopping") in text
    # a Run trained with model.cold_floor says so (its cold items are boosted); id and pop ignore the setting
    assert "| toy | cold | text | lite:text (MLP map), cold floor 0.5 | capped 18 min |" in text
    assert "| toy | cold | fused-id | lite:text, cold floor 0.5 | capped 18 min |" in text
    assert "| toy | cold | id | learned IDs | capped 18 min |" in text
    # A baseline trains nothing: the two reports' pop cells are one row.
    assert text.count("| toy | cold | pop | training counts | none | 2 | 0.0500 ± 0.0000 | - | - | - | - |") == 1
    assert "seen items excluded" in text


def test_headline_refuses_a_readme_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no block\n")
    run = subprocess.run([sys.executable, str(BENCH), str(report(tmp_path / "r")), "--readme", str(readme)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "headline:start" in run.stderr
    assert readme.read_text() == "# no block\n"
