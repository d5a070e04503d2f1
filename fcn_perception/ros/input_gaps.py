"""Frames lost before they reach a node, counted from the gaps in the input's stamps.

A camera stamps its frames at a steady period; frames the middleware drops (a full
queue, a lossy link, a malformed message) never reach the subscription callback, so no
counter inside the node sees them.  :class:`StampGaps` learns the period from the
stamps it does see (the median of recent differences) and counts a gap of ``d`` seconds
as ``round(d / period) - 1`` lost frames.  A stamp that jumps by more than
:data:`RESET_AFTER_S` either way is set aside: when the next stamp continues from it (a
bag replayed in a loop, a camera restarted) the estimate restarts there; otherwise it
was a stray message (any participant can publish any stamp) and is counted in
``out_of_order`` without disturbing the estimate.  No ROS: stamps are integers in ns.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

#: a jump larger than this (seconds) restarts the estimate instead of counting frames
RESET_AFTER_S = 5.0
#: differences the period is estimated from
WINDOW = 64
#: a difference is a gap when it exceeds this many periods
GAP_FACTOR = 1.5


class StampGaps:
    """``add(stamp_ns)`` for each received frame; counters and rates for diagnostics."""

    def __init__(self, window: int = WINDOW, now=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._diffs: deque[int] = deque(maxlen=window)
        self._arrivals: deque[float] = deque(maxlen=window)
        self._now = now
        self._last: int | None = None
        self._jumped_to: int | None = None
        self.lost = 0  # frames estimated lost before the node
        self.gaps = 0  # gaps that lost at least one frame
        self.out_of_order = 0  # stamps not after the previous one
        self.resets = 0

    def add(self, stamp_ns: int) -> int:
        """Record one frame's stamp; returns the frames this gap lost (0 usually)."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            self._arrivals.append(self._now())
            last = self._last
            if last is None:
                self._last = stamp_ns
                return 0
            diff = stamp_ns - last
            if abs(diff) > RESET_AFTER_S * 1e9:
                jumped, self._jumped_to = self._jumped_to, stamp_ns
                if jumped is not None and 0 < stamp_ns - jumped <= RESET_AFTER_S * 1e9:
                    self.resets += 1  # the stream goes on from the jump: a new stream
                    self._diffs.clear()
                    self._last, self._jumped_to = stamp_ns, None
                else:
                    self.out_of_order += 1
                return 0
            self._jumped_to = None
            if diff <= 0:
                self.out_of_order += 1
                return 0
            self._last = stamp_ns
            period = self._period()
            self._diffs.append(diff)
            if period is None or diff <= GAP_FACTOR * period:
                return 0
            missed = max(0, int(round(diff / period)) - 1)
            if missed:
                self.lost += missed
                self.gaps += 1
            return missed

    def _period(self) -> float | None:
        if len(self._diffs) < 4:  # too few to know the camera's period
            return None
        return float(np.median(np.fromiter(self._diffs, np.float64, len(self._diffs))))

    def camera_rate(self) -> float:
        """The rate the stamps say the camera publishes at (Hz; 0 while unknown)."""
        with self._lock:
            period = self._period()
        return 1e9 / period if period else 0.0

    def received_rate(self, horizon_s: float = 5.0) -> float:
        """Frames per second reaching the callback over the last ``horizon_s`` seconds."""
        now = self._now()
        with self._lock:
            recent = [t for t in self._arrivals if now - t <= horizon_s]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def values(self) -> dict:
        """Diagnostics key/values."""
        return {"frames_lost_upstream": self.lost, "input_gaps": self.gaps,
                "input_out_of_order": self.out_of_order,
                "input_rate_hz": round(self.received_rate(), 2),
                "camera_rate_hz": round(self.camera_rate(), 2)}


def stamp_ns(msg) -> int | None:
    """``header.stamp`` of an rclpy or rosbags message in nanoseconds (None without one)."""
    try:
        stamp = msg.header.stamp
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError):
        return None
