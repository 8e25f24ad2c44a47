"""Atomic file writes, shared by every stage: a reader (or a run killed mid-write) sees the old file or the new
one, never a torn one. The new content goes to a temporary file in the same directory, then `os.replace`.

``fsync=True`` also survives a power cut: the file's bytes reach the disk before the rename, and the rename itself
(the directory entry) right after. Files that other runs resume from or trust without a check (an embedding
store's manifest) ask for it; the rest skip the cost."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], *, fsync: bool = False) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, then move it into place (see the module
    docstring for `fsync`)."""
    path = Path(path)
    # One temporary name per process and thread: two writers of the same file never write into each other's.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        write(tmp)
        if fsync:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike[str], data: Any, *, fsync: bool = False) -> Path:
    """Indented JSON; numpy scalars and arrays are written as plain numbers and lists."""
    text = json.dumps(data, indent=2, default=_jsonable)
    return atomic_write(path, lambda tmp: tmp.write_text(text), fsync=fsync)


def write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> Path:
    """A text file (reports, markdown) through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text), fsync=fsync)


def atomic_directory(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temporary folder beside `path`, then rename it into place.

    For folders whose content is fixed by their name (a cache keyed by a digest): where `path` appeared
    meanwhile (another process finished first), theirs is kept and ours discarded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        write(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # a non-empty folder is there: another writer won the race
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")
