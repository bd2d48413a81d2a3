"""Micro-batching: items from concurrent requests encoded together, one model call per batch.

Requests decode their uploads themselves (in threads, in parallel) and hand the prepared inputs
to :class:`MicroBatcher`, which runs the encoder on up to ``max_batch`` queued items at a time
in its own worker thread(s) and resolves one future per item.

When to wait for more: a worker that finds items queued takes them at once unless other
requests have *announced* items they are still decoding; only then does it wait, at most
``window_s`` after the first queued item, for those to arrive (or the batch to fill). So a lone
client pays no waiting at all (nothing else is announced), while many clients get full batches;
and while a worker is busy encoding, new items pile up and form the next batch anyway. The
window was chosen by measurement (benchmarks/serve.py, benchmarks/RESULTS.md "Service").
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from ..errors import ParameterError

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher was closed; no more items are accepted."""


class MicroBatcher:
    """Encode items submitted from many threads in batches.

    Parameters
    ----------
    encode : function ``list of prepared inputs -> (n, d) array`` (the encoder's batch call)
    max_batch : most items per call
    window_s : longest wait for announced items after the first queued one (0: never wait)
    workers : threads calling ``encode`` (an encoder that allows concurrent calls, like the
        ONNX Runtime one with one thread per call, uses its ``concurrency``)
    on_batch : called with ``(batch size, seconds)`` after each call (metrics)
    """

    def __init__(self, encode: Callable[[list], np.ndarray], max_batch: int = 32,
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

    def submit(self, items: list, announced: bool = False) -> list[Future]:
        """Queue prepared ``items``; one future per item resolves to its vector. ``announced``:
        these items were announced before (the count is taken back)."""
        futures = [Future() for _ in items]
        with self._cv:
            if self._closed:
                raise BatcherClosed("the encoder is shutting down")
            if announced:
                self._announced = max(0, self._announced - len(items))
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
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return None  # closed and drained
            deadline = time.monotonic() + self.window_s
            while (len(self._queue) < self.max_batch and self._announced > 0 and not self._closed):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            n = min(len(self._queue), self.max_batch)
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
                vecs = np.asarray(self.encode([batch[i][0] for i in live]), dtype=np.float32)
            except BaseException as e:  # noqa: BLE001 - a failed call fails its items, not the worker
                log.exception("encoder call failed for a batch of %d", len(live))
                for i in live:
                    futures[i].set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(len(live), time.perf_counter() - t0)
            for j, i in enumerate(live):
                futures[i].set_result(vecs[j])
