"""Dynamic batching of concurrent callers inside one async actor.

Callers ``await submit(item)``; a background task gathers up to ``max_batch_size`` items,
waiting at most ``max_wait_ms`` after the first, and runs ``process(items)`` on one worker
thread (models are not thread-safe), so the event loop keeps accepting requests while a
batch computes. ``process`` returns one result per item, in order; an exception fails
every item of that batch.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence


class DynamicBatcher:
    def __init__(self, process: Callable[[Sequence[Any]], List[Any]], max_batch_size: int = 8, max_wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self.batches = 0
        self.items = 0
        self.busy_s = 0.0
        self.running_since: Optional[float] = None  # monotonic start of the batch in progress

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run())

    async def submit(self, item: Any) -> Any:
        self._ensure_worker()
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _gather(self) -> list:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                while len(batch) < self.max_batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # drop timed-out callers
            if not live:
                continue
            self.running_since = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, self.process, [i for i, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch of {len(live)} returned {len(results)} results")
            except Exception as e:  # noqa: BLE001 - delivered to every caller of the batch
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
            else:
                for (_, fut), r in zip(live, results):
                    if not fut.done():
                        fut.set_result(r)
            finally:
                self.busy_s += time.monotonic() - self.running_since
                self.running_since = None
                self.batches += 1
                self.items += len(live)

    async def run_exclusive(self, fn: Callable, *args) -> Any:
        """Run ``fn`` on the batch thread, between batches (e.g. a weight update)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def stuck_for(self) -> float:
        """Seconds the batch in progress has been running (0 when idle)."""
        return 0.0 if self.running_since is None else time.monotonic() - self.running_since
