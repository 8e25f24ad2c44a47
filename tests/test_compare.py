"""`clip4rec compare`: the grid, the report files, resuming, the paired tests and the goals logic.

One tiny grid (2 splits x 4 variants x 2 seeds, 2 epochs each) is trained once per module and shared.
"""

import json
import math
import shutil

import numpy as np
import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from clip4rec.cli import app
from clip4rec.config import load_config
from clip4rec.encode.encoders.base import Encoder
from clip4rec.experiments.compare import cell_dir, compare, goals, seed_summary
from clip4rec.evaluate.significance import paired_test, pooled_pairs, t_interval
from tests.ring_data import save_ring_dataset

N_ITEMS = 30
VARIANTS = ["id", "text", "fused", "fused-id"]
SPLITS = ["loo", "cold"]
TINY = {"seed": 0, "split": {"cold_fraction": 0.2},
        "model": {"hidden": 16, "max_len": 8, "layers": 1, "heads": 1, "dropout": 0.1},
        "train": {"max_epochs": 2, "batch_size": 64, "lr": 5e-3, "patience": 5, "threads": 1},
        "eval": {"n_boot": 20, "ks": [5, 10], "run_depth": N_ITEMS}}


class RingEncoder(Encoder):
    """Deterministic stand-in: 'item k' -> ring features. It also emits an "image" table from the text, so the
    fused variants (image + llm_text) run without image files; only the table names matter to stage 2."""

    name = "ring"

    def __init__(self) -> None:
        super().__init__()
        self.text_outputs = {"llm_text": 4, "image": 2}
        self.text_fields = ("text",)
        self.note = "test encoder"

    def identity(self):
        return {"source": "tests/test_compare.py"}

    def encode_texts(self, texts):
        k = np.array([float(t.split()[-1]) for t in texts])[:, None]
        angle = 2 * np.pi * k * np.arange(1, 3)[None, :] / N_ITEMS
        return {"llm_text": np.concatenate([np.cos(angle), np.sin(angle)], 1).astype(np.float32),
                "image": np.concatenate([np.cos(angle[:, :1]), np.sin(angle[:, :1])], 1).astype(np.float32)}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = save_ring_dataset(tmp_path_factory.mktemp("compare"), N_ITEMS, 60, (5, 9), seed=2, encoder=RingEncoder())
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    logs: list[str] = []
    report = compare(root / "ds", VARIANTS, 2, SPLITS, [root / "store"], load_config(root / "tiny.yaml"),
                     root / "report", log=logs.append)
    return root, report, logs


