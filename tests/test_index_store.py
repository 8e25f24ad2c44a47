"""`clip4rec index`: a FAISS index persisted beside a Run, loaded by `serve`, refused when the Run's item table
changed after it was built; live POST /items appends keep working over a loaded index."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install -e '.[serve]')")

from typer.testing import CliRunner  # noqa: E402

from clip4rec.cli import app as cli  # noqa: E402
from clip4rec.serve.index import FaissIndex  # noqa: E402
from clip4rec.serve.index_store import StaleIndexError, build_and_save, load_persisted  # noqa: E402
from clip4rec.serve.state import ServiceState  # noqa: E402
from tests.support.toy import build_toy, ring_vectors, train_toy_run  # noqa: E402

N = 48


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = build_toy(tmp_path_factory.mktemp("index"), n_items=N, n_users=80)
    return train_toy_run(root, "fused", root / "fused", epochs=1)


def _ids(answer: dict) -> list[str]:
    return [i["item_id"] for i in answer["items"]]


def test_index_command_persists_and_serve_loads_it(run, tmp_path):
    res = CliRunner().invoke(cli, ["index", str(run), "--kind", "hnsw", "--ef-search", "64"])
    assert res.exit_code == 0, res.output
    assert (run / "index" / "hnsw.faiss").is_file() and (run / "index" / "hnsw.json").is_file()
    assert "built hnsw index over 48 items" in res.output

    exact = ServiceState.from_run(run)
    served = ServiceState.from_run(run, index="auto")
    assert isinstance(served.snapshot.index, FaissIndex) and served.snapshot.index.kind == "hnsw"
    info = served.health()["faiss"]
    assert info["persisted"] and info["params"]["m"] == 32 and info["params"]["ef_search"] == 64
    history = [f"i{k}" for k in range(14, 20)]
    assert _ids(served.recommend(history, 10)) == _ids(exact.recommend(history, 10))  # 48 items: HNSW is exact
    # live cold start over a loaded index: the new row is scanned exactly and merged
    for state in (exact, served):
        state.publish("brand-new", ring_vectors(20, N))
    assert _ids(served.recommend(history, 10)) == _ids(exact.recommend(history, 10))
    assert "brand-new" in _ids(served.recommend(history, 10))


def test_stale_index_is_refused_with_a_clear_message(run, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    import clip4rec.serve.app
    monkeypatch.setattr(clip4rec.serve.app, "serve", lambda *a, **k: None)  # never block if it did start

    if not (run / "index" / "hnsw.json").exists():
        assert CliRunner().invoke(cli, ["index", str(run), "--kind", "hnsw"]).exit_code == 0
    moved = tmp_path / "retrained"
    shutil.copytree(run, moved)
    table = load_file(str(moved / "item_table.safetensors"))["item_table"].clone()
    table[3] += 0.5  # the Run's item table changed after the index was built
    save_file({"item_table": table}, str(moved / "item_table.safetensors"))
    with pytest.raises(StaleIndexError, match="another item table"):
        ServiceState.from_run(moved, index="auto")
    res = CliRunner().invoke(cli, ["serve", str(moved), "--port", "0"])
    assert res.exit_code == 2 and "clip4rec index" in res.output
    # --index exact still serves it; rebuilding the index makes it servable again
    assert ServiceState.from_run(moved, index="exact").snapshot.index.name == "exact"
    assert CliRunner().invoke(cli, ["index", str(moved), "--kind", "hnsw"]).exit_code == 0
    assert ServiceState.from_run(moved, index="auto").snapshot.index.kind == "hnsw"


def test_ivf_round_trip_gives_the_same_answers(tmp_path):
    g = torch.Generator().manual_seed(0)
    table = torch.randn(40, 16, generator=g).repeat(50, 1) + 0.3 * torch.randn(2000, 16, generator=g)
    ids = [f"x{i}" for i in range(len(table))]
    manifest = build_and_save(tmp_path, table, ids, kind="ivf", nprobe=4)
    assert manifest["kind"] == "ivf" and manifest["params"] == {"nlist": 44, "nprobe": 4}
    built = FaissIndex(table, kind="ivf", nprobe=4)
    loaded, _ = load_persisted(tmp_path, table, ids)
    for q in torch.randn(20, 16, generator=g):
        a, b = built.search(q, 10, exclude=[0]), loaded.search(q, 10, exclude=[0])
        assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    with pytest.raises(StaleIndexError):
        load_persisted(tmp_path, table, ids[::-1])  # same vectors, other item order: also stale
    with pytest.raises(FileNotFoundError, match="clip4rec index"):
        load_persisted(tmp_path, table, ids, kind="hnsw")
