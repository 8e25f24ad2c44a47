"""train.memory.PeakMemory: each Run's peak is its own, not the largest Run trained before it in the process
(what `compare` needs: many Runs, one process)."""

from __future__ import annotations

import numpy as np
import pytest

from clip4rec.train.memory import PeakMemory

MIB = 2**20


def _touch(mib: int) -> np.ndarray:
    return np.ones(mib * MIB, dtype=np.uint8)  # written, so resident


def test_a_later_run_does_not_inherit_an_earlier_runs_peak():
    with PeakMemory("cpu") as big:
        block = _touch(300)
        del block
    if big.kind != "peak_rss":
        pytest.skip("no per-run peak here (/proc/self/clear_refs not writable): the process-lifetime peak is recorded")
    with PeakMemory("cpu") as small:
        block = _touch(20)
        del block
    a, b = big.result(), small.result()
    assert a["kind"] == b["kind"] == "peak_rss"
    assert a["bytes"] - b["bytes"] > 250 * MIB    # the 300 MiB block counted in the first run only
    assert b["bytes"] > 20 * MIB                   # the whole process, the small block included


def test_an_unavailable_gpu_is_left_to_training_to_refuse():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with PeakMemory("cuda") as peak:
        pass
    assert peak.result() is None
