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
and :meth:`deactivate`.  With ``reliability`` ``auto`` each camera's subscription takes
the reliability its publishers offer (:func:`~fcn_perception.ros.qos.offered_reliability`),
checked again every :data:`QOS_RECHECK_S` seconds and the subscription re-created when
the publishers changed it.  The publishers' sequence numbers (else the frames' stamps)
count the frames lost before the callback
(:class:`~fcn_perception.ros.input_gaps.StampGaps`), per camera; when more than 5% of a
camera's recent frames are lost the node logs the likely cause and fix, at most once a
minute (:func:`~fcn_perception.ros.input_gaps.loss_hint`).

No frame after activation: a camera without a publisher is reported once
``no_frame_warning_s`` after activation ("no publisher on ..."); a camera whose publisher
sends nothing is reported once ``no_frame_warning_s`` after its first publisher appeared
("no frame received on ... for N s since a publisher appeared"), so a camera started
after the node (``bag play`` in ``make demo``) gets no warning before its first frame.
The publishers are looked at every :func:`no_frame_check_period` seconds until each
camera has sent a frame or been reported silent.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from fcn_perception.errors import ConversionError
from fcn_perception.ros import qos
from fcn_perception.ros.input_gaps import LOSS_WARN_FRACTION, StampGaps, loss_hint
from fcn_perception.ros.layout import stamp_ns
from fcn_perception.ros.multi_camera import (
    BatchWorker,
    CameraFrame,
    output_namespaces,
    parse_image_topics,
)
from fcn_perception.ros.spatial_input import SpatialInput, SpatialMsgs
from fcn_perception.ros.stats import FrameStats, LatencyWindow

LOG_THROTTLE_S = 5.0
#: seconds between two looks at the publishers' QoS (``auto`` reliability)
QOS_RECHECK_S = 1.0
#: the likely cause of losses is logged at most this often (seconds)
LOSS_LOG_S = 60.0


