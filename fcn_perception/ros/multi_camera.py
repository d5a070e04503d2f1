"""Several cameras on one model: the latest frame per camera, fair batches, and where each
camera's outputs go (no ROS).

:class:`CameraSlots` keeps one waiting frame per camera (a newer frame replaces the
waiting one, which is counted as dropped for that camera) and hands the worker a batch:
the waiting frames of up to ``max_batch`` cameras, taken in round-robin order from the
camera after the last one served.  A camera with a waiting frame is therefore served
within ``ceil(cameras / max_batch)`` batches whatever the other cameras' rates -- none
starves -- and with ``max_batch >= cameras`` every waiting frame goes into the next
batch.  The worker never waits for a batch to fill: it takes what is waiting when it is
free, so a single camera sees no added latency.

:class:`BatchWorker` is the thread that feeds those batches to ``process(batch)``.

:func:`output_namespaces` maps input topics to the namespaces their outputs are
published under: ``/cam1/image_raw`` -> ``/cam1`` (so ``/cam1/segmentation/labels``,
``/cam1/detections``, ...).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class CameraFrame:
    """A frame waiting in (or taken from) :class:`CameraSlots`."""

    camera: int  # index into the camera list
    item: Any
    received_at: float  # time.monotonic() at put


class CameraSlots:
    """One latest-frame slot per camera and fair, round-robin batch selection."""

    def __init__(self, cameras: int) -> None:
        if cameras < 1:
            raise ValueError("at least one camera")
        self.cameras = int(cameras)
        self._cond = threading.Condition()
        self._waiting: list[CameraFrame | None] = [None] * self.cameras
        self._next = 0
        self._closed = False
        self.dropped = [0] * self.cameras
        self.served = [0] * self.cameras

    def put(self, camera: int, item: Any, now: float | None = None) -> bool:
        """Store camera ``camera``'s newest ``item``; True when it replaced a waiting one
        (a drop).  Never blocks for longer than the lock."""
        frame = CameraFrame(int(camera), item, time.monotonic() if now is None else now)
        with self._cond:
            replaced = self._waiting[frame.camera] is not None
            self._waiting[frame.camera] = frame
            if replaced:
                self.dropped[frame.camera] += 1
            self._cond.notify()
        return replaced

    def take_batch(self, max_batch: int | None = None,
                   timeout: float | None = None) -> list[CameraFrame]:
        """Wait up to ``timeout`` s for a frame, then take the waiting frames of up to
        ``max_batch`` cameras (None: all) in round-robin order; ``[]`` on timeout or once
        closed."""
        limit = self.cameras if not max_batch else max(1, int(max_batch))
        with self._cond:
            if not self._closed and not any(self._waiting):
                self._cond.wait(timeout)
            if self._closed:
                return []
            batch = []
            for step in range(self.cameras):
                camera = (self._next + step) % self.cameras
                frame = self._waiting[camera]
                if frame is None:
                    continue
                batch.append(frame)
                self._waiting[camera] = None
                self.served[camera] += 1
                if len(batch) == limit:
                    break
            if batch:
                self._next = (batch[-1].camera + 1) % self.cameras
            return batch

    def waiting(self) -> int:
        with self._cond:
            return sum(f is not None for f in self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._waiting = [None] * self.cameras
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class BatchWorker:
    """A daemon thread feeding :meth:`CameraSlots.take_batch` batches to
    ``process(batch)``; an exception goes to ``on_error`` and the worker carries on."""

    def __init__(self, cameras: int, process: Callable[[list[CameraFrame]], None],
                 on_error: Callable[[BaseException], None] | None = None,
                 max_batch: int | None = None, name: str = "batch-worker") -> None:
        self.slots = CameraSlots(cameras)
        self.max_batch = max_batch
        self._process = process
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> BatchWorker:
        self._thread.start()
        return self

    def submit(self, camera: int, item: Any) -> bool:
        """Hand camera ``camera``'s ``item`` over without blocking; True on a drop."""
        return self.slots.put(camera, item)

    def _run(self) -> None:
        while not self.slots.closed:
            batch = self.slots.take_batch(self.max_batch, timeout=0.5)
            if not batch:
                continue
            try:
                self._process(batch)
            except Exception as exc:  # a bad frame must not end the worker
                if self._on_error is None:
                    raise
                self._on_error(exc)
            finally:
                del batch

    def stop(self, timeout: float = 10.0) -> bool:
        """Close the slots and wait for the batch in flight; True if the thread ended."""
        self.slots.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()


def parse_image_topics(values) -> list[str]:
    """The ``image_topics`` parameter as a list of topics: entries stripped, empty ones
    dropped, comma-separated entries split (a launch argument gives one string)."""
    out = []
    for value in values or ():
        out += [t.strip() for t in str(value).split(",") if t.strip()]
    return out


def topic_namespace(topic: str) -> str:
    """The namespace of a fully qualified topic: ``/cam1/image_raw`` -> ``/cam1``,
    ``/image`` -> ``/``."""
    topic = "/" + str(topic).strip("/")
    head, _, _ = topic.rpartition("/")
    return head or "/"


def output_namespaces(topics: Sequence[str]) -> list[str]:
    """The output namespace of each fully qualified input topic (its parent).

    Raises ValueError for a repeated topic or two topics whose outputs would share a
    namespace (``/cam/left`` and ``/cam/right`` -> both ``/cam``): give each camera its
    own namespace (``/cam/left/image_raw``) or remap."""
    seen: dict[str, str] = {}
    out = []
    for topic in topics:
        if topic in seen.values():
            raise ValueError(f"image_topics lists {topic} twice")
        ns = topic_namespace(topic)
        if ns in seen:
            raise ValueError(
                f"image_topics {seen[ns]} and {topic} would publish their outputs under the "
                f"same namespace {ns}: give each camera its own namespace (e.g. "
                f"{ns.rstrip('/')}/left/image_raw)")
        seen[ns] = topic
        out.append(ns)
    return out


def join_topic(namespace: str, name: str) -> str:
    """``/cam1`` + ``segmentation/labels`` -> ``/cam1/segmentation/labels``."""
    return f"{namespace.rstrip('/')}/{name.lstrip('/')}"
