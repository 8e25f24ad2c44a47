"""A streaming safetensors writer (numpy only); reading goes through ``safetensors.safe_open``.

Why a writer of our own: ``safetensors.numpy.save_file`` needs every tensor in memory at once; the store is
written row-chunk by row-chunk so memory stays bounded whatever the catalog size. Files written here are
ordinary safetensors files. Writes go to a temp file in the same directory, are fsync'ed, then ``os.replace``d:
readers see the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

_DT = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "I64": np.int64, "I32": np.int32, "F64": np.float64}
_NAME = {np.dtype(v): k for k, v in _DT.items()}


class StreamWriter:
    """Declare tensors (name, dtype, shape) up front, then ``write(name, rows)`` in order, then ``commit()``."""

    def __init__(self, path: str | os.PathLike[str], specs: list[tuple[str, Any, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.specs = [(n, np.dtype(dt), tuple(int(s) for s in shape)) for n, dt, shape in specs]
        header: dict[str, Any] = {}
        offset = 0
        for name, dt, shape in self.specs:
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            header[name] = {"dtype": _NAME[dt], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.fh = os.fdopen(fd, "wb")
        self.fh.write(struct.pack("<Q", len(raw)) + raw)
        self._order = [n for n, _, _ in self.specs]
        self._left = {n: int(np.prod(shape, dtype=np.int64)) * dt.itemsize for n, dt, shape in self.specs}
        self._dtype = {n: dt for n, dt, _ in self.specs}
        self._pos = 0

    def write(self, name: str, array: np.ndarray) -> None:
        while self._pos < len(self._order) and self._left[self._order[self._pos]] == 0:
            self._pos += 1
        if self._pos >= len(self._order) or self._order[self._pos] != name:
            raise ValueError(f"tensors must be written in declared order; got {name!r}")
        data = np.ascontiguousarray(array, dtype=self._dtype[name]).tobytes()
        if len(data) > self._left[name]:
            raise ValueError(f"too many bytes for tensor {name!r}")
        self.fh.write(data)
        self._left[name] -= len(data)

    def commit(self) -> Path:
        unfinished = {n: b for n, b in self._left.items() if b}
        if unfinished:
            self.abort()
            raise ValueError(f"tensors not fully written: {unfinished}")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        try:
            self.fh.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is not None:
            self.abort()


def save(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Atomic write of small in-memory tensors."""
    with StreamWriter(path, [(n, a.dtype, a.shape) for n, a in tensors.items()], metadata) as w:
        for n, a in tensors.items():
            w.write(n, a)
        return w.commit()


def open_file(path: str | os.PathLike[str]) -> Any:
    """``safe_open`` (numpy) on a file; a truncated or foreign file is a ValueError that names it."""
    from safetensors import SafetensorError, safe_open
    try:
        return safe_open(str(path), framework="numpy")
    except SafetensorError as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def load(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors (in memory) and the metadata of a small file (a shard, the alignment heads)."""
    with open_file(path) as f:
        return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
