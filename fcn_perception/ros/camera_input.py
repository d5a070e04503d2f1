"""A node's camera input: the subscription, the latest-frame worker and the warnings a
user needs when frames do not arrive (an incompatible QoS; nothing at all, with a hint).

The callback never blocks and never decodes: it counts the frame and hands it to a
:class:`~fcn_perception.ros.latest_frame.FrameWorker`, which calls
``process(msg, received_at)`` with the newest frame when it is free.

The subscription lives from configure to cleanup, so that a re-activation starts with a
matched subscription (no discovery gap); frames are taken only between :meth:`activate`
and :meth:`deactivate`.  Gaps in the frames' stamps count the frames lost before the
callback (:class:`~fcn_perception.ros.input_gaps.StampGaps`).
"""
from __future__ import annotations

import time
from collections.abc import Callable

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from fcn_perception.ros import qos
from fcn_perception.ros.input_gaps import StampGaps, stamp_ns
from fcn_perception.ros.latest_frame import FrameWorker
from fcn_perception.ros.stats import FrameStats

LOG_THROTTLE_S = 5.0


class CameraInput:
    """``image`` (raw) or ``image/compressed``, subscribed from creation to :meth:`close`;
    frames are taken while active (:meth:`activate` / :meth:`deactivate`)."""

    def __init__(self, node: Node, stats: FrameStats, process: Callable[[object, float], None],
                 *, transport: str, reliability: str, depth: int,
                 no_frame_warning_s: float) -> None:
        self.node, self.stats, self._process = node, stats, process
        compressed = transport == "compressed"
        msg_type, topic = (CompressedImage, "image/compressed") if compressed else (Image, "image")
        self.profile = qos.input_qos(reliability, depth)
        self.worker = FrameWorker(lambda item: process(*item), self._on_worker_error,
                                  name=f"{node.get_name()}-worker").start()
        self.sub = node.create_subscription(
            msg_type, topic, self._on_frame, self.profile,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))
        self.topic_name = self.sub.topic_name
        self.description = (f"{self.topic_name} [{msg_type.__name__}, "
                            f"{qos.describe(self.profile)}]")
        self._no_frame_warning_s = float(no_frame_warning_s)
        self._received_at_start = stats.counts["received"]
        self._timer = None
        self.active = False
        self.gaps = StampGaps()
        node.get_logger().info(f"listening on {self.description}")

    def activate(self) -> None:
        """Take frames from now on (and warn once if none arrives in time)."""
        self._received_at_start = self.stats.counts["received"]
        self.gaps = StampGaps()  # a pause is not a loss
        self._cancel_timer()
        if self._no_frame_warning_s > 0:
            self._timer = self.node.create_timer(self._no_frame_warning_s, self._check_no_frames)
        self.active = True

    def deactivate(self) -> None:
        """Ignore frames from now on (the subscription stays matched)."""
        self.active = False
        self._cancel_timer()

    def close(self) -> None:
        """Unsubscribe and wait for the frame in flight."""
        self.active = False
        self.node.destroy_subscription(self.sub)
        if not self.worker.stop(timeout=30.0):
            self.node.get_logger().warning("the worker did not finish its frame within 30 s")
        self._cancel_timer()

    def _on_frame(self, msg) -> None:
        if not self.active:
            return
        self.stats.count("received")
        stamp = stamp_ns(msg)
        if stamp is not None:
            self.gaps.add(stamp)
        if self.worker.submit((msg, time.monotonic())):
            self.stats.count("dropped")

    def upstream_text(self) -> str:
        """Frames lost before the node, for a diagnostics message."""
        g = self.gaps
        rate = g.camera_rate()
        return (f"camera stamps {rate:.1f} Hz, received {g.received_rate():.1f} Hz, "
                f"{g.lost} frame(s) lost before the node") if rate else \
            f"received {g.received_rate():.1f} Hz"

    def _on_worker_error(self, exc: BaseException) -> None:
        if not self.node.context.ok():
            return  # shutting down (Ctrl-C): a publish on the closed context, not a fault
        self.stats.count("failed")
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self.node.get_logger().error(f"processing a frame failed: {self.stats.last_error}",
                                     throttle_duration_sec=LOG_THROTTLE_S)

    def _on_incompatible_qos(self, info) -> None:
        policy = getattr(info.last_policy_kind, "name", info.last_policy_kind)
        self.node.get_logger().warning(
            f"a publisher on {self.description} has an incompatible QoS ({policy}); with a "
            "best-effort camera use qos_reliability:=best_effort",
            throttle_duration_sec=LOG_THROTTLE_S)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            self.node.destroy_timer(timer)

    def _check_no_frames(self) -> None:
        """One-shot: warn once if nothing arrived since creation, with a hint why."""
        self._cancel_timer()
        if self.stats.counts["received"] > self._received_at_start:
            return
        infos = self.node.get_publishers_info_by_topic(self.topic_name)
        hint = qos.compatibility_hint(self.profile, [i.qos_profile for i in infos])
        self.node.get_logger().warning(
            f"no frame received on {self.description} in {self._no_frame_warning_s:g} s: "
            f"{hint}")
