"""What an encode engine is: the one pluggable step of the pipeline, "compute vectors for these pending batches".

The pipeline (``clip4rec.encode.pipeline``) decides which rows need encoding, cuts them into batches, writes
every finished batch as a shard, resumes from shards and assembles the store; an engine only turns pending
batches into vectors. Both engines call :func:`compute_batch` on exactly the batches the pipeline planned, so a
shard holds the same rows (and, up to float noise across machines/threads, the same numbers) whichever engine
computed it, and resume/refresh behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np

from clip4rec.encode.encoders import Encoder, load_encoder

Loaded = list[tuple[Any, str | None]]  # per row: (model-ready input | None, reason it is unusable | None)


@dataclass
class KindWork:
    """The pending batches of one kind ("image" or "text"): (batch number, item ids, inputs) each.

    Inputs are image paths (str | None) or composed texts; plain data, so it pickles to remote workers.
    """

    kind: str
    outputs: dict[str, int]
    batches: list[tuple[int, list[str], list[Any]]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(ids) for _, ids, _ in self.batches)


@dataclass
class BatchResult:
    vectors: dict[str, np.ndarray]   # modality -> float32 [rows, d]; zero rows where mask is 0
    mask: np.ndarray                 # uint8 [rows]
    reasons: dict[str, str]          # item id -> why its input was unusable


@dataclass
class EncoderSpec:
    """How to rebuild the driver's encoder in another process: by registry name + options, or (an Encoder
    instance handed to ``encode_dataset``) the instance itself, pickled."""

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    instance: Encoder | None = None

    def build(self) -> Encoder:
        if self.instance is not None:
            return self.instance
        assert self.name is not None
        return load_encoder(self.name, **self.options)


class Engine(Protocol):
    name: str

    def compute(self, enc: Encoder, spec: EncoderSpec, fingerprint: str,
                works: list[KindWork]) -> Iterator[tuple[int, int, BatchResult]]:
        """Yield (index into ``works``, batch number, result) for every pending batch, in any order."""
        ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def text_inputs(texts: list[str]) -> Loaded:
    return [((t, None) if t else (None, "empty text")) for t in texts]


def compute_batch(enc: Encoder, kind: str, outputs: dict[str, int], loaded: Loaded, ids: list[str]) -> BatchResult:
    """Vectors of one planned batch: the model runs on the usable rows only; unusable rows stay zero, mask 0."""
    vec = {m: np.zeros((len(ids), d), np.float32) for m, d in outputs.items()}
    mask = np.zeros(len(ids), np.uint8)
    reasons = {ids[j]: why for j, (_, why) in enumerate(loaded) if why is not None}
    good = [j for j, (_, why) in enumerate(loaded) if why is None]
    if good:
        if kind == "image":
            assert enc.image_prep is not None
            result = enc.encode_images(enc.image_prep.normalize(np.stack([loaded[j][0] for j in good])))
        else:
            result = enc.encode_texts([loaded[j][0] for j in good])
        for m in outputs:
            vec[m][good] = np.asarray(result[m], np.float32)
        mask[good] = 1
    return BatchResult(vec, mask, reasons)
