"""The content weight fitted on validation after training (train.calibrate): it picks the weight whose
validation NDCG@10 is best, as the evaluation path ranks it; it is saved with the Run; and a Run trained before
the step existed is fitted and evaluated again by `compare`, once."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from clip4rec.evaluate.evaluator import evaluate
from clip4rec.experiments.pipeline import fit_content_weight_of_finished
from clip4rec.model.artifact import Run
from clip4rec.train.calibrate import CONTENT_WEIGHTS, KNN_RECENCIES, RULE, fit_content_weight
from clip4rec.train.trainer import validation_ndcg10
from tests.support.toy import build_toy, train_toy_run


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = build_toy(tmp_path_factory.mktemp("calibrate"), n_items=40, n_users=100, images=False)
    train_toy_run(root, "fused-id", root / "fused-id", epochs=2)
    return root


def valid_ndcg_at(run: Run, weight: float, recency: float = 1.0) -> float:
    """Validation NDCG@10 with the content weight set to `weight` and the knn profile's recency to `recency`,
    through the trainer's own ranking path."""
    with torch.no_grad():
        run.model.item_side.content_weight.fill_(weight)
        run.model.item_side.knn_recency.fill_(recency)
    return validation_ndcg10(run.model, run, run.config.eval.batch_size, run.config.eval.exclude_seen)


def test_training_fits_the_weight_and_saves_it_with_the_run(toy):
    training = json.loads((toy / "fused-id" / "training.json").read_text())
    record = training["content_weight"]
    assert record["weights"] == list(CONTENT_WEIGHTS) and record["rule"] == RULE
    assert record["recencies"] == list(KNN_RECENCIES) and record["trained_recency"] == 1.0
    grid = record["valid_ndcg@10_by_recency"]
    assert grid["1"] == record["valid_ndcg@10"]
    best_value = grid[f"{record['best_recency']:g}"][CONTENT_WEIGHTS.index(record["best"])]
    assert best_value == max(max(values) for values in grid.values())
    moved = record["paired_p"] < 0.05
    assert (record["chosen"], record["chosen_recency"]) == ((record["best"], record["best_recency"]) if moved
                                                            else (1.0, 1.0))
    run = Run.load(toy / "fused-id")
    assert float(run.model.item_side.content_weight) == record["chosen"]
    assert float(run.model.item_side.knn_recency) == pytest.approx(record["chosen_recency"])
    # what was recorded for each setting is what the trainer's validation ranking gives at that setting
    for recency in (1.0, 0.5):
        for w, value in zip(CONTENT_WEIGHTS, grid[f"{recency:g}"]):
            assert valid_ndcg_at(run, w, recency) == pytest.approx(value, abs=1e-9)


def test_a_content_term_scaled_down_is_scaled_back_up(toy):
    """On the ring catalog the next item is the content neighbour of the last one, so content matters: with
    its learned scales cut to a quarter, the fit must pick a weight above 1, and fitting again changes nothing.
    (A quarter, so that the largest weight, 4, can restore them. Cut to a twentieth, a weight of 4 wins back only
    part of the loss, and whether that part passed the paired test differed between two fresh installs.)"""
    run = Run.load(toy / "fused-id")
    with torch.no_grad():
        run.model.item_side.knn_scale.mul_(0.25)
    record = fit_content_weight(run.model, run.valid, exclude_seen=True)
    assert record["chosen"] > 1.0 and record["paired_p"] < 0.05
    chosen_row = record["valid_ndcg@10_by_recency"][f"{record['chosen_recency']:g}"]
    assert chosen_row[CONTENT_WEIGHTS.index(record["chosen"])] > record["valid_ndcg@10"][1] + 0.01
    again = fit_content_weight(run.model, run.valid, exclude_seen=True)
    assert again["chosen"] == record["chosen"] and again["valid_ndcg@10"] == record["valid_ndcg@10"]
    assert again["chosen_recency"] == record["chosen_recency"]


def test_an_id_model_has_no_content_weight(tmp_path):
    root = build_toy(tmp_path, n_items=24, n_users=40, images=False)
    train_toy_run(root, "id", root / "id", epochs=1)
    assert json.loads((root / "id" / "training.json").read_text())["content_weight"] is None
    assert fit_content_weight(Run.load(root / "id").model, Run.load(root / "id").valid, True) is None
    assert fit_content_weight_of_finished(root / "id") is False


def test_a_run_saved_before_the_step_is_fitted_once_and_evaluated_again(toy, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(toy / "fused-id", old)
    # As such a Run was saved: no content_weight in its weights, none in training.json, metrics of weight 1.
    weights = load_file(old / "model.safetensors")
    del weights["item_side.content_weight"], weights["item_side.knn_recency"]
    save_file(weights, str(old / "model.safetensors"))
    training = json.loads((old / "training.json").read_text())
    del training["content_weight"]
    (old / "training.json").write_text(json.dumps(training))
    loaded = Run.load(old)
    assert float(loaded.model.item_side.content_weight) == 1.0  # loads as what it computed
    assert float(loaded.model.item_side.knn_recency) == 1.0
    with torch.no_grad():
        loaded.model.item_side.knn_scale.mul_(0.05)  # a learned scale the fit may want to undo
    loaded.save(old)
    evaluate(loaded, progress=False)
    before = json.loads((old / "metrics.json").read_text())

    assert fit_content_weight_of_finished(old) is True
    record = json.loads((old / "training.json").read_text())["content_weight"]
    assert record["chosen"] == (record["best"] if record["paired_p"] < 0.05 else 1.0)
    refitted = Run.load(old)
    assert float(refitted.model.item_side.knn_recency) == pytest.approx(record["chosen_recency"])
    assert float(refitted.model.item_side.content_weight) == record["chosen"]
    after = json.loads((old / "metrics.json").read_text())
    assert after["training"]["content_weight"] == record
    # the new validation NDCG@10 is the fit's at the chosen weight, the old one the fit's at weight 1
    chosen_row = record["valid_ndcg@10_by_recency"][f"{record['chosen_recency']:g}"]
    chosen_at = chosen_row[CONTENT_WEIGHTS.index(record["chosen"])]
    learned_at = record["valid_ndcg@10"][CONTENT_WEIGHTS.index(1.0)]
    assert after["valid"]["metrics"]["overall"]["ndcg@10"] == pytest.approx(chosen_at, abs=1e-9)
    assert before["valid"]["metrics"]["overall"]["ndcg@10"] == pytest.approx(learned_at, abs=1e-9)
    # the metrics are those of the saved, refitted Run
    assert evaluate(refitted, progress=False)["metrics"] == after["metrics"]
    assert fit_content_weight_of_finished(old) is False  # once
    training = json.loads((old / "training.json").read_text())
    training["content_weight"]["rule"] = "an earlier rule"
    (old / "training.json").write_text(json.dumps(training))
    assert fit_content_weight_of_finished(old) is True  # fitted again under the current rule
    np.testing.assert_array_equal(load_file(old / "model.safetensors")["item_side.content_weight"],
                                  np.float32(record["chosen"]))
