"""Encode engines: how pending batches become vectors (``local``: this process; ``ray``: a Ray Data pipeline).

The pipeline owns planning, shards, resume and the store format; see ``base.py`` for the contract.
"""

from clip4rec.encode.engines.base import (BatchResult, Engine, EncoderSpec, KindWork, compute_batch, get_engine,
                                          text_inputs)

__all__ = ["BatchResult", "Engine", "EncoderSpec", "KindWork", "compute_batch", "get_engine", "text_inputs"]