def test_grid_trains_every_cell_and_writes_the_report(grid):
    root, report, logs = grid
    out = root / "report"
    for split in SPLITS:
        for v in VARIANTS:
            for s in (0, 1):
                metrics = json.loads((cell_dir(out, split, v, s) / "metrics.json").read_text())
                assert metrics["variant"] == v and metrics["split"]["kind"] == split and metrics["split"]["seed"] == s
    assert len(report["cells"]) == 16 and report["grid"]["trained_now"] == 16
    # One machine trained all 16 cells, and each Run recorded it.
    assert [m["cells"] for m in report["machines"]] == [16]
    assert report["machines"][0]["machine"]["train_device"] == "cpu"
    assert sum("training" in line for line in logs) == 16
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["aggregate"].keys() == {"loo", "cold"}
    assert on_disk["item_vectors"] == {"id": [], "text": ["ring:llm_text"], "fused": ["ring:image", "ring:llm_text"],
                                       "fused-id": ["ring:image", "ring:llm_text"]}
    assert list(on_disk["stores"].values())[0]["ring"]["identity"] == {"source": "tests/test_compare.py"}
    md = (out / "report.md").read_text()
    for heading in ("### Overall", "### Cold vs warm", "### Head vs tail", "### Beyond accuracy",
                    "### Paired significance", "### Training time and parameters", "## Goals"):
        assert md.count(heading) >= 1, heading
    assert "ring:image + ring:llm_text" in md and "No cold-item test cases in this split." in md  # loo has none
    assert report["plots"] == ["overall_loo.png", "ndcg10_loo.png", "overall_cold.png", "ndcg10_cold.png",
                               "train_time.png"]
    for name in report["plots"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_aggregate_is_the_t_interval_over_the_seeds_metrics(grid):
    root, report, _ = grid
    runs = [json.loads((cell_dir(root / "report", "cold", "fused-id", s) / "metrics.json").read_text()) for s in (0, 1)]
    agg = report["aggregate"]["cold"]["fused-id"]
    x = np.array([r["metrics"]["cold"]["recall@10"] for r in runs])
    half = stats.t.ppf(0.975, 1) * x.std(ddof=1) / math.sqrt(2)
    got = agg["metrics"]["cold"]["recall@10"]
    assert got["mean"] == pytest.approx(x.mean()) and got["ci"] == pytest.approx([x.mean() - half, x.mean() + half])
    assert got["per_seed_bootstrap_ci"] == [r["ci"]["cold"]["recall@10"] for r in runs]
    assert report["aggregate"]["loo"]["fused-id"]["metrics"]["cold"] is None        # no cold items in loo
    assert agg["parameters"] == runs[0]["training"]["parameters"] > 0
    assert agg["training"]["train_seconds"]["per_seed"] == [r["training"]["train_seconds"] for r in runs]


def test_report_shows_each_runs_fitted_knn_term(grid):
    root, report, _ = grid
    fits = [json.loads((cell_dir(root / "report", "cold", "fused-id", s) / "training.json").read_text())
            ["content_weight"] for s in (0, 1)]
    got = report["aggregate"]["cold"]["fused-id"]["knn_fit"]
    assert got["weight"] == [f["chosen"] for f in fits] and got["recency"] == [f["chosen_recency"] for f in fits]
    assert got["paired_p"] == [f["paired_p"] for f in fits] and got["rule"] == fits[0]["rule"]
    assert report["aggregate"]["cold"]["id"]["knn_fit"] is None  # no content term to fit
    md = (root / "report" / "report.md").read_text()
    row = f"| fused-id | {fits[0]['chosen']:g}, {fits[1]['chosen']:g} | {fits[0]['chosen_recency']:g}, " \
          f"{fits[1]['chosen_recency']:g} | {fits[0]['paired_p']:.2g}, {fits[1]['paired_p']:.2g} |"
    assert md.count("### Knn term fitted on validation (per seed)") == 2 and row in md
    assert f"Rule: {fits[0]['rule']}." in md


def test_significance_from_trec_matches_the_runs_metrics(grid):
    # Leave-one-out test users are the same for every seed, so the pooled per-user mean must equal the
    # mean over seeds of each run's own ndcg@10 (the run files hold every rank <= 10 here).
    root, report, _ = grid
    sig = report["significance"]["loo"]["vs_text"]["fused"]["ndcg@10"]
    means = {v: np.mean([json.loads((cell_dir(root / "report", "loo", v, s) / "metrics.json").read_text())
                         ["metrics"]["overall"]["ndcg@10"] for s in (0, 1)]) for v in ("fused", "text")}
    assert sig["mean_a"] == pytest.approx(means["fused"]) and sig["mean_b"] == pytest.approx(means["text"])
    assert set(report["significance"]["cold"]) == {"vs_text", "vs_id"}
    assert "text" not in report["significance"]["cold"]["vs_text"]


def test_second_call_reruns_nothing(grid, monkeypatch):
    root, _, _ = grid
    import clip4rec.experiments.compare as compare_module
    calls = []
    monkeypatch.setattr(compare_module, "train_and_evaluate", lambda *a, **k: calls.append(a))
    stamps = {p: p.stat().st_mtime_ns for p in (root / "report" / "runs").rglob("metrics.json")}
    result = CliRunner().invoke(app, ["compare", str(root / "ds"), "--variants", ",".join(VARIANTS), "--seeds", "2",
                                      "--splits", ",".join(SPLITS), "--store", str(root / "store"),
                                      "--config", str(root / "tiny.yaml"), "--out", str(root / "report"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert calls == [] and len(stamps) == 16
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    report = json.loads((root / "report" / "report.json").read_text())
    assert report["grid"]["trained_now"] == 0
    assert report["command"].startswith(f"clip4rec compare {root / 'ds'} --out ")
    assert "--seeds 2 --seed-base 0 --splits loo,cold --store" in report["command"] and "--quiet" in report["command"]
    assert "goal " in result.output


def test_changed_settings_do_not_reuse_finished_cells(grid):
    root, _, _ = grid
    cfg = load_config(root / "tiny.yaml", {"train.max_epochs": 3})
    with pytest.raises(ValueError, match="another config"):
        compare(root / "ds", ["id"], 1, ["loo"], [root / "store"], cfg, root / "report", log=lambda m: None)


def test_modalities_do_not_count_for_a_variant_that_reads_none(grid, monkeypatch, tmp_path):
    root, _, _ = grid
    import clip4rec.experiments.compare as compare_module
    calls = []
    monkeypatch.setattr(compare_module, "train_and_evaluate", lambda *a, **k: calls.append(a))
    shutil.copytree(root / "report" / "runs", tmp_path / "report" / "runs")  # the grid's report stays as it is
    cfg = load_config(root / "tiny.yaml", {"model.modalities": ["ring:image"]})
    compare(root / "ds", ["id"], 1, ["loo"], [root / "store"], cfg, tmp_path / "report", log=lambda m: None)
    assert calls == []  # the finished id cell is reused: it never read a modality
    with pytest.raises(ValueError, match="another config"):  # text read ring:llm_text; now it would read image
        compare(root / "ds", ["text"], 1, ["loo"], [root / "store"], cfg, tmp_path / "report", log=lambda m: None)


# ---- paired tests on hand-made TREC files -----------------------------------------------------------
def write_run_dir(path, ranks: dict[str, int | None], n_items: int = 30):
    """A Run directory whose test run puts user u's target at ranks[u] (None = not in the run)."""
    path.mkdir(parents=True)
    run, qrels = [], []
    for u, r in ranks.items():
        target = f"t_{u}"
        qrels.append(f"{u} 0 {target} 1\n")
        docs = [f"x{j}" for j in range(n_items)]
        if r is not None:
            docs.insert(r - 1, target)
        run += [f"{u} Q0 {d} {i} {100 - i} tag\n" for i, d in enumerate(docs[:n_items], start=1)]
    (path / "test.run.trec").write_text("".join(run))
    (path / "test.qrels.trec").write_text("".join(qrels))


def ndcg10(r):
    return 1 / math.log2(r + 1) if r is not None and r <= 10 else 0.0


def test_paired_tests_pool_seeds_per_user_and_match_scipy(tmp_path):
    users = [f"u{i}" for i in range(8)]
    a_ranks = [[1, 1, 3, 12, 2, 1, 4, None], [2, 1, 1, 9, 2, 3, 4, 1]]
    b_ranks = [[2, 5, 3, 1, 20, 7, 8, 2], [1, 6, 4, 1, None, 7, 11, 2]]
    pairs = []
    for s in range(2):
        write_run_dir(tmp_path / f"a{s}", dict(zip(users, a_ranks[s])))
        write_run_dir(tmp_path / f"b{s}", dict(zip(users, b_ranks[s])))
        pairs.append((tmp_path / f"a{s}", tmp_path / f"b{s}"))
    a, b, got_users = pooled_pairs(pairs, "ndcg@10")
    exp_a = np.array([(ndcg10(a_ranks[0][i]) + ndcg10(a_ranks[1][i])) / 2 for i in range(8)])
    exp_b = np.array([(ndcg10(b_ranks[0][i]) + ndcg10(b_ranks[1][i])) / 2 for i in range(8)])
    assert got_users == users
    np.testing.assert_allclose(a, exp_a)
    np.testing.assert_allclose(b, exp_b)
    t = paired_test(a, b)
    assert t["n"] == 8
    assert t["mean_diff"] == pytest.approx((exp_a - exp_b).mean(), abs=1e-12)
    assert t["t_p"] == pytest.approx(stats.ttest_rel(exp_a, exp_b).pvalue, rel=1e-12)
    assert t["wilcoxon_p"] == pytest.approx(stats.wilcoxon(exp_a, exp_b).pvalue, rel=1e-12)
    assert t["lift_pct"] == pytest.approx(100 * (exp_a.mean() / exp_b.mean() - 1))
    d = exp_a - exp_b
    half = stats.t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
    assert t["diff_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    recall_a, recall_b, _ = pooled_pairs(pairs, "recall@10")
    assert recall_a.tolist() == [1, 1, 1, 0.5, 1, 1, 1, 0.5] and recall_b.tolist() == [1, 1, 1, 1, 0, 1, 0.5, 1]


def test_pairing_refuses_runs_on_different_test_cases(tmp_path):
    write_run_dir(tmp_path / "a", {"u1": 1, "u2": 2})
    write_run_dir(tmp_path / "b", {"u1": 1, "u3": 2})
    with pytest.raises(ValueError, match="different test cases"):
        pooled_pairs([(tmp_path / "a", tmp_path / "b")], "ndcg@10")


def test_identical_variants_are_not_significant():
    x = np.array([0.1, 0.5, 0.0, 1.0])
    t = paired_test(x, x.copy())
    assert t["mean_diff"] == 0 and t["t_p"] == 1.0 and t["wilcoxon_p"] == 1.0 and t["lift_pct"] == 0


# ---- aggregation helpers and goals on hand-made numbers ---------------------------------------------
def test_t_interval_matches_the_t_table():
    # 1..5: mean 3, sd sqrt(2.5), t(0.975, df 4) = 2.776445105197799 from a t table: 3 -/+ 1.963243...
    half = 2.776445105197799 * math.sqrt(2.5) / math.sqrt(5)
    assert t_interval([1, 2, 3, 4, 5]) == pytest.approx((3 - half, 3 + half), rel=1e-14)
    # two seeds (df 1, t = 12.706204736174707): the widest interval a report prints
    assert t_interval([0.10, 0.12]) == pytest.approx((0.11 - 12.706204736174707 * 0.01, 0.11 + 0.12706204736174707),
                                                     rel=1e-13)
    assert t_interval([0.25, 0.25, 0.25]) == (0.25, 0.25)  # no spread: the value itself, not NaN
    assert seed_summary([1, 2, 3, 4, 5])["ci"] == list(t_interval([1, 2, 3, 4, 5]))
    with pytest.raises(ValueError):
        t_interval([0.3])


def test_seed_summary_single_seed_uses_bootstrap_and_missing_is_none():
    one = seed_summary([0.3], [[0.25, 0.35]])
    assert one["mean"] == 0.3 and one["ci"] == [0.25, 0.35] and one["ci_kind"].startswith("bootstrap")
    assert seed_summary([0.3, None]) is None


def agg_entry(**segments):
    return {"metrics": {seg: vals and {m: {"mean": v} for m, v in vals.items()} for seg, vals in segments.items()}}


def test_goals_are_computed_from_the_aggregate():
    agg = {
        "loo": {"text": agg_entry(overall={"ndcg@10": 0.100}, head={"ndcg@10": 0.2}),
                "fused": agg_entry(overall={"ndcg@10": 0.111}),
                "id": agg_entry(head={"ndcg@10": 0.300}),
                "fused-id": agg_entry(head={"ndcg@10": 0.293}, cold=None, warm={"recall@10": 0.2})},
        "cold": {"text": agg_entry(overall={"ndcg@10": 0.100}),
                 "fused": agg_entry(overall={"ndcg@10": 0.109}),
                 "id": agg_entry(head={"ndcg@10": 0.300}),
                 "fused-id": agg_entry(head={"ndcg@10": 0.295}, cold={"recall@10": 0.09}, warm={"recall@10": 0.2})},
    }
    rows = {(r["goal"], r["split"]): r for r in goals(agg)}
    assert rows[("fused_vs_text", "loo")]["met"] is True                    # +11%
    assert rows[("fused_vs_text", "cold")]["met"] is False                  # +9%
    assert rows[("fused_vs_text", "cold")]["values"] == {"fused ndcg@10": 0.109, "text ndcg@10": 0.1}
    assert rows[("fused_id_cold", "cold")]["met"] is False                  # 0.09 < 0.5 * 0.2
    assert rows[("fused_id_cold", "cold")]["ratio"] == pytest.approx(0.45)
    assert ("fused_id_cold", "loo") not in rows                             # no cold segment in loo
    assert rows[("fused_id_head", "loo")]["met"] is False                   # -2.33%
    assert rows[("fused_id_head", "cold")]["met"] is True                   # -1.67%
    only_text = goals({"loo": {"text": agg_entry(overall={"ndcg@10": 0.1})}})
    assert [r["met"] for r in only_text] == [None] * 6
    assert "fused and text" in {r["goal"]: r for r in only_text}["fused_vs_text"]["note"]


def test_goals_choose_the_content_variant_by_validation_and_need_p_for_fused_id():
    def entry(valid, **segments):
        return {**agg_entry(**segments), "valid_ndcg@10": {"mean": valid}}
    agg = {"cold": {"text": entry(0.05, cold={"recall@10": 0.20}, overall={"ndcg@10": 0.1}),
                    "fused-id": entry(0.07, cold={"recall@10": 0.09}, overall={"ndcg@10": 0.12}),
                    "id": entry(0.06, overall={"ndcg@10": 0.1}),
                    "content-knn": entry(0.01, cold={"recall@10": 0.06})}}
    sig = {"cold": {"vs_id": {"fused-id": {"ndcg@10": {"t_p": 0.2}}}}}
    rows = {r["goal"]: r for r in goals(agg, sig)}
    knn = rows["content_vs_knn_cold"]
    # fused-id has the better validation score, so it is the one held to the goal, though text is better on test
    assert knn["chosen"] == "fused-id" and knn["ratio"] == pytest.approx(1.5) and knn["met"] is True
    assert rows["fused_id_vs_id"]["ratio"] == pytest.approx(1.2) and rows["fused_id_vs_id"]["met"] is False
    sig["cold"]["vs_id"]["fused-id"]["ndcg@10"]["t_p"] = 0.01
    assert {r["goal"]: r for r in goals(agg, sig)}["fused_id_vs_id"]["met"] is True


def test_render_only_rewrites_markdown_and_plots_from_report_json(grid, tmp_path):
    root, report, _ = grid
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "report.json").write_text((root / "report" / "report.json").read_text())  # no Runs beside it
    result = CliRunner().invoke(app, ["compare", str(root / "ds"), "--out", str(copy), "--render-only"])
    assert result.exit_code == 0, result.output
    assert (copy / "report.md").read_text() == (root / "report" / "report.md").read_text()
    assert sorted(p.name for p in copy.glob("*.png")) == sorted(report["plots"])
    missing = CliRunner().invoke(app, ["compare", str(root / "ds"), "--out", str(tmp_path / "none"), "--render-only"])
    assert missing.exit_code == 2 and "report.json" in missing.output


def test_report_shows_each_comparison_once_epochs_as_integers_and_the_run_directories(grid):
    root, report, _ = grid
    md = (root / "report" / "report.md").read_text()
    for split in SPLITS:
        section = md.split(f"## Split `{split}`")[1].split("\n## ")[0]
        table = section.split("### Paired significance")[1].split("###")[0]
        labels = [row.split(" | ")[0].lstrip("| ") for row in table.splitlines() if " vs " in row]
        assert sorted(set(labels)) == ["fused vs id", "fused vs text", "fused-id vs id", "fused-id vs text",
                                       "id vs text"]  # never "text vs id" as well
        from clip4rec.evaluate.significance import SIG_METRICS
        assert len(labels) == 5 * len(SIG_METRICS)  # one row per comparison and metric
        training = section.split("### Training time and parameters")[1]
        for v in VARIANTS:
            cells = next(r for r in training.splitlines() if r.startswith(f"| {v} |")).split(" | ")
            t = report["aggregate"][split][v]["training"]
            for cell, field in zip(cells[-2:], ("best_epoch", "epochs_run")):
                per_seed = [int(x) for x in t[field]["per_seed"]]
                expected = str(per_seed[0]) if len(set(per_seed)) == 1 else f"{min(per_seed)}-{max(per_seed)}"
                assert cell.strip(" |") == expected, (v, field, cell)
    runs = md.split("## Run directories (relative to this report)")[1]
    assert "| loo | id | `runs/loo/id/seed0`, `runs/loo/id/seed1` |" in runs
    assert runs.count("`runs/") == 16


def test_render_only_with_a_note_prints_it_under_the_title(grid, tmp_path):
    root, _, _ = grid
    copy = tmp_path / "noted"
    copy.mkdir()
    (copy / "report.json").write_text((root / "report" / "report.json").read_text())
    result = CliRunner().invoke(app, ["compare", str(root / "ds"), "--out", str(copy), "--render-only",
                                      "--note", "cells of seed 0 trained before the change"])
    assert result.exit_code == 0, result.output
    lines = (copy / "report.md").read_text().splitlines()
    assert lines[0].startswith("# ") and "> cells of seed 0 trained before the change" in lines[:6]
    assert json.loads((copy / "report.json").read_text())["note"] == "cells of seed 0 trained before the change"
