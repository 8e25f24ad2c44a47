"""Atomic file writes, shared by every stage: a reader (or a run killed mid-write) sees the old file or the new
one, never a torn one. The new content goes to a temporary file in the same directory, then `os.replace`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, then move it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Indented JSON; numpy scalars and arrays are written as plain numbers and lists."""
    text = json.dumps(data, indent=2, default=_jsonable)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")
