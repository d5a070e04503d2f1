"""Frame counters, rate and latency percentiles for a node's diagnostics (no ROS)."""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from fcn_perception.errors import ImageTooLargeError


class LatencyWindow:
    """The last ``size`` latencies (ms) and the times they were recorded."""

    def __init__(self, size: int = 300) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._times: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float, now: float | None = None) -> None:
        with self._lock:
            self._values.append(float(ms))
            self._times.append(time.monotonic() if now is None else now)

    def percentiles(self, *qs: float) -> list[float]:
        """Percentiles of the window (NaN while empty)."""
        with self._lock:
            values = np.fromiter(self._values, np.float64, len(self._values))
        if values.size == 0:
            return [float("nan")] * len(qs)
        return [float(v) for v in np.percentile(values, qs)]

    def rate(self, horizon_s: float = 5.0, now: float | None = None) -> float:
        """Events per second over the last ``horizon_s`` seconds (0 with fewer than two)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._times if now - t <= horizon_s]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])


class FrameStats:
    """What happened to the frames a node received.

    ``received`` = ``processed + dropped + rejected + skipped + waiting/in flight``:
    *dropped* frames were replaced by a newer one before the worker took them,
    *rejected* ones could not be decoded (*too_large*: the part of them above
    ``max_input_pixels``, refused before decoding), *skipped* ones had nobody subscribed
    to any output.  ``latency`` is receipt to last publish (ms); ``processing`` the
    worker's time on a frame, decode to last publish (ms; without the wait for the
    worker; with several cameras, the batch the frame was in); ``inference`` is the time
    spent in each predictor.
    """

    COUNTERS = ("received", "processed", "dropped", "rejected", "skipped", "failed")
    #: counted besides the partition above: ``too_large`` is a part of ``rejected``;
    #: ``spatial_rejected``: processed frames whose depth or camera_info was unusable
    #: (their 2D outputs published, their 3D ones not)
    EXTRA_COUNTERS = ("too_large", "spatial_rejected")

    def __init__(self, window: int = 300) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(self.COUNTERS + self.EXTRA_COUNTERS, 0)
        self.latency = LatencyWindow(window)
        self.processing = LatencyWindow(window)
        self.inference: dict[str, LatencyWindow] = {}
        self._window = window
        self.last_received: float | None = None
        self.last_error: str = ""

    def reject(self, exc: BaseException) -> None:
        """Count a frame refused (``rejected``; ``too_large`` for an
        :class:`~fcn_perception.errors.ImageTooLargeError`) and keep its reason."""
        self.count("rejected")
        if isinstance(exc, ImageTooLargeError):
            self.count("too_large")
        self.last_error = str(exc)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n
            if name == "received":
                self.last_received = time.monotonic()

    def add_inference(self, task: str, ms: float) -> None:
        window = self.inference.get(task)
        if window is None:
            window = self.inference.setdefault(task, LatencyWindow(self._window))
        window.add(ms)

    def snapshot(self) -> dict:
        """Counters, fps and latency / processing / inference p50, p95, p99 (ms) as a
        flat dict."""
        with self._lock:
            out: dict = dict(self.counts)
        out["fps"] = self.latency.rate()
        for name, window in (("latency", self.latency), ("processing", self.processing),
                             *((f"{t}_inference", w) for t, w in self.inference.items())):
            for q, v in zip(PERCENTILES, window.percentiles(*PERCENTILES)):
                out[f"{name}_p{q}_ms"] = v
        return out


class HealthMonitor:
    """The diagnostics level of a node's input, assessed once per diagnostics period.

    WARN when no frame has arrived for ``silent_after_s`` (since ``start``), when frames
    were rejected or failed since the last assessment, or -- with ``expected_rate`` > 0,
    once :data:`RATE_GRACE_S` have passed -- when the output rate (processed frames per
    second) is below :data:`RATE_TOLERANCE` x ``expected_rate`` while someone listens;
    otherwise OK, *idle* when frames arrive but nobody subscribes to an output.
    ``upstream()`` may return a short text about frames lost before the node (stamp
    gaps) for the rate warning.  ``loss()`` may return ``(fraction, text)``: the
    fraction of the recent frames lost before the node, WARN (with the text) above
    ``loss_warn`` whatever the output rate.
    """

    def __init__(self, stats: FrameStats, silent_after_s: float,
                 now: float | None = None, expected_rate: float = 0.0,
                 upstream=None, loss=None, loss_warn: float = 0.05) -> None:
        self.stats = stats
        self.silent_after_s = float(silent_after_s)
        self.started_at = time.monotonic() if now is None else now
        self.expected_rate = float(expected_rate)
        self.upstream = upstream
        self.loss = loss
        self.loss_warn = float(loss_warn)
        self._last = dict(stats.counts)

    def assess(self, source: str, now: float | None = None) -> tuple[dict, str, str | None]:
        """``(snapshot, level, message)``: level ``ok`` or ``warn``; message None when
        frames flow normally (the caller then reports rate and backend)."""
        now = time.monotonic() if now is None else now
        snap = self.stats.snapshot()
        delta = {k: snap[k] - self._last.get(k, 0) for k in FrameStats.COUNTERS}
        self._last = {k: snap[k] for k in FrameStats.COUNTERS}
        silent_for = now - max(self.stats.last_received or 0.0, self.started_at)
        bad = delta["rejected"] + delta["failed"]
        if silent_for > self.silent_after_s:
            return snap, "warn", f"no frame for {silent_for:.0f} s on {source}"
        if bad > 0:
            return snap, "warn", f"{bad} bad frame(s) skipped: {self.stats.last_error}"
        if self.loss is not None:
            fraction, text = self.loss()
            if fraction > self.loss_warn:
                return snap, "warn", text
        if delta["processed"] == 0 and delta["skipped"] > 0:
            return snap, "ok", "idle: nobody subscribes to the outputs"
        if (self.expected_rate > 0 and now - self.started_at >= RATE_GRACE_S
                and snap["fps"] < RATE_TOLERANCE * self.expected_rate):
            extra = f"; {self.upstream()}" if self.upstream is not None else ""
            return snap, "warn", (
                f"output {snap['fps']:.1f} fps is below expected_rate {self.expected_rate:g}"
                f" ({delta['dropped']} dropped in the node since the last report{extra})")
        return snap, "ok", None


#: seconds after activation before the rate is compared with ``expected_rate``
RATE_GRACE_S = 5.0
#: the output rate may be this fraction of ``expected_rate`` before diagnostics warn
RATE_TOLERANCE = 0.9


#: the percentiles the diagnostics report (a fleet alarms on the tail: p95, p99)
PERCENTILES = (50, 95, 99)


def task_values(snap: dict, task: str) -> dict:
    """The diagnostics key/values of one task from a :meth:`FrameStats.snapshot`: fps,
    latency (receipt to publish), processing (the worker's time per frame) and
    inference (this task's predictor) p50/p95/p99 in ms, and the frame counters."""
    nan = float("nan")
    return {
        "fps": snap["fps"],
        **{f"latency_p{q}_ms": snap.get(f"latency_p{q}_ms", nan) for q in PERCENTILES},
        **{f"processing_p{q}_ms": snap.get(f"processing_p{q}_ms", nan) for q in PERCENTILES},
        **{f"inference_p{q}_ms": snap.get(f"{task}_inference_p{q}_ms", nan)
           for q in PERCENTILES},
        **{f"frames_{k}": snap[k] for k in FrameStats.COUNTERS + FrameStats.EXTRA_COUNTERS},
    }
