"""Micro-batching: items from concurrent requests processed together, one model call per batch.

Requests hand their raw inputs (an upload's bytes) to :class:`MicroBatcher`, whose worker
thread(s) run a batch function on up to ``max_batch`` queued items at a time and resolve one
future per item. In the service the batch function does an item's whole way: decode, one
encoder call for the batch, and the model's answer for the batch (``model.EncoderSlot``), so
that a request costs the event loop one hand-over and one wake-up, and the per-call costs of the
encoder and the model are shared by the batch.

How much to take: a worker takes what is queued at once, but leaves a share to the workers that
are idle (two idle workers and six items: three each), so a many-image request is spread over
the cores. When to wait for more: only while other requests have *announced* items (the service
announces a request as it starts reading its body), at most ``window_s`` after the first queued
item. So a lone client pays no waiting at all, while many clients get fuller batches; and while
the workers are busy, new items pile up and form the next batches anyway. The window was chosen
by measurement (benchmarks/serve.py, benchmarks/RESULTS.md "Service").
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from ..errors import ParameterError

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher was closed; no more items are accepted."""


class MicroBatcher:
    """Process items submitted from many threads in batches.

    Parameters
    ----------
    encode : the batch function, ``list of items -> one result per item`` (an (n, d) array's
        rows, or a list); a result that is an exception instance fails its item only, an
        exception raised fails the whole batch
    max_batch : most items per call
    window_s : longest wait for announced items after the first queued one (0: never wait)
    workers : threads calling ``encode`` (an encoder that allows concurrent calls, like the
        ONNX Runtime one with one thread per call, uses its ``concurrency``)
    on_batch : called with ``(batch size, seconds)`` after each call (metrics)
    """

    def __init__(self, encode: Callable[[list], Sequence], max_batch: int = 32,
                 window_s: float = 0.005, workers: int = 1, on_batch=None, name: str = "encode"):
        if max_batch < 1 or workers < 1 or window_s < 0:
            raise ParameterError("max_batch and workers must be >= 1 and window_s >= 0", "max_batch")
        self.encode = encode
        self.max_batch = int(max_batch)
        self.window_s = float(window_s)
        self.on_batch = on_batch
        self._queue: collections.deque[tuple[object, Future]] = collections.deque()
        self._cv = threading.Condition()
        self._announced = 0
        self._idle = 0  # workers waiting for items
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(int(workers))]
        for t in self._threads:
            t.start()

    # -- producers -----------------------------------------------------------------------------
    def announce(self, n: int) -> None:
        """``n`` items are being prepared and will be submitted (or withdrawn) soon."""
        with self._cv:
            self._announced += n

    def withdraw(self, n: int) -> None:
        """``n`` announced items will not come (their decoding failed)."""
        with self._cv:
            self._announced = max(0, self._announced - n)
            self._cv.notify_all()

    def submit(self, items: list, announced: bool | int = False) -> list[Future]:
        """Queue ``items``; one future per item resolves to its result. ``announced``: these
        items were announced before (True: as many as there are items; a number: that many
        announced items are taken back)."""
        futures = [Future() for _ in items]
        back = len(items) if announced is True else int(announced)
        with self._cv:
            if self._closed:
                raise BatcherClosed("the encoder is shutting down")
            if back:
                self._announced = max(0, self._announced - back)
            self._queue.extend(zip(items, futures))
            self._cv.notify_all()
        return futures

    def close(self, timeout: float = 5.0) -> None:
        """Finish what is queued, then stop the workers."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout)

    @property
    def alive(self) -> bool:
        return not self._closed and all(t.is_alive() for t in self._threads)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- the worker ------------------------------------------------------------------------------
    def _take(self) -> list[tuple[object, Future]] | None:
        with self._cv:
            self._idle += 1
            try:
                while not self._queue and not self._closed:
                    self._cv.wait()
            finally:
                self._idle -= 1
            if not self._queue:
                return None  # closed and drained
            deadline = time.monotonic() + self.window_s
            while (len(self._queue) < self.max_batch and self._announced > 0 and not self._closed):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            # leave a share to the idle workers (they were woken by the same notify)
            n = min(-(-len(self._queue) // (self._idle + 1)), self.max_batch)
            return [self._queue.popleft() for _ in range(n)]

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            futures = [f for _, f in batch]
            live = [i for i, f in enumerate(futures) if f.set_running_or_notify_cancel()]
            if not live:
                continue
            t0 = time.perf_counter()
            try:
                out = self.encode([batch[i][0] for i in live])
                if len(out) != len(live):
                    raise RuntimeError(f"the batch function returned {len(out)} results for "
                                       f"{len(live)} items")
            except BaseException as e:  # noqa: BLE001 - a failed call fails its items, not the worker
                log.exception("batch call failed for a batch of %d", len(live))
                for i in live:
                    futures[i].set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(len(live), time.perf_counter() - t0)
            for j, i in enumerate(live):
                if isinstance(out[j], BaseException):
                    futures[i].set_exception(out[j])
                else:
                    futures[i].set_result(out[j])
