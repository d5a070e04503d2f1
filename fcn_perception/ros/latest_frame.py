"""Latest-frame-only hand-over from a subscription callback to a worker thread (no ROS).

The callback calls :meth:`LatestFrameSlot.put`, which never blocks: it stores the item,
replacing (and reporting) one that was still waiting.  The worker takes the newest item
when it is free.  At most one item waits and one is in flight, whatever the input rate,
so memory stays bounded and a slow model drops frames instead of queueing them.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class LatestFrameSlot:
    """A one-item mailbox whose ``put`` overwrites."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; return True when it replaced an item nobody had taken (a drop)."""
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
        return replaced

    def take(self, timeout: float | None = None) -> tuple[bool, Any]:
        """Wait up to ``timeout`` seconds for an item: ``(True, item)`` or ``(False, None)``
        on timeout or once the slot is closed."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if not self._full or self._closed:
                return False, None
            item, self._item, self._full = self._item, None, False
            return True, item

    def close(self) -> None:
        """Wake the worker and make every later ``take`` return ``(False, None)``."""
        with self._cond:
            self._closed = True
            self._item, self._full = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class FrameWorker:
    """A daemon thread that feeds the newest item of a :class:`LatestFrameSlot` to
    ``process``.  An exception from ``process`` goes to ``on_error`` (default: re-raised
    into the thread, ending it) and the worker carries on with the next item."""

    def __init__(
        self,
        process: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "frame-worker",
    ) -> None:
        self.slot = LatestFrameSlot()
        self._process = process
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> FrameWorker:
        self._thread.start()
        return self

    def submit(self, item: Any) -> bool:
        """Hand ``item`` over without blocking; True when it displaced a waiting one."""
        return self.slot.put(item)

    def _run(self) -> None:
        while True:
            ok, item = self.slot.take(timeout=0.5)
            if not ok:
                if self.slot.closed:
                    return
                continue
            try:
                self._process(item)
            except Exception as exc:  # a bad frame must not end the worker
                if self._on_error is None:
                    raise
                self._on_error(exc)
            finally:
                del item

    def stop(self, timeout: float = 10.0) -> bool:
        """Close the slot and wait for the item in flight; True if the thread ended."""
        self.slot.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()
