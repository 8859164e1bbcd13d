"""Dynamic batching: requests from many connections, run together by ONE model worker thread.

Each request handler calls :meth:`Batcher.submit` with its payload and an estimated cost (source
tokens). A collector coroutine takes the first waiting request, keeps collecting for at most
``max_wait_ms`` or until the batch's cost reaches ``max_batch_tokens``, and hands the batch to the
single worker thread (``process(payloads) -> results``, one result or exception per payload, in
order). Each result goes back to the future of its own request. While the worker runs, new
requests wait in the queue and form the next batch, so a busy server batches more.

The queue is bounded (``max_queue`` requests): :meth:`submit` raises :class:`QueueFull` beyond it
(HTTP 429). :meth:`stop` lets every accepted request finish before it returns (SIGTERM drains).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["Batcher", "BatcherStats", "QueueFull"]


class QueueFull(RuntimeError):
    """The request queue holds ``max_queue`` requests; the client should retry later."""


@dataclass
class BatcherStats:
    """Counters of a :class:`Batcher` (read by ``/health`` and the shutdown log line)."""

    accepted: int = 0
    answered: int = 0
    failed: int = 0
    rejected: int = 0
    batches: int = 0
    batched: int = 0  # requests over all batches (running totals: memory stays flat)
    max_batch: int = 0

    def add_batch(self, size: int) -> None:
        """Count one batch of ``size`` requests."""
        self.batches += 1
        self.batched += size
        self.max_batch = max(self.max_batch, size)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "answered": self.answered,
            "failed": self.failed,
            "rejected": self.rejected,
            "batches": self.batches,
            "mean_batch": self.batched / self.batches if self.batches else 0.0,
            "max_batch": self.max_batch,
        }


@dataclass
class _Item:
    payload: Any
    cost: int
    future: asyncio.Future[Any]


class Batcher:
    """Collects concurrent requests into batches for one worker thread.

    Args:
        process: called in the worker thread with a list of payloads; returns one result (or an
            Exception instance, raised to that caller) per payload, in order.
        max_wait_ms: how long the first request of a batch waits for company.
        max_batch_tokens: stop collecting once the batch's summed cost reaches this.
        max_queue: requests waiting (not yet in a batch) before :meth:`submit` refuses.
        name: the worker thread's name.
    """

    def __init__(
        self,
        process: Callable[[Sequence[Any]], Sequence[Any]],
        *,
        max_wait_ms: float = 5.0,
        max_batch_tokens: int = 4096,
        max_queue: int = 256,
        name: str = "attnkit-model",
    ) -> None:
        if max_wait_ms < 0 or max_batch_tokens < 1 or max_queue < 1:
            raise ValueError(
                "max_wait_ms must be >= 0, max_batch_tokens and max_queue >= 1; got "
                f"{max_wait_ms}, {max_batch_tokens}, {max_queue}"
            )
        self.process = process
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_tokens, self.max_queue = max_batch_tokens, max_queue
        self.stats = BatcherStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def waiting(self) -> int:
        """Requests queued and not yet in a batch."""
        return 0 if self._queue is None else self._queue.qsize()

    def start(self) -> None:
        """Start collecting (call from the event loop that will call :meth:`submit`)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._collect())

    async def submit(self, payload: Any, cost: int = 1) -> Any:
        """Queue one request and wait for its result (its exception is raised here)."""
        if self._queue is None or self._closing:
            raise QueueFull("the server is shutting down")
        if self._queue.qsize() >= self.max_queue:
            self.stats.rejected += 1
            waiting = self._queue.qsize()
            raise QueueFull(
                f"{waiting} request{'s are' if waiting != 1 else ' is'} waiting "
                f"(limit {self.max_queue})"
            )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.stats.accepted += 1
        self._queue.put_nowait(_Item(payload, max(int(cost), 1), future))
        return await future

    async def stop(self) -> None:
        """Refuse new requests, finish every accepted one, then stop the worker."""
        self._closing = True
        if self._queue is not None and self._task is not None:
            await self._queue.join()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def _collect(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            cost = batch[0].cost
            deadline = time.monotonic() + self.max_wait
            while cost < self.max_batch_tokens:
                if queue.empty():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), left)
                    except asyncio.TimeoutError:  # noqa: UP041 (Python 3.10)
                        break
                else:
                    item = queue.get_nowait()
                batch.append(item)
                cost += item.cost
            try:
                await self._run(batch, loop)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _run(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        self.stats.add_batch(len(batch))
        payloads = [item.payload for item in batch]
        try:
            results = await loop.run_in_executor(self._executor, self.process, payloads)
            if len(results) != len(batch):
                raise RuntimeError(f"process returned {len(results)} results for {len(batch)}")
        except Exception as err:  # the whole batch failed: every caller gets the error
            results = [err] * len(batch)
        for item, result in zip(batch, results, strict=True):
            if item.future.done():  # the caller went away
                continue
            if isinstance(result, BaseException):
                self.stats.failed += 1
                item.future.set_exception(result)
            else:
                self.stats.answered += 1
                item.future.set_result(result)
