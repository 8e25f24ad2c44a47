"""clip4rec.files: the one atomic-write helper (with or without fsync) and the writers built on it."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from clip4rec import __version__

from clip4rec.encode.store import MANIFEST, read_manifest, write_manifest
from clip4rec.files import atomic_directory, atomic_write, write_json, write_text
from clip4rec.machine import versions


@pytest.mark.parametrize("fsync", [False, True])
def test_atomic_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path, fsync: bool, monkeypatch):
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    atomic_write(path, lambda tmp: tmp.write_bytes(b"new"), fsync=fsync)
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    assert len(synced) == (2 if fsync else 0)  # the file before the rename, its directory after


def test_a_failed_write_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "a.json"
    write_json(path, {"v": 1})

    def half(tmp: Path) -> None:
        tmp.write_text('{"v": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, half, fsync=True)
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_write_json_writes_numpy_values_as_plain_json(tmp_path: Path):
    path = write_json(tmp_path / "x.json", {"n": np.int64(3), "a": np.arange(2)}, fsync=True)
    assert path.read_text() == json.dumps({"n": 3, "a": [0, 1]}, indent=2)


def test_store_manifest_encoding_is_unchanged(tmp_path: Path):
    """The store manifest keeps its own encoding (non-ASCII kept, other values as str), now through atomic_write."""
    manifest = {"title": "Amélie", "path": tmp_path, "n": 2}
    write_manifest(tmp_path / "store", manifest)
    raw = (tmp_path / "store" / MANIFEST).read_bytes()
    assert raw == json.dumps(manifest, indent=2, default=str, ensure_ascii=False).encode("utf-8")
    assert read_manifest(tmp_path / "store")["title"] == "Amélie"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [MANIFEST]


def test_atomic_directory_moves_a_finished_folder_into_place_and_keeps_a_winner(tmp_path: Path):
    target = tmp_path / "cache" / "model-abc"
    atomic_directory(target, lambda tmp: (tmp / "weights").write_text("ours"))
    assert (target / "weights").read_text() == "ours"
    # another process finished first: its folder stays, ours is dropped
    atomic_directory(target, lambda tmp: (tmp / "weights").write_text("late"))
    assert (target / "weights").read_text() == "ours"

    def dies(tmp: Path) -> None:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_directory(tmp_path / "cache" / "model-def", dies)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model-abc"]  # no half folder left


def test_write_text_and_a_png_through_atomic_write(tmp_path: Path):
    from clip4rec.experiments.plots import grouped_bars

    assert write_text(tmp_path / "r.md", "# report\n").read_text() == "# report\n"
    # matplotlib picks a format from the file name; the temporary name has none, so the plot names it
    grouped_bars(["loo"], {"id": [{"mean": 0.1, "ci": [0.05, 0.15]}]}, "t", "y", tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "r.md"]


def test_versions_are_recorded_from_one_place():
    record = versions()
    assert list(record) == ["clip4rec", "torch", "numpy", "python"]
    assert record["clip4rec"] == __version__ and record["torch"] == torch.__version__ and record["numpy"] == np.__version__
    assert record["python"] == platform.python_version()
    assert versions(("no-such-distribution",)) == {"no-such-distribution": None, "python": platform.python_version()}
