"""Encode engines: how pending batches become vectors (``local``: this process; ``ray``: a Ray Data pipeline).

The pipeline owns planning, shards, resume and the store format; see ``base.py`` for the contract. Engines are
chosen by name here, above ``base``, so that ``base`` never imports the engines built on it.
"""

from __future__ import annotations

from clip4rec.config import EngineConfig
from clip4rec.encode.engines.base import (BatchResult, Engine, EncoderSpec, KindWork, compute_batch,
                                          text_inputs)

__all__ = ["BatchResult", "Engine", "EncoderSpec", "KindWork", "compute_batch", "get_engine", "text_inputs"]


def get_engine(config: EngineConfig | None = None) -> Engine:
    """``local`` (this process + a decode pool) or ``ray`` (a Ray Data pipeline; needs ``clip4rec[ray]``)."""
    c = config or EngineConfig()
    if c.name == "local":
        from clip4rec.encode.engines.local import LocalEngine
        return LocalEngine(workers=c.workers, decode=c.decode, prefetch=c.prefetch)
    from clip4rec.encode.engines.ray_engine import RayEngine
    return RayEngine(address=c.address, actors=c.actors, actor_cpus=c.actor_cpus, actor_gpus=c.actor_gpus,
                     decode_cpus=c.decode_cpus, num_cpus=c.num_cpus, progress=c.progress)
