"""Dynamic micro-batching: requests that reach the network together are answered by one call.

The network reads a batch of 28x28 images for little more than the price of one, while each request's
decoding and preprocessing is its own work. `MicroBatcher` wraps a model and is passed to the reader
as the model itself (`reader.classify(image, model=batcher)`), so the reader's logic (statuses,
thresholds, segmentation) stays in the reader: the pool threads preprocessing requests call
`predict_proba`, and the first one to arrive (the leader) waits until every request that is being
worked on has reached the network, or `max_wait` has passed, then makes one call for all of them.

A request alone never waits: the leader runs at once when no other request is being worked on, so
one connection's latency pays nothing for the batching.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import numpy as np


class _Slot:
    __slots__ = ("done", "error", "images", "result")

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class MicroBatcher:
    """A model (anything with `predict_proba(uint8 [N, 28, 28]) -> [N, 10]`) whose calls from many
    threads are merged into batched calls. Other attributes (`card`, `temperature`) are the model's."""

    def __init__(self, model, max_wait: float = 0.0015, max_images: int = 64) -> None:
        self.model = model
        self.max_wait = max_wait
        self.max_images = max_images
        self._cond = threading.Condition()
        self._queue: list[_Slot] = []
        self._leader = False
        self._working = 0  # requests between `working()`'s enter and exit: those that may still come
        self.calls = 0  # network calls made, and images they read (for /metrics and the tests)
        self.images = 0

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Around one request's whole reading: tells leaders how many more calls may be on their way."""
        with self._cond:
            self._working += 1
        try:
            yield
        finally:
            with self._cond:
                self._working -= 1
                self._cond.notify_all()  # a leader waiting for this request stops waiting

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        slot = _Slot(x[None] if x.ndim == 2 else x)
        with self._cond:
            self._queue.append(slot)
            if self._leader:
                self._cond.notify_all()  # the leader counts the arrivals
                while not slot.done:
                    self._cond.wait()
                return self._result(slot)
            self._leader = True
            deadline = time.monotonic() + self.max_wait
            # Everyone being worked on is either queued or still preprocessing; wait for the latter
            # (bounded), unless the batch is already full.
            while (len(self._queue) < self._working and sum(len(s.images) for s in self._queue) < self.max_images
                   and (left := deadline - time.monotonic()) > 0):
                self._cond.wait(left)
            batch, self._queue, self._leader = self._queue, [], False
        self._run(batch)  # outside the lock: the next batch forms meanwhile
        return self._result(slot)

    def _run(self, batch: list[_Slot]) -> None:
        try:
            if len(batch) == 1:
                results = [self.model.predict_proba(batch[0].images)]
            else:
                sizes = [len(s.images) for s in batch]
                out = self.model.predict_proba(np.concatenate([s.images for s in batch]))
                results = np.split(out, np.cumsum(sizes)[:-1])
            error = None
        except BaseException as e:  # every request of the batch gets the failure, none hangs
            results, error = [None] * len(batch), e
        with self._cond:
            self.calls += 1
            self.images += sum(len(s.images) for s in batch)
            for s, r in zip(batch, results, strict=True):
                s.result, s.error, s.done = r, error, True
            self._cond.notify_all()

    @staticmethod
    def _result(slot: _Slot) -> np.ndarray:
        if slot.error is not None:
            raise slot.error
        return slot.result
