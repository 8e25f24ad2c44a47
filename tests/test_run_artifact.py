"""A Run is self-contained: copied to another folder, with the Dataset and the embedding store it was trained on
deleted, it loads, evaluates and serves exactly as it did in place (Run.save / Run.load, model/artifact.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("httpx", reason="the serve extra is not installed (pip install -e '.[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from clip4rec.api import Run, evaluate, train  # noqa: E402
from clip4rec.serve.app import create_app  # noqa: E402
from clip4rec.serve.state import ServiceState  # noqa: E402
from tests.support.toy import build_toy, ring_vectors, toy_config  # noqa: E402

N = 40
# fused-id reads the content tables through fitted means and bases; content-knn through centred unit vectors:
# both must come back from the Run's own files, not from the (deleted) store.
VARIANTS = {"fused-id": "cold", "content-knn": "loo"}
RESULTS = ("metrics.json", "test.run.trec", "test.qrels.trec", "valid.run.trec", "valid.qrels.trec")


def answers(run_dir: Path) -> dict[str, Any]:
    """What the service answers for a fixed set of requests (timings left out; `has_image` kept apart)."""
    state = ServiceState.from_run(run_dir)
    client = TestClient(create_app(state))
    out: dict[str, Any] = {}
    for name, body in {"history": {"history": ["i3", "i4", "i5"], "k": 10},
                       "user": {"user_id": state.user_ids[7], "k": 10, "exclude_seen": False},
                       "user+history": {"user_id": state.user_ids[2], "history": ["i9"], "k": 5}}.items():
        r = client.post("/recommend", json=body)
        assert r.status_code == 200, r.text
        out[name] = {k: v for k, v in r.json().items() if k != "took_ms"}
    out["similar"] = client.get("/items/i11/similar", params={"by": "fused", "k": 5}).json()
    out["user history"] = client.get(f"/users/{state.user_ids[3]}").json()
    out["publish"] = client.post("/items", json={"item_id": "new", "vectors": ring_vectors(17.5, N)}).json()
    out["after publish"] = client.post("/recommend", json={"history": ["i14", "i15", "i16"], "k": 10}).json()["items"]
    listed = [item for key in ("history", "user", "user+history") for item in out[key]["items"]]
    listed += out["similar"]["items"] + out["after publish"]
    images = [item.pop("has_image") for item in listed if item["item_id"] != "new"]  # published: never one
    return {"answers": out, "has_image": images}


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """Per variant: (metrics and serve answers in place, the Run copied elsewhere); then the Dataset and store
    (and the posters the Dataset references) are deleted."""
    tmp = tmp_path_factory.mktemp("artifact")
    root = build_toy(tmp / "toy", n_items=N, n_users=80)
    out = {}
    for variant, split in VARIANTS.items():
        cfg = toy_config(variant, root / "store", epochs=2, split=split)
        cfg.model.modalities = ["ring:image", "ring:llm_text"]  # fused-id's default; two for content-knn too
        cfg.eval.n_boot = 20  # bootstrap CIs are seeded: they must come out the same too
        run_dir = tmp / "runs" / variant
        metrics = train(root / "ds", run_dir, cfg, progress=False)
        in_place = answers(run_dir)
        copy = tmp / "elsewhere" / variant
        shutil.copytree(run_dir, copy)
        out[variant] = (run_dir, metrics, in_place, copy)
    shutil.rmtree(root)
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_moved_run_evaluates_to_the_same_files(moved, variant):
    original, metrics, _, copy = moved[variant]
    run = Run.load(copy)
    assert run.config.model.variant == variant and run.kind == VARIANTS[variant]
    assert json.loads((copy / "config.json").read_text())["dataset"] != str(copy)  # it still names the old one
    assert not Path(run.record["dataset"]).exists()
    assert evaluate(copy, progress=False) == metrics
    for name in RESULTS:
        assert (copy / name).read_bytes() == (original / name).read_bytes(), name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_moved_run_serves_the_same_answers(moved, variant):
    _, _, in_place, copy = moved[variant]
    elsewhere = answers(copy)
    assert elsewhere["answers"] == in_place["answers"]
    # Images are referenced, not copied: with the Dataset's posters gone, the moved Run serves none.
    assert all(in_place["has_image"]) and not any(elsewhere["has_image"])


def test_save_and_load_are_symmetric(moved, tmp_path):
    _, _, _, copy = moved["fused-id"]
    run = Run.load(copy)
    again = Run.load(run.save(tmp_path / "resaved"))
    for name in ("model.safetensors", "item_table.safetensors", "data.safetensors", "data.json", "run.json",
                 "split.json", "item_ids.json"):
        assert (tmp_path / "resaved" / name).read_bytes() == (copy / name).read_bytes(), name
    assert torch.equal(again.item_table, run.item_table) and again.test.user_ids == run.test.user_ids


def test_an_old_format_run_without_its_dataset_says_to_retrain(moved, tmp_path):
    _, _, _, copy = moved["fused-id"]
    old = tmp_path / "old"
    shutil.copytree(copy, old)
    for name in ("run.json", "data.safetensors", "data.json"):  # what Runs lacked before they were self-contained
        (old / name).unlink()
    with pytest.raises(FileNotFoundError, match="written before Runs carried their own data .* train it again"):
        Run.load(old)
