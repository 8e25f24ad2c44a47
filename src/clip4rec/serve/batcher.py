"""Coalescing of concurrent /recommend calls into one user-tower pass and one table product."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clip4rec.serve.state import ServiceState


class Batcher:
    """Coalesces concurrent /recommend calls: whatever is queued when the previous batch finishes goes together
    into one user-tower pass and one table product (`ServiceState.recommend_many`), on one compute thread.

    Nothing waits for a batch to fill: a lone request runs at once, alone. Under load the table is read once
    per batch instead of once per request, so throughput grows with concurrency instead of latency.
    """

    def __init__(self, state: ServiceState, max_batch: int = 16) -> None:
        self.state, self.max_batch = state, max_batch
        self.pending: list[tuple[tuple[list[str], int, bool], asyncio.Future]] = []
        self.busy = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="clip4rec-recommend")
        self.batches = self.requests = 0

    async def submit(self, history: list[str], k: int, exclude_seen: bool) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append(((history, k, exclude_seen), future))
        if not self.busy:
            self._start(loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch:]
        self.busy = True
        self.batches += 1
        self.requests += len(batch)
        work = loop.run_in_executor(self.executor, self.state.recommend_many, [args for args, _ in batch])
        work.add_done_callback(lambda done: self._finish(loop, batch, done))

    def _finish(self, loop: asyncio.AbstractEventLoop, batch, done: asyncio.Future) -> None:
        self.busy = False
        error = done.exception()
        results = [error] * len(batch) if error else done.result()
        for (_, future), result in zip(batch, results):
            if future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self.pending:
            self._start(loop)
