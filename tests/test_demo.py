"""The demo's report tells the truth about itself: the command the user typed, a short-demo note, no goal
graded, the Run directories; and the demo ends with a serve command for a Run that exists."""

import json
from pathlib import Path

import pytest
import yaml

from clip4rec.config import load_config
from clip4rec.experiments.demo import Stages, cell_log, mark_as_demo, serve_command
from clip4rec.experiments.compare import compare
from tests.test_compare import N_ITEMS, TINY, RingEncoder
from tests.ring_data import save_ring_dataset


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    root = save_ring_dataset(tmp_path_factory.mktemp("demo"), N_ITEMS, 60, (5, 9), seed=2, encoder=RingEncoder())
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    report = compare(root / "ds", ["text", "fused"], [7], ["loo"], [root / "store"], load_config(root / "tiny.yaml"),
                     root / "report", command="make demo", log=lambda m: None)
    return root, report


def test_demo_report_says_it_is_short_grades_nothing_and_lists_runs(demo_report):
    root, report = demo_report
    assert any(g["met"] is not None for g in report["goals"])  # compare alone grades fused vs text
    marked = mark_as_demo(report, root / "report", max_epochs=2)
    md = (root / "report" / "report.md").read_text()
    assert "Command: `make demo`" in md
    assert "> A short demo: one seed, at most 2 epochs per variant" in md
    assert "docs/results/ml100k_content/report.md" in md
    goals = md.split("## Goals")[1].split("\n## ")[0]
    assert "**met**" not in goals and "**missed**" not in goals and "not graded by the short demo" in goals
    assert all(g["met"] is None for g in marked["goals"])
    assert json.loads((root / "report" / "report.json").read_text())["note"] == marked["note"]
    assert "| loo | fused | `runs/loo/fused/seed7` |" in md


def test_serve_command_names_a_run_that_exists_relative_to_the_working_directory(demo_report, monkeypatch):
    root, _ = demo_report
    run = root / "report" / "runs" / "loo" / "fused" / "seed7"
    monkeypatch.chdir(root)
    command = serve_command(run)
    assert command.endswith(" serve report/runs/loo/fused/seed7")
    assert (root / command.split(" serve ")[1] / "model.safetensors").is_file()


def test_progress_lines_give_estimates_and_time_left():
    lines: list[str] = []
    stages = Stages(["import", "train"], lines.append)
    stages.end(stages.begin("train", "train"))
    assert lines[0].startswith("[2/2] train (about ") and lines[0].endswith(" on 2 quiet cores)")
    assert lines[1].startswith("      took ")
    write = cell_log(4, lines.append)
    write("[1/4] split=loo variant=id seed=42: training -> x")
    write("[1/4] split=loo variant=id seed=42: done in 1.0s  ndcg@10 0.1  recall@10 0.2")
    assert lines[-1].startswith("      1/4 variants done, about ") and lines[-1].endswith(" left")
