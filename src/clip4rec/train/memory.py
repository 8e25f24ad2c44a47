"""Peak memory of one training run, recorded in its training.json (a report compares towers by it).

On CUDA: torch's peak of allocated device memory since the run started (exact, per run). On the CPU: the
process's peak resident set size (VmHWM) since the run started. A `compare` trains many Runs in one process,
so the process-lifetime peak (ru_maxrss, what bench/backbones.py reads in one child per backbone) would carry
the largest earlier Run into every later one; instead, memory freed by earlier Runs is handed back to the OS
(gc, then glibc's malloc_trim) and the kernel's peak is reset (/proc/self/clear_refs) when the run starts.
The CPU figure is the whole process (interpreter, libraries, dataset, model), as the benchmark's is.
"""

from __future__ import annotations

import ctypes
import gc
import resource
from pathlib import Path
from typing import Any

import torch


class PeakMemory:
    """`with PeakMemory(device) as peak: ...`, then `peak.result()`: {"kind", "bytes"} read when the block ended,
    or None (not measured)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.kind: str | None = None
        self.bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            if torch.cuda.is_available():  # else training refuses the device itself, with the reason
                torch.cuda.reset_peak_memory_stats(self.device)
                self.kind = "cuda_max_allocated"
            return self
        gc.collect()
        _malloc_trim()
        self.kind = "peak_rss" if _reset_peak_rss() else "process_peak_rss"  # the latter: since the process began
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "cuda_max_allocated":
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.kind == "peak_rss":
            peak = _status_kib("VmHWM")
            self.kind, self.bytes = ("peak_rss", peak * 1024) if peak is not None else ("process_peak_rss", None)
        if self.kind == "process_peak_rss" and self.bytes is None:  # ru_maxrss is in KiB on Linux
            self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def result(self) -> dict[str, Any] | None:
        return None if self.kind is None or self.bytes is None else {"kind": self.kind, "bytes": self.bytes}


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc only; elsewhere nothing to do)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS of this process to its current RSS (Linux >= 4.0: clear_refs, value 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
