"""Frames lost before they reach a node, counted per publisher (no ROS).

Frames the middleware drops (a sample larger than the shared-memory segment, a full
queue, a lossy link) never reach the subscription callback, so no counter inside the
node sees them.  :class:`StampGaps` counts them from what does arrive:

* from the publisher's sequence numbers where the middleware gives them (Fast DDS does:
  rclpy's ``publication_sequence_number``): a jump from ``n`` to ``m`` lost ``m - n - 1``
  frames, exactly, whatever the time between them;
* else from the header stamps: the camera's period is learnt from the stamps seen (the
  median of recent differences) and a gap of ``d`` seconds lost ``round(d / period) - 1``
  frames, however long the gap.

A restart is a stamp (or sequence number) going backwards or a new publisher (a camera
restarted, a bag played again, a second participant): the count starts again from that
frame, nothing is counted for the change itself.  A stray message from another
participant is a publisher of its own and does not disturb the camera's count.

:meth:`StampGaps.loss_fraction` gives lost / (lost + received) over the last
:data:`LOSS_HORIZON_S` seconds for the diagnostics' WARN (:data:`LOSS_WARN_FRACTION`);
:func:`loss_hint` the likely cause and fix.  Stamps are integers in ns.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

#: differences the period is estimated from
WINDOW = 64
#: a stamp difference is a gap when it exceeds this many periods
GAP_FACTOR = 1.5
#: the window (seconds) of :meth:`StampGaps.loss_fraction`
LOSS_HORIZON_S = 10.0
#: diagnostics WARN when more than this fraction of the window's frames was lost
LOSS_WARN_FRACTION = 0.05
#: Fast DDS's built-in shared-memory segment (bytes): larger samples do not fit
DEFAULT_SHM_SEGMENT = 512 * 1024
#: rmw's "no sequence number" value (``RMW_MESSAGE_INFO_SEQUENCE_NUMBER_UNSUPPORTED``)
SEQUENCE_UNSUPPORTED = 2**64 - 1


#: sequence numbers remembered per publisher to recognise a frame delivered twice
RECENT = 64


class _Publisher:
    """What one publisher last sent."""

    __slots__ = ("recent", "seq", "stamp")

    def __init__(self) -> None:
        self.seq: int | None = None
        self.stamp: int | None = None
        self.recent: deque[int] = deque(maxlen=RECENT)


class StampGaps:
    """``add(stamp_ns, seq, publisher)`` for each received frame; counters and rates for
    diagnostics.  ``seq`` (the publication sequence number) and ``publisher`` (any
    hashable id, e.g. the publisher's gid bytes) are optional."""

    def __init__(self, window: int = WINDOW, now=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._diffs: deque[int] = deque(maxlen=window)
        self._arrivals: deque[float] = deque(maxlen=window)
        self._events: deque[tuple[float, int]] = deque()  # (arrival, frames lost before it)
        self._now = now
        self._publishers: dict[object, _Publisher] = {}
        self._current: object = None  # the publisher of the last frame
        self.lost = 0  # frames lost before the node
        self.gaps = 0  # gaps that lost at least one frame
        self.out_of_order = 0  # stamps not after the previous one of their publisher
        self.resets = 0  # restarts: a stamp or sequence number going backwards
        self.publisher_changes = 0  # frames from another publisher than the last one's
        self.last_gap = 0  # frames lost before the last frame that lost any

    def add(self, stamp_ns: int | None, seq: int | None = None,
            publisher: object = None) -> int:
        """Record one frame; returns the frames lost just before it (0 usually)."""
        if seq is not None and int(seq) in (SEQUENCE_UNSUPPORTED, 0):
            seq = None
        with self._lock:
            now = self._now()
            self._arrivals.append(now)
            pub = self._publishers.get(publisher)
            if pub is None:
                pub = self._publishers[publisher] = _Publisher()
                if len(self._publishers) > 64:  # publishers that came and went
                    self._publishers.pop(next(iter(self._publishers)))
            if publisher != self._current and self._current is not None:
                self.publisher_changes += 1
                self._diffs.clear()  # another camera, maybe another rate
            self._current = publisher
            by_stamp = self._stamp_gap(pub, stamp_ns, counting=seq is None)
            missed = by_stamp if seq is None else self._sequence_gap(pub, int(seq))
            missed = max(0, missed)
            self._events.append((now, missed))
            while self._events and now - self._events[0][0] > LOSS_HORIZON_S:
                self._events.popleft()
            if missed:
                self.lost += missed
                self.gaps += 1
                self.last_gap = missed
            return missed

    def seen(self, seq: int | None, publisher: object = None) -> bool:
        """Whether this publisher's frame ``seq`` was added already, among its last
        :data:`RECENT` (two subscriptions of one topic deliver the same frames while
        ``auto`` QoS replaces one).  False without a sequence number."""
        if seq is None or int(seq) in (SEQUENCE_UNSUPPORTED, 0):
            return False
        with self._lock:
            pub = self._publishers.get(publisher)
            return pub is not None and int(seq) in pub.recent

    def _sequence_gap(self, pub: _Publisher, seq: int) -> int:
        last = pub.seq
        if last is not None and last - RECENT < seq < last and seq not in pub.recent:
            # a frame that arrived after a later one (another subscription's copy in an
            # auto switch): counted lost when the later one came, it was not
            pub.recent.append(seq)
            self.out_of_order += 1
            self.lost = max(0, self.lost - 1)
            return 0
        pub.recent.append(seq)
        pub.seq = seq
        if last is None:
            return 0
        if seq <= last:
            self.resets += 1
            return -1
        return seq - last - 1

    def _stamp_gap(self, pub: _Publisher, stamp_ns: int | None, counting: bool) -> int:
        """Frames lost before ``stamp_ns`` by its stamp; -1 for a restart.  Learns the
        period (the camera rate) either way; ``counting``: the stamps are what counts
        (no sequence numbers), so out-of-order stamps and restarts are counted too."""
        if stamp_ns is None:
            return 0
        last, pub.stamp = pub.stamp, int(stamp_ns)
        if last is None:
            return 0
        diff = int(stamp_ns) - last
        if diff <= 0:
            if diff < 0:
                self._diffs.clear()  # a restart: the period is learnt again
            if counting:
                self.out_of_order += 1
                self.resets += diff < 0
            return -1 if diff < 0 else 0
        period = self._period()
        self._diffs.append(diff)
        if period is None or diff <= GAP_FACTOR * period:
            return 0
        return max(0, int(round(diff / period)) - 1)

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

    def window(self) -> tuple[int, int]:
        """``(received, lost)`` over the last :data:`LOSS_HORIZON_S` seconds."""
        now = self._now()
        with self._lock:
            events = [m for t, m in self._events if now - t <= LOSS_HORIZON_S]
        return len(events), sum(events)

    def loss_fraction(self) -> float:
        """lost / (lost + received) over the last :data:`LOSS_HORIZON_S` seconds."""
        received, lost = self.window()
        return lost / (lost + received) if lost else 0.0

    def values(self) -> dict:
        """Diagnostics key/values."""
        received, lost = self.window()
        return {"frames_lost_upstream": self.lost, "input_gaps": self.gaps,
                "input_out_of_order": self.out_of_order, "input_restarts": self.resets,
                "input_loss_fraction": round(lost / (lost + received), 4) if lost else 0.0,
                "input_rate_hz": round(self.received_rate(), 2),
                "camera_rate_hz": round(self.camera_rate(), 2)}


def loss_hint(frame_bytes: int, reliability: str, offered: list[str]) -> str:
    """The likely cause of frames lost before the node, and the fix.

    ``frame_bytes``: the serialized size of a frame (about ``len(msg.data)``);
    ``reliability``: the subscription's (``best_effort`` / ``reliable``); ``offered``:
    the publishers' reliabilities."""
    mb = frame_bytes / 1e6
    if reliability == "best_effort" and offered and all(r == "reliable" for r in offered):
        return ("the camera offers reliable delivery but this subscription is best effort: "
                "set qos_reliability:=auto (the default) or reliable")
    if reliability == "reliable":
        return ("the subscription is reliable, so frames were overwritten in a queue: raise "
                "qos_depth, or the camera's history depth, or lower its rate")
    profile = ("load the package's config/fastdds.xml in the camera driver's process and "
               "the node's (FASTDDS_DEFAULT_PROFILES_FILE=<share>/fcn_perception/config/"
               "fastdds.xml; the launch files set it for the node), or use a reliable camera")
    if frame_bytes > DEFAULT_SHM_SEGMENT:
        return (f"frames of {mb:.2f} MB are larger than Fast DDS's default 512 KiB "
                f"shared-memory segment: {profile}")
    return ("best-effort frames were dropped in transit: frames over 512 KiB (Fast DDS's "
            f"default shared-memory segment) need it larger, {profile}; several cameras "
            "publishing at the same instant or a lossy link: reliable cameras "
            "(qos_reliability:=auto follows them) or compressed transport")
