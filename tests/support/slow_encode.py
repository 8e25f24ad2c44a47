"""``python -m tests.support.slow_encode DATASET ENCODER OUT``: what ``clip4rec encode DATASET --encoder ENCODER
--out OUT --batch-size 4 --workers 2 --quiet`` does, pausing after each finished shard so that a test can kill it
mid-way (kill -9) and check that the next run resumes to the same store. The pause lives in a wrapping engine,
so the pipeline itself carries no test hook."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterator

from clip4rec.config import EncodeConfig
from clip4rec.encode.engines.local import LocalEngine
from clip4rec.encode.pipeline import encode_dataset

PAUSE_S = 0.3


class SlowEngine(LocalEngine):
    """The local engine, sleeping after each batch it hands over (the pipeline writes that batch's shard first)."""

    def compute(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for result in super().compute(*args, **kwargs):
            yield result
            time.sleep(PAUSE_S)


if __name__ == "__main__":
    dataset, encoder, out = sys.argv[1:4]
    encode_dataset(dataset, encoder, out, EncodeConfig(batch_size=4), engine=SlowEngine(workers=2), progress=False)