def no_frame_check_period(no_frame_warning_s: float) -> float:
    """Seconds between two looks for publishers and frames after activation: at most
    QOS_RECHECK_S, and a quarter of the warning delay, so a publisher is seen soon after
    it appears."""
    return min(QOS_RECHECK_S, no_frame_warning_s / 4)


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
    # the subscription ``auto`` replaced, kept until the new one has matched the
    # publishers (make before break: no frame lost in the switch)
    retiring: object = None
    reliability: str = "best_effort"  # the subscription's
    frame_bytes: int = 0  # the size of the last frame's data
    frame_hw: tuple[int, int] | None = None  # the last decoded frame's (height, width)
    # time.monotonic() when a publisher was first seen since activation (None: none now)
    publisher_since: float | None = None
    reported: set = field(default_factory=set)  # "no_publisher", "silent" since activation


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
                 no_frame_warning_s: float, image_topics=(), max_batch: int = 0,
                 spatial: str = "none", sync_queue_size: int = 10,
                 sync_slop: float = 0.05,
                 check_frame: Callable[[object], None] | None = None) -> None:
        self.node, self.stats, self._process = node, stats, process
        self._check_frame = check_frame
        compressed = transport == "compressed"
        self.msg_type = CompressedImage if compressed else Image
        topics = input_topics(node, image_topics, compressed)
        multi = bool(parse_image_topics(image_topics))
        if multi and spatial != "none":
            raise ValueError(f"spatial_inputs {spatial} serves one camera: leave image_topics "
                             "empty (run one node per camera with depth)")
        namespaces = camera_namespaces(node, image_topics, compressed)
        self.multi = multi
        if reliability not in qos.RELIABILITY_CHOICES:
            raise ValueError(f"qos reliability {reliability!r}; expected one of "
                             f"{qos.RELIABILITY_CHOICES}")
        self.auto = reliability == "auto"
        self._depth = int(depth)
        self.cameras = [Camera(i, t, ns) for i, (t, ns) in enumerate(zip(topics, namespaces))]
        self.worker = BatchWorker(len(self.cameras), process, self._on_worker_error,
                                  max_batch=max_batch or None,
                                  name=f"{node.get_name()}-worker").start()
        # auto: no QoS event handlers.  The subscription is re-created from a timer, and
        # rclpy's MultiThreadedExecutor adds a destroyed subscription's event handlers to
        # its next wait set from another thread (InvalidHandle "cannot use Destroyable"
        # kills its spin thread, or a handler's task holds the error: "exception was
        # never retrieved"); a subscription without handlers is destroyed safely.  An
        # incompatible publisher needs no warning there: the subscription follows it.
        self._events = SubscriptionEventCallbacks(use_default_callbacks=False) if self.auto \
            else SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        for cam in self.cameras:
            self._subscribe(cam, self._offered(cam) if self.auto else reliability)
        self.topic_name = self.cameras[0].topic if not multi else \
            ", ".join(c.topic for c in self.cameras)
        self._no_frame_warning_s = float(no_frame_warning_s)
        self._received_at_start = [0] * len(self.cameras)
        self._timer = None
        self.activated_at: float | None = None  # time.monotonic() of the last activate()
        self.last_check_at: float | None = None  # of the last no-frame check
        self.no_frame_reports: list[str] = []  # the no-frame warnings logged, in order
        self._loss_logged_at = -LOSS_LOG_S
        self.active = False
        # depth/camera_info: colour frames wait for them in a synchroniser (one camera)
        self.spatial = None if spatial == "none" else SpatialInput(
            node, spatial, queue_size=sync_queue_size, slop_s=sync_slop, history=depth,
            deliver=self._submit_synced)
        self._qos_timer = node.create_timer(QOS_RECHECK_S, self._recheck_qos) \
            if self.auto else None
        node.get_logger().info(f"listening on {self.description}"
                               + (f" ({len(self.cameras)} cameras, one model)" if multi else ""))

    @property
    def profile(self):
        """The first camera's subscription QoS."""
        return self.cameras[0].sub.qos_profile

    @property
    def description(self) -> str:
        """``topic [type, qos]`` (``auto:`` before the QoS when it follows the publishers)."""
        qos_text = "; ".join(dict.fromkeys(qos.describe(c.sub.qos_profile)
                                           for c in self.cameras))
        return (f"{self.topic_name} [{self.msg_type.__name__}, "
                f"{'auto: ' if self.auto else ''}{qos_text}]")

    def _offered(self, cam: Camera) -> str:
        infos = self.node.get_publishers_info_by_topic(cam.topic)
        return qos.offered_reliability([i.qos_profile for i in infos])

    def _subscribe(self, cam: Camera, reliability: str) -> None:
        def on_frame(msg, info, cam=cam):
            self._on_frame(cam, msg, info)

        cam.reliability = reliability
        cam.sub = self.node.create_subscription(
            self.msg_type, cam.topic, on_frame, qos.input_qos(reliability, self._depth),
            event_callbacks=self._events)

    def _recheck_qos(self) -> None:
        """``auto``: follow the publishers' reliability (timer, every QOS_RECHECK_S).  The
        new subscription is made before the old one goes, which is destroyed once the new
        one has matched the publishers (a frame both deliver is taken once: _on_frame)."""
        for cam in self.cameras:
            if cam.retiring is not None and (cam.sub.get_publisher_count() > 0
                                             or self.node.count_publishers(cam.topic) == 0):
                self._retire(cam)
            wanted = self._offered(cam)
            if wanted != cam.reliability:
                self._retire(cam)  # a switch still in progress: its old one goes now
                cam.retiring = cam.sub
                self._subscribe(cam, wanted)
                self.node.get_logger().info(
                    f"the publishers of {cam.topic} offer {wanted.replace('_', ' ')}: the "
                    f"subscription is now {qos.describe(cam.sub.qos_profile)}")

    def _retire(self, cam: Camera) -> None:
        old, cam.retiring = cam.retiring, None
        if old is not None:
            self.node.destroy_subscription(old)

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

    def loss_report(self) -> tuple[float, str]:
        """``(fraction, text)`` of the camera losing the largest fraction of its frames
        before the node over the last seconds (fraction 0 and an empty text without loss)."""
        worst = max(self.cameras, key=lambda c: c.gaps.loss_fraction())
        fraction = worst.gaps.loss_fraction()
        if fraction <= 0:
            return 0.0, ""
        received, lost = worst.gaps.window()
        return fraction, (f"{lost} of {lost + received} frames ({100 * fraction:.0f}%) lost "
                          f"before the node on {worst.topic}: {self._hint(worst)}")

    def _hint(self, cam: Camera) -> str:
        infos = self.node.get_publishers_info_by_topic(cam.topic)
        offered = [qos.offered_reliability([i.qos_profile]) for i in infos]
        return loss_hint(cam.frame_bytes, cam.reliability, offered)

    def activate(self) -> None:
        """Take frames from now on (and warn once per camera if none arrives in time: see
        the module docstring)."""
        self._received_at_start = [c.received for c in self.cameras]
        self.activated_at = time.monotonic()
        for cam in self.cameras:
            cam.gaps = StampGaps()  # a pause is not a loss
            cam.reported = set()
            cam.publisher_since = self.activated_at \
                if self.node.get_publishers_info_by_topic(cam.topic) else None
        self._cancel_timer()
        if self._no_frame_warning_s > 0:
            self._timer = self.node.create_timer(
                no_frame_check_period(self._no_frame_warning_s), self._check_no_frames)
        if self.spatial is not None:
            self.spatial.activate()
        self.active = True

    def deactivate(self) -> None:
        """Ignore frames from now on (the subscription stays matched)."""
        self.active = False
        if self.spatial is not None:
            self.spatial.deactivate()
        self._cancel_timer()

    def close(self) -> None:
        """Unsubscribe and wait for the frame in flight."""
        self.active = False
        timer, self._qos_timer = self._qos_timer, None
        if timer is not None:
            self.node.destroy_timer(timer)
        for cam in self.cameras:
            self._retire(cam)
            self.node.destroy_subscription(cam.sub)
        if self.spatial is not None:
            self.spatial.close()
        if not self.worker.stop(timeout=30.0):
            self.node.get_logger().warning("the worker did not finish its frame within 30 s")
        self._cancel_timer()

    def _submit_synced(self, msg, received_at: float, msgs: SpatialMsgs) -> None:
        """A colour frame with its camera_info (and depth), to the worker."""
        if self.worker.submit(0, (msg, received_at, msgs)):
            self.stats.count("dropped")

    def _on_frame(self, cam: Camera, msg, info=None) -> None:
        if not self.active:
            return
        gid = bytes(((info or {}).get("publisher_gid") or {}).get("data", b"")) or None
        seq = (info or {}).get("publication_sequence_number")
        if cam.retiring is not None and cam.gaps.seen(seq, gid):
            return  # the same frame through the other subscription of an auto switch
        self.stats.count("received")
        cam.received += 1
        cam.frame_bytes = len(msg.data)
        lost = cam.gaps.add(stamp_ns(msg), seq, gid)
        if not self._refused(cam, msg):  # a refused frame is counted as rejected
            if self.spatial is not None:
                self.spatial.add_frame(msg, time.monotonic())
            elif self.worker.submit(cam.index, (msg, time.monotonic())):
                self.stats.count("dropped")
        now = time.monotonic()
        if lost and now - self._loss_logged_at >= LOSS_LOG_S \
                and cam.gaps.loss_fraction() > LOSS_WARN_FRACTION:
            self._loss_logged_at = now
            received, lost_window = cam.gaps.window()
            self.node.get_logger().warning(
                f"{lost_window} of {lost_window + received} frames lost before the node on "
                f"{cam.topic} in the last seconds: {self._hint(cam)}")

    def _refused(self, cam: Camera, msg) -> bool:
        """``check_frame`` raised: the frame is counted, logged (throttled) and dropped."""
        if self._check_frame is None:
            return False
        try:
            self._check_frame(msg)
        except ConversionError as exc:
            self.stats.reject(exc)
            self.node.get_logger().warning(f"skipping a frame from {cam.topic}: {exc}",
                                           throttle_duration_sec=LOG_THROTTLE_S)
            return True
        return False

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
            "best-effort camera use qos_reliability:=best_effort (or auto, the default)",
            throttle_duration_sec=LOG_THROTTLE_S)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            self.node.destroy_timer(timer)

    def _check_no_frames(self) -> None:
        """Timer while a camera is pending: follow each camera's publishers and warn once
        per camera without a frame (see the module docstring), with a hint why."""
        now = self.last_check_at = time.monotonic()
        wait_s = self._no_frame_warning_s
        pending = False
        for cam, before in zip(self.cameras, self._received_at_start):
            if cam.received > before or "silent" in cam.reported:
                continue
            pending = True
            infos = self.node.get_publishers_info_by_topic(cam.topic)
            if not infos:
                cam.publisher_since = None
            elif cam.publisher_since is None:
                cam.publisher_since = now
            profile = cam.sub.qos_profile
            where = f"{cam.topic} [{self.msg_type.__name__}, {qos.describe(profile)}]"
            if not infos:
                if "no_publisher" not in cam.reported and now - self.activated_at >= wait_s:
                    cam.reported.add("no_publisher")
                    self._report(
                        f"no publisher on {where} in {now - self.activated_at:.1f} s since "
                        f"activation: is the camera running, on the same ROS_DOMAIN_ID and "
                        f"RMW? {qos.compatibility_hint(profile, [])}")
                continue
            if now - cam.publisher_since < wait_s:
                continue
            cam.reported.add("silent")
            hint = qos.compatibility_hint(profile, [i.qos_profile for i in infos])
            if cam.frame_bytes == 0 and cam.reliability == "best_effort":
                hint += ("; large frames from a best-effort camera on this host need "
                         "config/fastdds.xml in both processes (README: \"Cameras, DDS and "
                         "lost frames\")")
            self._report(f"no frame received on {where} for {now - cam.publisher_since:.1f} s "
                         f"since a publisher appeared: {hint}")
        if not pending:
            self._cancel_timer()

    def _report(self, text: str) -> None:
        self.no_frame_reports.append(text)
        self.node.get_logger().warning(text)
