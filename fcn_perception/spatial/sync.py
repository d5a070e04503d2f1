"""Approximate time synchronisation of several inputs, with message_filters'
``ApproximateTimeSynchronizer`` semantics (its Python implementation; message_filters
is not on PyPI, so the same rules are kept here, without ROS).

Each input has a queue of at most ``queue_size`` messages keyed by stamp (a newer
message with the same stamp replaces the older; the oldest is dropped when the queue is
full).  When a message arrives, the other queues are searched for messages within
``slop`` of its stamp (closest first); the first combination with one message per input
whose stamps span at most ``slop`` is emitted (message_filters: strictly less, so equal
stamps need a slop above 0 there), and those messages leave their queues.
Messages that never find partners are dropped when they fall out of their queue
(counted in :attr:`ApproximateSync.dropped`, per input).
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any


class ApproximateSync:
    """``inputs`` queues; ``callback(*items)`` with one item per input, in input order.

    :meth:`add` is thread-safe; the callback runs on the thread that completed the set,
    outside the lock."""

    def __init__(self, inputs: int, queue_size: int, slop_s: float,
                 callback: Callable[..., None]) -> None:
        if inputs < 1:
            raise ValueError("at least one input")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not slop_s >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop_s}")
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(float(slop_s) * 1e9))
        self._callback = callback
        self._queues: list[dict[int, Any]] = [{} for _ in range(inputs)]
        self._lock = threading.Lock()
        self.dropped = [0] * inputs  # fell out of a full queue unmatched
        self.emitted = 0

    def add(self, index: int, stamp_ns: int, item: Any) -> bool:
        """Queue input ``index``'s ``item`` stamped ``stamp_ns``; True when it completed
        a set (and the callback ran)."""
        stamp = int(stamp_ns)
        with self._lock:
            mine = self._queues[index]
            mine[stamp] = item
            while len(mine) > self.queue_size:
                del mine[min(mine)]
                self.dropped[index] += 1
            found = self._match(index, stamp)
            if found is None:
                return False
            items = [self._queues[i].pop(s) for i, s in enumerate(found)]
            self.emitted += 1
        self._callback(*items)
        return True

    def _match(self, index: int, stamp: int) -> list[int] | None:
        candidates = []
        for i, queue in enumerate(self._queues):
            if i == index:
                candidates.append([stamp])
                continue
            near = sorted((s for s in queue if abs(s - stamp) <= self.slop_ns),
                          key=lambda s: abs(s - stamp))
            if not near:
                return None
            candidates.append(near)
        for combo in itertools.product(*candidates):
            if max(combo) - min(combo) <= self.slop_ns:
                return list(combo)
        return None

    def waiting(self) -> list[int]:
        """Messages queued per input."""
        with self._lock:
            return [len(q) for q in self._queues]

    def clear(self) -> None:
        with self._lock:
            for q in self._queues:
                q.clear()
