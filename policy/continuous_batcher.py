"""Drives a ``ContinuousDecoder`` on one worker thread for async callers (the engine actor).

Same surface as ``actors.batching.DynamicBatcher`` — ``submit``, ``run_exclusive``,
``stuck_for`` and the ``batches``/``items``/``busy_s`` counters — so the actor can use
either. The thread loop: admit what has arrived (when idle, wait up to ``max_wait_ms``
after the first request so a wave of episodes starts together), run one decode step,
repeat. Messages keep their arrival order: an exclusive call (a weight update) runs once
every request before it has finished, and requests after it wait for it, so no sequence
mixes two weight versions.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from policy.gen_types import GenRequest, GenResult


def _resolve(fut: asyncio.Future, value: Any = None, error: Optional[BaseException] = None) -> None:
    if fut.done():  # the caller gave up (timeout, cancellation)
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class ContinuousBatcher:
    def __init__(self, decoder, max_wait_ms: float = 10.0):
        self.decoder = decoder
        self.max_wait_s = max_wait_ms / 1000.0
        self._inbox: "queue.SimpleQueue" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.requests = 0
        self.busy_s = 0.0
        self.running_since: Optional[float] = None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="continuous-batcher", daemon=True)
                self._thread.start()

    async def submit(self, req: GenRequest) -> GenResult:
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._inbox.put(("generate", req, loop, fut))
        return await fut

    async def run_exclusive(self, fn: Callable, *args) -> Any:
        """Run ``fn`` on the decoder thread once no sequence is live (e.g. a weight update)."""
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._inbox.put(("exclusive", (fn, args), loop, fut))
        return await fut

    @property
    def batches(self) -> int:
        """Decode steps: each is one batch of every live row."""
        return self.decoder.steps

    @property
    def items(self) -> int:
        """Row-steps, so ``items / batches`` is the mean number of rows per step."""
        return self.decoder.row_steps

    def stuck_for(self) -> float:
        return 0.0 if self.running_since is None else time.monotonic() - self.running_since

    def _loop(self) -> None:
        waiting: deque = deque()  # messages in arrival order, not yet admitted or run
        dec = self.decoder
        while True:
            if not dec.active and not waiting:
                waiting.append(self._inbox.get())  # idle: block for the first message
                deadline = time.monotonic() + self.max_wait_s
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        waiting.append(self._inbox.get(timeout=left))
                    except queue.Empty:
                        break
            while True:  # everything that has arrived
                try:
                    waiting.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if waiting and waiting[0][0] == "exclusive" and not dec.active:
                _, (fn, args), loop, fut = waiting.popleft()
                try:
                    loop.call_soon_threadsafe(_resolve, fut, fn(*args))
                except Exception as e:  # noqa: BLE001 - delivered to the caller
                    loop.call_soon_threadsafe(_resolve, fut, None, e)
                continue
            self.running_since = time.monotonic()
            try:
                self._admit(waiting)
                dec.step()
            except Exception as e:  # noqa: BLE001 - every live request fails with it
                for row in dec.abort():
                    row.done(e)
            finally:
                self.busy_s += time.monotonic() - self.running_since
                self.running_since = None

    def _admit(self, waiting: deque) -> None:
        """Requests from the front of the queue, up to the free slots and never past an
        exclusive call (it runs once the live rows are done)."""
        dec = self.decoder
        batch = []
        while waiting and waiting[0][0] == "generate" and len(batch) < dec.free:
            _, req, loop, fut = waiting.popleft()
            if not fut.done():  # skip callers that already gave up
                batch.append((req, loop, fut))
        if not batch:
            return
        self.requests += len(batch)

        def deliver(loop, fut):
            def done(result):
                if isinstance(result, BaseException):
                    loop.call_soon_threadsafe(_resolve, fut, None, result)
                else:
                    loop.call_soon_threadsafe(_resolve, fut, result)
            return done

        try:
            dec.admit([r for r, _, _ in batch], [deliver(loop, fut) for _, loop, fut in batch])
        except Exception as e:  # noqa: BLE001 - the requests being admitted fail with it
            for row in dec.abort():
                row.done(e)
            for _, loop, fut in batch:
                loop.call_soon_threadsafe(_resolve, fut, None, e)
