"""A node's camera input: the subscription(s), the latest-frame worker and the warnings a
user needs when frames do not arrive (an incompatible QoS; nothing at all, with a hint).

One camera (``image_topics`` empty): ``image`` (raw) or ``image/compressed``; the
compressed topic follows a remap of ``image`` (``-r image:=/camera/image_raw`` listens on
``/camera/image_raw/compressed``, image_transport's naming) unless ``image/compressed``
is remapped itself.  Several cameras: one subscription per topic of ``image_topics``
(``<topic>/compressed`` with the compressed transport), each camera's outputs under its
topic's namespace (:func:`~fcn_perception.ros.multi_camera.output_namespaces`).

The callbacks never block and never decode: they count the frame and hand it to a
:class:`~fcn_perception.ros.multi_camera.BatchWorker`, which keeps the newest frame per
camera and calls ``process(batch)`` with the waiting frames of the cameras (fair
round-robin, :class:`~fcn_perception.ros.multi_camera.CameraSlots`) when it is free.

The subscriptions live from configure to cleanup, so that a re-activation starts with
matched subscriptions (no discovery gap); frames are taken only between :meth:`activate`
and :meth:`deactivate`.  Gaps in the frames' stamps count the frames lost before the
callback (:class:`~fcn_perception.ros.input_gaps.StampGaps`), per camera.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from fcn_perception.ros import qos
from fcn_perception.ros.input_gaps import StampGaps, stamp_ns
from fcn_perception.ros.multi_camera import (
    BatchWorker,
    CameraFrame,
    output_namespaces,
    parse_image_topics,
)
from fcn_perception.ros.stats import FrameStats, LatencyWindow

LOG_THROTTLE_S = 5.0


def input_topics(node: Node, image_topics, compressed: bool) -> list[str]:
    """The fully qualified topics to subscribe to (see the module docstring)."""
    topics = parse_image_topics(image_topics)
    if not topics:
        if not compressed:
            return [node.resolve_topic_name("image")]
        explicit = node.resolve_topic_name("image/compressed")
        if explicit != node.resolve_topic_name("image/compressed", only_expand=True):
            return [explicit]  # image/compressed remapped on its own
        return [node.resolve_topic_name("image").rstrip("/") + "/compressed"]
    resolved = [node.resolve_topic_name(t) for t in topics]
    return [t.rstrip("/") + "/compressed" for t in resolved] if compressed else resolved


def camera_namespaces(node: Node, image_topics, compressed: bool) -> list[str | None]:
    """Each camera's output namespace: ``[None]`` (the node's own) for the single input,
    else the parent of each topic of ``image_topics``.  Raises ValueError when two cameras
    would share one (:func:`~fcn_perception.ros.multi_camera.output_namespaces`)."""
    if not parse_image_topics(image_topics):
        return [None]
    topics = input_topics(node, image_topics, compressed)
    return output_namespaces([t[: -len("/compressed")] if compressed else t for t in topics])


@dataclass
class Camera:
    """One input: its topic, where its outputs go, and its own counters."""

    index: int
    topic: str  # subscribed topic (fully qualified)
    namespace: str | None  # output namespace; None: the node's own (single camera)
    gaps: StampGaps = field(default_factory=StampGaps)
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    received: int = 0
    processed: int = 0
    sub: object = None


class CameraInput:
    """The camera subscription(s), from creation to :meth:`close`; frames are taken
    while active (:meth:`activate` / :meth:`deactivate`).

    ``process(batch)`` gets a list of :class:`~fcn_perception.ros.multi_camera.CameraFrame`
    whose ``item`` is ``(msg, received_at)`` and whose ``camera`` indexes
    :attr:`cameras`.  ``image_topics`` empty: one camera, as before; ``max_batch``: most
    frames per batch (0: one per waiting camera)."""

    def __init__(self, node: Node, stats: FrameStats,
                 process: Callable[[list[CameraFrame]], None],
                 *, transport: str, reliability: str, depth: int,
                 no_frame_warning_s: float, image_topics=(), max_batch: int = 0) -> None:
        self.node, self.stats, self._process = node, stats, process
        compressed = transport == "compressed"
        self.msg_type = CompressedImage if compressed else Image
        topics = input_topics(node, image_topics, compressed)
        multi = bool(parse_image_topics(image_topics))
        namespaces = camera_namespaces(node, image_topics, compressed)
        self.multi = multi
        self.profile = qos.input_qos(reliability, depth)
        self.cameras = [Camera(i, t, ns) for i, (t, ns) in enumerate(zip(topics, namespaces))]
        self.worker = BatchWorker(len(self.cameras), process, self._on_worker_error,
                                  max_batch=max_batch or None,
                                  name=f"{node.get_name()}-worker").start()
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        for cam in self.cameras:
            cam.sub = node.create_subscription(
                self.msg_type, cam.topic, lambda msg, cam=cam: self._on_frame(cam, msg),
                self.profile, event_callbacks=events)
        self.topic_name = self.cameras[0].topic if not multi else \
            ", ".join(c.topic for c in self.cameras)
        self.description = (f"{self.topic_name} [{self.msg_type.__name__}, "
                            f"{qos.describe(self.profile)}]")
        self._no_frame_warning_s = float(no_frame_warning_s)
        self._received_at_start = [0] * len(self.cameras)
        self._timer = None
        self.active = False
        node.get_logger().info(f"listening on {self.description}"
                               + (f" ({len(self.cameras)} cameras, one model)" if multi else ""))

    @property
    def sub(self):
        """The first camera's subscription (the only one without ``image_topics``)."""
        return self.cameras[0].sub

    @property
    def gaps(self) -> StampGaps:
        """The first camera's stamp gaps (the only camera's, without ``image_topics``)."""
        return self.cameras[0].gaps

    def gap_values(self) -> dict:
        """Diagnostics key/values of the frames lost upstream: the camera's, or with
        several cameras the totals and each camera's under ``camN/``."""
        if not self.multi:
            return self.gaps.values()
        out = {"frames_lost_upstream": sum(c.gaps.lost for c in self.cameras),
               "input_gaps": sum(c.gaps.gaps for c in self.cameras)}
        for c in self.cameras:
            out.update({f"cam{c.index + 1}/{k}": v for k, v in c.gaps.values().items()})
        return out

    def camera_values(self) -> dict:
        """Per camera (several cameras only): topic, output rate, latency p50/p95/p99 and
        frames received / processed / dropped."""
        if not self.multi:
            return {}
        out = {}
        for c in self.cameras:
            p50, p95, p99 = c.latency.percentiles(50, 95, 99)
            out.update({f"cam{c.index + 1}/topic": c.topic,
                        f"cam{c.index + 1}/fps": c.latency.rate(),
                        f"cam{c.index + 1}/latency_p50_ms": p50,
                        f"cam{c.index + 1}/latency_p95_ms": p95,
                        f"cam{c.index + 1}/latency_p99_ms": p99,
                        f"cam{c.index + 1}/frames_received": c.received,
                        f"cam{c.index + 1}/frames_processed": c.processed,
                        f"cam{c.index + 1}/frames_dropped": self.worker.slots.dropped[c.index]})
        return out

    def activate(self) -> None:
        """Take frames from now on (and warn once if none arrives in time)."""
        self._received_at_start = [c.received for c in self.cameras]
        for cam in self.cameras:
            cam.gaps = StampGaps()  # a pause is not a loss
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
        for cam in self.cameras:
            self.node.destroy_subscription(cam.sub)
        if not self.worker.stop(timeout=30.0):
            self.node.get_logger().warning("the worker did not finish its frame within 30 s")
        self._cancel_timer()

    def _on_frame(self, cam: Camera, msg) -> None:
        if not self.active:
            return
        self.stats.count("received")
        cam.received += 1
        stamp = stamp_ns(msg)
        if stamp is not None:
            cam.gaps.add(stamp)
        if self.worker.submit(cam.index, (msg, time.monotonic())):
            self.stats.count("dropped")

    def upstream_text(self) -> str:
        """Frames lost before the node, for a diagnostics message."""
        texts = []
        for cam in self.cameras:
            g = cam.gaps
            rate = g.camera_rate()
            text = (f"camera stamps {rate:.1f} Hz, received {g.received_rate():.1f} Hz, "
                    f"{g.lost} frame(s) lost before the node") if rate else \
                f"received {g.received_rate():.1f} Hz"
            texts.append(f"{cam.topic}: {text}" if self.multi else text)
        return "; ".join(texts)

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
        """One-shot: warn once per camera that sent nothing since activation, with a hint
        why."""
        self._cancel_timer()
        for cam, before in zip(self.cameras, self._received_at_start):
            if cam.received > before:
                continue
            infos = self.node.get_publishers_info_by_topic(cam.topic)
            hint = qos.compatibility_hint(self.profile, [i.qos_profile for i in infos])
            self.node.get_logger().warning(
                f"no frame received on {cam.topic} [{self.msg_type.__name__}, "
                f"{qos.describe(self.profile)}] in {self._no_frame_warning_s:g} s: {hint}")
