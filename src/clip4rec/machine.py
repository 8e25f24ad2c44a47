"""Which machine and which software produced a number: recorded with every trained Run, so a report built from
reused Runs still says where each one was trained (seconds per epoch compare only within one machine)."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What a Run's config.json and a compare report record; an embedding store adds its encoders' libraries.
RECORDED = ("clip4rec", "torch", "numpy")


def versions(dists: Sequence[str] = RECORDED) -> dict[str, str | None]:
    """The version of each named distribution (None where it is not installed), then Python's."""
    return {**{dist: package_version(dist) for dist in dists}, "python": platform.python_version()}


def package_version(dist: str) -> str | None:
    """One installed distribution's version; None where it is not installed."""
    if dist == "clip4rec":
        from clip4rec import __version__  # this source tree's own, also when it runs uninstalled
        return __version__
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or platform.machine())
    info: dict[str, Any] = {"cpu": cpu, "cpus": os.cpu_count(), "os": platform.platform(),
                            "torch": torch.__version__, "train_device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def describe(machine: dict[str, Any]) -> str:
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    return f"{machine['cpus']} x {machine['cpu']}{gpu}; torch {machine['torch']}; trained on `{machine['train_device']}`"


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []
