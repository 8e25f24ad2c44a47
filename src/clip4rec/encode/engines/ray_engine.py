"""The Ray engine: the same batches and the same ``compute_batch``, run as a Ray Data pipeline.

    read (one row per planned batch) -> decode (CPU tasks: PIL + numpy) -> encode (actor pool, frozen model)
      -> results stream back to the driver, which writes each batch's shard as it arrives

One Ray row is one *planned batch*, not one item: the batch composition is the pipeline's, so shards, resume
and refresh are exactly those of the local engine, whichever node computed a batch. Decoding is its own stage
so that it scales with CPU count independently of the model actors (GPU actors never wait on PIL).

Local Ray by default (``ray.init(num_cpus=...)``); an existing cluster with ``address`` ("auto" or
"ray://head:10001"). Every node needs clip4rec and the encoder weights installed, and must be able to read the
image paths; the store is written by the driver only. Ray is an optional extra: ``pip install clip4rec[ray]``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator

import numpy as np

from clip4rec.encode.encoders import Encoder
from clip4rec.encode.engines.base import BatchResult, EncoderSpec, KindWork, compute_batch, text_inputs
from clip4rec.encode.images import ImagePrep, load_image


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise RuntimeError("the ray engine needs Ray Data: pip install 'clip4rec[ray]' "
                           "(or pip install 'ray[data]>=2.9')") from err
    return ray


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, actors: int | None = None, actor_cpus: float = 1.0,
                 actor_gpus: float = 0.0, decode_cpus: float = 1.0, num_cpus: int | None = None,
                 progress: bool = False) -> None:
        self.address = address
        self.actors = actors
        self.actor_cpus = actor_cpus
        self.actor_gpus = actor_gpus
        self.decode_cpus = decode_cpus
        self.num_cpus = num_cpus
        self.progress = progress
        self._started = False  # True: this engine called ray.init, so it also shuts Ray down

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "address": self.address, "actors": self.actors, "actor_cpus": self.actor_cpus,
                "actor_gpus": self.actor_gpus, "decode_cpus": self.decode_cpus}

    def _ray(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=self.progress)
            else:
                ray.init(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False,
                         log_to_driver=self.progress)
            self._started = True
        ray.data.DataContext.get_current().enable_progress_bars = self.progress
        if not self.progress:  # --quiet: no per-dataset execution plan / timing lines from Ray Data
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        return ray

    def pool_size(self, ray: Any) -> int:
        """Actors: as asked; else one per GPU (GPU actors), else the CPUs left after one decode task."""
        if self.actors:
            return self.actors
        res = ray.cluster_resources()
        if self.actor_gpus:
            return max(1, int(res.get("GPU", 0) / self.actor_gpus))
        return max(1, int((res.get("CPU", 1) - self.decode_cpus) / max(self.actor_cpus, 1e-9)))

    def compute(self, enc: Encoder, spec: EncoderSpec, fingerprint: str,
                works: list[KindWork]) -> Iterator[tuple[int, int, BatchResult]]:
        rows = [{"w": w, "b": b, "ids": list(ids), "inputs": [None if x is None else str(x) for x in inputs]}
                for w, work in enumerate(works) for b, ids, inputs in work.batches]
        if not rows:
            return
        ray = self._ray()
        kinds = [work.kind for work in works]
        outputs = [dict(work.outputs) for work in works]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        # Decode tasks reserve the memory of a decoded batch. Besides being true, it makes their resources differ
        # from the actors', which keeps Ray Data from fusing decode into the actor (where it would run serially
        # with the model and stall it, a GPU included).
        size = enc.image_prep.size if enc.image_prep is not None else (224, 224)
        biggest = max(len(ids) for work in works for _, ids, _ in work.batches)
        ds = ds.map_batches(decode_batch, batch_size=1, num_cpus=self.decode_cpus,
                            memory=(256 << 20) + 2 * biggest * size[0] * size[1] * 3,  # worker + 2 batches
                            fn_kwargs={"kinds": kinds, "prep": enc.image_prep})
        ds = ds.map_batches(EncodeActor, batch_size=1, num_cpus=self.actor_cpus, num_gpus=self.actor_gpus,
                            compute=ray.data.ActorPoolStrategy(size=self.pool_size(ray)),
                            fn_constructor_kwargs={"spec": spec, "fingerprint": fingerprint, "kinds": kinds,
                                                   "outputs": outputs, "threads": max(1, int(self.actor_cpus))})
        try:
            yield from self._results(ds, outputs)
        except ray.exceptions.RayError as err:  # e.g. an actor refused its encoder: say why in one line
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise RuntimeError(f"the Ray encode pipeline failed: {lines[-1] if lines else type(err).__name__}") from err

    @staticmethod
    def _results(ds: Any, outputs: list[dict[str, int]]) -> Iterator[tuple[int, int, BatchResult]]:
        for row in ds.iter_rows():
            w, b = int(row["w"]), int(row["b"])
            flat = np.frombuffer(row["vectors"], np.float32).reshape(int(row["rows"]), -1)
            vectors, start = {}, 0
            for m, d in outputs[w].items():
                vectors[m] = np.ascontiguousarray(flat[:, start:start + d])
                start += d
            mask = np.frombuffer(row["mask"], np.uint8).copy()
            yield w, b, BatchResult(vectors, mask, json.loads(row["reasons"]))

    def close(self) -> None:
        if self._started:
            import_ray().shutdown()
            self._started = False


def _one(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v[0] for k, v in batch.items()}


def decode_batch(batch: dict[str, np.ndarray], kinds: list[str], prep: ImagePrep | None) -> dict[str, Any]:
    """Stage 2 (CPU tasks): images -> uint8 pixels of the usable rows + reasons of the others; texts pass through."""
    row = _one(batch)
    inputs = list(row["inputs"])
    if kinds[int(row["w"])] == "image":
        assert prep is not None
        loaded = [load_image(p, prep) for p in inputs]
        good = [j for j, (_, why) in enumerate(loaded) if why is None]
        pixels = (np.stack([loaded[j][0] for j in good]) if good
                  else np.zeros((0, *prep.size, 3), np.uint8))
        why = {j: r for j, (_, r) in enumerate(loaded) if r is not None}
        inputs = [""] * len(inputs)
    else:
        good, pixels, why = [], np.zeros((0, 1, 1, 3), np.uint8), {}
    return {"w": [row["w"]], "b": [row["b"]], "ids": [list(row["ids"])], "texts": [[x or "" for x in inputs]],
            "pixels": [pixels.tobytes()], "shape": [list(pixels.shape)], "why": [json.dumps(why)]}


class EncodeActor:
    """Stage 3 (actor pool): holds one frozen encoder for its lifetime; one planned batch per call."""

    def __init__(self, spec: EncoderSpec, fingerprint: str, kinds: list[str], outputs: list[dict[str, int]],
                 threads: int = 1) -> None:
        import torch

        from clip4rec.encode.manifest import encoder_fingerprint
        torch.set_num_threads(threads)
        self.enc = spec.build()
        got = encoder_fingerprint(self.enc)
        if got != fingerprint:  # e.g. different weights installed on this node: never mix them in one store
            raise RuntimeError(f"encoder on this Ray worker has fingerprint {got[:12]}, the driver's is "
                               f"{fingerprint[:12]}: install the same weights/packages on every node")
        self.kinds, self.outputs = kinds, outputs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        row = _one(batch)
        w = int(row["w"])
        ids = [str(i) for i in row["ids"]]
        if self.kinds[w] == "image":
            shape = tuple(int(s) for s in row["shape"])
            pixels = np.frombuffer(row["pixels"], np.uint8).reshape(shape)
            why = {int(j): r for j, r in json.loads(row["why"]).items()}
            it = iter(pixels)
            loaded = [(None, why[j]) if j in why else (next(it), None) for j in range(len(ids))]
        else:
            loaded = text_inputs([str(t) for t in row["texts"]])
        res = compute_batch(self.enc, self.kinds[w], self.outputs[w], loaded, ids)
        flat = np.concatenate([res.vectors[m] for m in self.outputs[w]], axis=1)
        return {"w": [w], "b": [int(row["b"])], "vectors": [flat.tobytes()], "rows": [len(ids)],
                "mask": [res.mask.tobytes()], "reasons": [json.dumps(res.reasons, ensure_ascii=False)]}
