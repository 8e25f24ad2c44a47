"""Packages follow the pipeline: no import (lazy ones included) goes from a stage to a later one, no package
cycle, and docs/architecture.md shows the graph as the code has it. The rules live in bench/architecture.py."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def arch():
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "bench" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_goes_against_the_pipeline_and_no_package_cycle(arch):
    edges = arch.import_edges()
    assert arch.violations(edges) == []
    assert arch.cycles(edges) == []


def test_architecture_page_is_generated_from_the_code(arch):
    page = ROOT / "docs" / "architecture.md"
    assert page.read_text() == arch.render(arch.import_edges()), "run: python bench/architecture.py"


def test_the_check_sees_lazy_relative_and_cyclic_imports(arch, tmp_path):
    src = tmp_path / "clip4rec"
    for pkg in ("data", "model", "train"):
        (src / pkg).mkdir(parents=True)
        (src / pkg / "__init__.py").write_text("")
    (src / "config.py").write_text("")
    (src / "data" / "splits.py").write_text("def f():\n    from clip4rec.train.run import train  # lazy\n")
    (src / "train" / "run.py").write_text("from ..data import splits\nfrom clip4rec import config, __version__\n")
    (src / "model" / "build.py").write_text("import clip4rec.train.run\n")
    edges = arch.import_edges(src)
    assert edges == {("data", "train"): {"data/splits.py"}, ("train", "data"): {"train/run.py"},
                     ("train", "config"): {"train/run.py"}, ("model", "train"): {"model/build.py"}}
    bad = arch.violations(edges)
    assert len(bad) == 2 and bad[0].startswith("data (layer data) imports train") and "model (layer model)" in bad[1]
    assert arch.cycles(edges) == [["data", "train", "data"]]
    (src / "newstage").mkdir()
    (src / "newstage" / "__init__.py").write_text("from clip4rec.data import splits\n")
    assert any("newstage is on no layer" in v for v in arch.violations(arch.import_edges(src)))
