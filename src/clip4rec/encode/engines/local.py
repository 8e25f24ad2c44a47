"""The local engine: the model in this process, images decoded a few batches ahead by a worker pool.

Threads by default: PIL releases the GIL while decoding/resizing; ``decode="process"`` for a process pool. At
most ``prefetch`` batches of decoded pixels exist at once, so memory stays bounded on any catalog size.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Iterator

from clip4rec.config import DecodePool
from clip4rec.encode.encoders import Encoder
from clip4rec.encode.engines.base import BatchResult, EncoderSpec, KindWork, Loaded, compute_batch, text_inputs
from clip4rec.encode.images import ImagePrep, load_image


class LocalEngine:
    name = "local"

    def __init__(self, workers: int | None = None, decode: DecodePool = "thread", prefetch: int = 2) -> None:
        if decode not in ("thread", "process"):
            raise ValueError(f"decode must be 'thread' or 'process', not {decode!r}")
        self.workers = workers if workers is not None else max(1, min(4, (os.cpu_count() or 2)))
        self.decode = decode
        self.prefetch = prefetch

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "workers": self.workers, "decode": self.decode}

    def compute(self, enc: Encoder, spec: EncoderSpec, fingerprint: str,
                works: list[KindWork]) -> Iterator[tuple[int, int, BatchResult]]:
        for w, work in enumerate(works):
            loaded_batches = (self._decoded(enc.image_prep, work) if work.kind == "image"
                              else ((b, text_inputs(inputs)) for b, _, inputs in work.batches))
            for (b, loaded), (_, ids, _) in zip(loaded_batches, work.batches):
                yield w, b, compute_batch(enc, work.kind, work.outputs, loaded, ids)

    def close(self) -> None:
        pass

    def _decoded(self, prep: ImagePrep | None, work: KindWork) -> Iterator[tuple[int, Loaded]]:
        """(batch number, loaded rows) in ``work.batches`` order, decoding up to ``prefetch`` batches ahead."""
        pool: Executor
        if self.decode == "process":
            import multiprocessing as mp
            pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        else:
            pool = ThreadPoolExecutor(self.workers)
        with pool:
            queue: deque = deque()
            it = iter(work.batches)

            def submit() -> None:
                nxt = next(it, None)
                if nxt is not None:
                    b, _, paths = nxt
                    chunk = max(1, len(paths) // self.workers)
                    queue.append((b, [pool.submit(load_many, paths[k:k + chunk], prep)
                                      for k in range(0, len(paths), chunk)]))

            for _ in range(max(1, self.prefetch)):
                submit()
            while queue:
                b, futs = queue.popleft()
                submit()
                yield b, [r for f in futs for r in f.result()]


def load_many(paths: list[Any], prep: ImagePrep | None) -> Loaded:
    assert prep is not None
    return [load_image(p, prep) for p in paths]
