"""Lifecycle nodes: thin adapters from camera topics to a Predictor and back.

``segmentation_node``, ``detection_node`` and ``perception_node`` (both predictors on
one subscription, one decode per frame).  Per frame::

    subscription callback -> LatestFrameSlot (never blocks; replaces a waiting frame)
    worker thread -> decode -> Predictor -> message builders -> publishers

Lifecycle: *configure* loads the predictor(s); *activate* creates publishers, the
subscription, the worker and the timers; *deactivate* destroys them; *cleanup* drops the
predictor(s) and frees GPU memory.  With ``autostart`` (default) the node configures
and activates itself at start.
"""
from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from fcn_perception.errors import BackendUnavailable, ConversionError
from fcn_perception.imaging import drawing
from fcn_perception.imaging.decode import decode_message
from fcn_perception.ros import messages, qos
from fcn_perception.ros.filtering import filter_detections
from fcn_perception.ros.latest_frame import FrameWorker
from fcn_perception.ros.params import (
    NODES,
    backend_candidates,
    descriptor,
    node_specs,
    parse_device,
    validate_classes,
)
from fcn_perception.ros.stats import FrameStats

LOG_THROTTLE_S = 5.0


def _default_predictor_factory(task: str, **kwargs):
    from fcn_perception.inference.predictor import load_predictor

    return load_predictor(task, **kwargs)


def free_accelerator_memory() -> None:
    """Collect garbage and return cached CUDA memory (when torch is loaded)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class TaskHead:
    """One predictor and its outputs inside a node.

    ``prefix`` is the parameter prefix (empty in a single-task node).  ``label_info`` is
    published on ``label_info`` in a single-task node and on ``<namespace>/label_info``
    in ``perception_node``, where the two class maps would otherwise share a topic.
    """

    task = ""
    namespace = ""

    def __init__(self, node: PerceptionNode, prefix: str) -> None:
        self.node = node
        self.prefix = prefix
        self.label_info_topic = f"{self.namespace}/label_info" if prefix else "label_info"
        self.predictor = None
        self.classes: list[str] = []
        self.lut = drawing.palette_lut(None)
        self.pubs: dict[str, Any] = {}
        self.label_info_pub = None

    def param(self, name: str):
        return self.node.values[f"{self.prefix}.{name}" if self.prefix else name]

    # -- configure / cleanup
    def load(self) -> None:
        """Build the predictor from the parameters (trying each candidate backend that
        the backend/device pair allows) and warm it up."""
        precision = self.param("precision")
        _, gpu = parse_device(self.param("device"))
        options = {"gpu": gpu} if gpu is not None else {}
        if self.param("force_engine_rebuild"):
            options["rebuild"] = True
        failures = []
        for name in backend_candidates(self.param("backend"), self.param("device")):
            try:
                self.predictor = self.node.predictor_factory(
                    self.task, backend=name, weights=self.param("weights") or None,
                    precision=None if precision == "auto" else precision, **options)
                break
            except BackendUnavailable as exc:
                failures.append(f"{name}: {exc}")
        else:
            raise RuntimeError("no backend could start (" + "; ".join(failures) + ")")
        self.classes = [str(c) for c in (getattr(self.predictor, "classes", None) or [])]
        self.lut = drawing.palette_lut(getattr(self.predictor, "palette", None),
                                       len(self.classes))
        warmup = getattr(self.predictor, "warmup", None)
        if callable(warmup):
            warmup()
        self.apply_runtime_params()

    def release(self) -> None:
        self.predictor = None

    def describe_backend(self) -> dict:
        """backend, device and precision of the loaded predictor (or the parameters)."""
        p = self.predictor
        if p is None:
            return {k: str(self.param(k)) for k in ("backend", "device", "precision")}
        name = str(getattr(p, "backend_name", self.param("backend")))
        backend = getattr(p, "backend", None)
        gpu = parse_device(self.param("device"))[1]
        cuda = "cuda" if gpu is None else f"cuda:{gpu}"
        return {
            "backend": name,
            "device": cuda if ("cuda" in name or "tensorrt" in name) else "cpu",
            "precision": str(getattr(backend, "precision", self.param("precision"))),
        }

    def apply_runtime_params(self) -> None:
        """Called after configure and after a runtime parameter changed."""

    def validate(self, name: str, value) -> str | None:
        """A reason parameter ``name`` = ``value`` does not suit the loaded model, else None."""
        return None

    def configured_problem(self) -> str | None:
        """After loading: a reason the parameters do not suit the model, else None."""
        return None

    # -- activate / deactivate
    def outputs(self) -> dict[str, tuple[str, type]]:
        """key -> (topic, message type)"""
        raise NotImplementedError

    def create_outputs(self) -> None:
        out_qos = qos.output_qos()
        self.pubs = {key: self.node.create_publisher(msg_type, topic, out_qos)
                     for key, (topic, msg_type) in self.outputs().items()}
        try:
            from vision_msgs.msg import LabelInfo
        except ImportError:
            self.node.get_logger().warning(
                "vision_msgs is not installed: no label_info is published")
            return
        self.label_info_pub = self.node.create_publisher(
            LabelInfo, self.label_info_topic, qos.latched_qos())
        self.publish_label_info()

    def publish_label_info(self) -> None:
        if self.label_info_pub is not None:
            header = Header(stamp=self.node.get_clock().now().to_msg())
            self.label_info_pub.publish(
                messages.label_info_msg(header, self.classes, self.label_threshold()))

    def destroy_outputs(self) -> None:
        for pub in [*self.pubs.values(), self.label_info_pub]:
            if pub is not None:
                self.node.destroy_publisher(pub)
        self.pubs, self.label_info_pub = {}, None

    def label_threshold(self) -> float:
        return 0.0

    def listeners(self) -> dict[str, bool]:
        return {k: p.get_subscription_count() > 0 for k, p in self.pubs.items()}

    # -- per frame
    def process(self, header, rgb: np.ndarray, wanted: dict[str, bool]) -> None:
        raise NotImplementedError

    def infer(self, rgb: np.ndarray):
        t0 = time.perf_counter()
        result = self.predictor(rgb)
        self.node.stats.add_inference(self.task, (time.perf_counter() - t0) * 1e3)
        return result


class SegmentationHead(TaskHead):
    task = "segmentation"
    namespace = "segmentation"

    def outputs(self):
        return {
            "labels": ("segmentation/labels", Image),
            "color": ("segmentation/color", Image),
            "overlay": ("segmentation/overlay", Image),
        }

    def process(self, header, rgb, wanted) -> None:
        labels = self.infer(rgb).labels
        if labels.shape != rgb.shape[:2]:
            raise RuntimeError(
                f"the segmentation predictor returned labels of shape {labels.shape} for "
                f"an image of {rgb.shape[:2]}")
        if wanted["labels"]:
            self.pubs["labels"].publish(messages.labels_msg(header, labels))
        if wanted["color"] or wanted["overlay"]:
            color = drawing.colorize(labels, self.lut)
            if wanted["color"]:
                self.pubs["color"].publish(messages.rgb_msg(header, color))
            if wanted["overlay"]:
                overlay = drawing.blend(rgb, color, self.param("overlay_alpha"))
                self.pubs["overlay"].publish(messages.rgb_msg(header, overlay))


class DetectionHead(TaskHead):
    task = "detection"
    namespace = "detections"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allowed: np.ndarray | None = None  # class ids to publish; None = all

    def outputs(self):
        from vision_msgs.msg import Detection2DArray

        return {"detections": ("detections", Detection2DArray),
                "image": ("detections/image", Image)}

    def configured_problem(self) -> str | None:
        return self.validate("classes", self.param("classes"))

    def label_threshold(self) -> float:
        return float(self.param("score_threshold"))

    def validate(self, name: str, value) -> str | None:
        if name == "classes" and self.classes:
            return validate_classes(value, self.classes)
        return None

    def apply_runtime_params(self) -> None:
        names = list(self.param("classes") or [])
        self.allowed = (np.array([self.classes.index(n) for n in names if n in self.classes],
                                 np.int64) if names else None)
        if self.predictor is not None:  # lets the predictor drop low scores early
            self.predictor.score_threshold = float(self.param("score_threshold"))
        self.publish_label_info()  # its threshold is score_threshold

    def model_nms_threshold(self) -> float:
        card = getattr(self.predictor, "card", None) or {}
        return float(card.get("architecture", {}).get("nms_thresh", 0.3))

    def filter(self, result):
        nms = float(self.param("nms_threshold"))
        return filter_detections(
            result, score_threshold=float(self.param("score_threshold")), allowed=self.allowed,
            nms_threshold=nms if nms < self.model_nms_threshold() else None,
            max_detections=int(self.param("max_detections")))

    def process(self, header, rgb, wanted) -> None:
        det = self.filter(self.infer(rgb))
        self.pubs["detections"].publish(messages.detections_msg(
            header, det.boxes, det.scores, det.class_ids, det.class_scores))
        if wanted["image"]:
            drawn = drawing.draw_detections(rgb, det.boxes, det.scores, det.class_ids,
                                            self.classes, self.lut)
            self.pubs["image"].publish(messages.rgb_msg(header, drawn))


HEADS = {"segmentation": SegmentationHead, "detection": DetectionHead}


class PerceptionNode(LifecycleNode):
    """A lifecycle node serving one or more tasks from one camera subscription."""

    #: builds a predictor: ``factory(task, backend=, weights=, precision=)``
    predictor_factory: Callable[..., Any] = staticmethod(_default_predictor_factory)

    def __init__(self, node_name: str, tasks: tuple[str, ...], *,
                 predictor_factory: Callable[..., Any] | None = None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        if predictor_factory is not None:
            self.predictor_factory = predictor_factory
        self.tasks = tuple(tasks)
        self.specs = {s.name: s for s in node_specs(self.tasks)}
        self.values: dict[str, Any] = {}
        single = len(self.tasks) == 1
        self.heads = [HEADS[t](self, "" if single else t) for t in self.tasks]
        self.stats = FrameStats()
        self._sub = None
        self._worker: FrameWorker | None = None
        self._diag_timer = None
        self._no_frame_timer = None
        self._received_at_activation = 0
        self._counts_at_last_diag: dict[str, int] = {}
        self._diag_pub = None
        self._input_desc = ""
        self._input_profile = None
        self._announced_first = False
        self._activated_at = 0.0

        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._store_parameters)
        self._declare_parameters()

        if self.values["autostart"]:
            configured = self.trigger_configure() == TransitionCallbackReturn.SUCCESS
            if configured and self.context.ok():  # not interrupted while loading
                self.trigger_activate()

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        for spec in self.specs.values():
            if spec.kind == "string_array":  # an empty default has no inferable type
                self.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor(spec))
                if self._parameters[spec.name].type_ == Parameter.Type.NOT_SET:
                    self.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY,
                                                   list(spec.default))])
            else:
                self.declare_parameter(spec.name, spec.default, descriptor(spec))

    def _head_for(self, name: str) -> tuple[TaskHead | None, str]:
        for head in self.heads:
            if not head.prefix:
                return head, name
            if name.startswith(head.prefix + "."):
                return head, name[len(head.prefix) + 1:]
        return None, name

    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            spec = self.specs.get(p.name)
            if spec is None or p.type_ == Parameter.Type.NOT_SET:
                continue
            reason = spec.validate(p.value)
            if reason is None:
                head, short = self._head_for(p.name)
                reason = head.validate(short, p.value) if head is not None else None
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _store_parameters(self, params: list[Parameter]) -> None:
        runtime = False
        for p in params:
            if p.type_ == Parameter.Type.NOT_SET:
                continue
            value = list(p.value) if p.type_ == Parameter.Type.STRING_ARRAY else p.value
            self.values[p.name] = value
            spec = self.specs.get(p.name)
            if spec is not None and spec.runtime:
                runtime = True
            elif spec is not None and self._state_machine.current_state[1] != "unconfigured":
                self.get_logger().info(
                    f"{p.name} changed: it takes effect at the next configure/activate")
        if runtime:
            for head in self.heads:
                if head.predictor is not None:
                    head.apply_runtime_params()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        for head in self.heads:
            try:
                head.load()
            except Exception as exc:  # report any loading failure, never crash
                self.get_logger().error(
                    f"could not load the {head.task} predictor: {type(exc).__name__}: {exc}. "
                    "The node stays "
                    "unconfigured: fix the parameter, then `ros2 lifecycle set "
                    f"{self.get_fully_qualified_name()} configure`")
                self._release_predictors()
                return TransitionCallbackReturn.FAILURE
            reason = head.configured_problem()
            if reason:
                self.get_logger().error(f"{head.task}: {reason}")
                self._release_predictors()
                return TransitionCallbackReturn.FAILURE
            info = head.describe_backend()
            self.get_logger().info(
                f"{head.task} predictor ready: {len(head.classes)} classes, "
                f"backend {info['backend']}, device {info['device']}, "
                f"precision {info['precision']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            for head in self.heads:
                head.create_outputs()
            self._diag_pub = self.create_publisher(
                DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
            self._create_input()
        except Exception as exc:
            self.get_logger().error(f"activation failed: {exc}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_predictors()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._release_predictors()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._release_predictors()
        return TransitionCallbackReturn.SUCCESS

    def _release_predictors(self) -> None:
        for head in self.heads:
            head.release()
        free_accelerator_memory()

    def close(self) -> None:
        """Stop the worker and drop everything (on process exit)."""
        self._teardown()
        self._release_predictors()

    # ------------------------------------------------------------------ input
    def _create_input(self) -> None:
        compressed = self.values["input_transport"] == "compressed"
        topic, msg_type = ("image/compressed", CompressedImage) if compressed else ("image", Image)
        profile = qos.input_qos(self.values["qos_reliability"], self.values["qos_depth"])
        self._worker = FrameWorker(self._process, self._on_worker_error,
                                   name=f"{self.get_name()}-worker").start()
        self._sub = self.create_subscription(
            msg_type, topic, self._on_frame, profile,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))
        self._input_desc = f"{self._sub.topic_name} [{msg_type.__name__}, {qos.describe(profile)}]"
        self._input_profile = profile
        self._announced_first = False
        self._activated_at = time.monotonic()
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._received_at_activation = self.stats.counts["received"]
        warn_after = float(self.values["no_frame_warning_s"])
        if warn_after > 0:
            self._no_frame_timer = self.create_timer(warn_after, self._check_no_frames)
        self.get_logger().info(f"listening on {self._input_desc}")

    def _teardown(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            self.destroy_subscription(sub)
        worker, self._worker = self._worker, None
        if worker is not None and not worker.stop(timeout=30.0):
            self.get_logger().warning("the worker did not finish its frame within 30 s")
        self._destroy_timer("_diag_timer")
        self._destroy_timer("_no_frame_timer")
        for head in self.heads:
            head.destroy_outputs()
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None

    def _on_frame(self, msg) -> None:
        """Subscription callback: O(1), never blocks, never decodes."""
        worker = self._worker
        if worker is None:
            return
        self.stats.count("received")
        if worker.submit((msg, time.monotonic())):
            self.stats.count("dropped")

    def _on_incompatible_qos(self, info) -> None:
        policy = getattr(info.last_policy_kind, "name", info.last_policy_kind)
        self.get_logger().warning(
            f"a publisher on {self._input_desc} has an incompatible QoS ({policy}); with a "
            "best-effort camera use qos_reliability:=best_effort",
            throttle_duration_sec=LOG_THROTTLE_S)

    def _destroy_timer(self, attr: str) -> None:
        timer = getattr(self, attr)
        setattr(self, attr, None)
        if timer is not None:
            self.destroy_timer(timer)

    def _check_no_frames(self) -> None:
        """One-shot: warn once if nothing arrived since activation, with a hint why."""
        self._destroy_timer("_no_frame_timer")
        if self._sub is None or self.stats.counts["received"] > self._received_at_activation:
            return
        infos = self.get_publishers_info_by_topic(self._sub.topic_name)
        hint = qos.compatibility_hint(self._input_profile, [i.qos_profile for i in infos])
        self.get_logger().warning(
            f"no frame received on {self._input_desc} in "
            f"{self.values['no_frame_warning_s']:g} s: {hint}")

    # ------------------------------------------------------------------ worker
    def _decode(self, msg) -> np.ndarray:
        return decode_message(msg)

    def _process(self, item) -> None:
        msg, received_at = item
        wanted = [(head, head.listeners()) for head in self.heads]
        wanted = [(head, w) for head, w in wanted if any(w.values())]
        if not wanted:
            self.stats.count("skipped")
            return
        try:
            rgb = self._decode(msg)
        except ConversionError as exc:
            self.stats.count("rejected")
            self.stats.last_error = str(exc)
            self.get_logger().warning(f"skipping a frame from {self._sub_topic()}: {exc}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        if not self._announced_first:
            self._announced_first = True
            self.get_logger().info(
                f"first frame on {self._sub_topic()}: {rgb.shape[1]}x{rgb.shape[0]} "
                f"{getattr(msg, 'encoding', None) or getattr(msg, 'format', '')}")
        for head, w in wanted:
            head.process(msg.header, rgb, w)
        self.stats.latency.add((time.monotonic() - received_at) * 1e3)
        self.stats.count("processed")

    def _sub_topic(self) -> str:
        sub = self._sub
        return sub.topic_name if sub is not None else "the input"

    def _on_worker_error(self, exc: BaseException) -> None:
        self.stats.count("failed")
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self.get_logger().error(f"processing a frame failed: {self.stats.last_error}",
                                throttle_duration_sec=LOG_THROTTLE_S)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        pub = self._diag_pub
        if pub is None:
            return
        snap = self.stats.snapshot()
        now = time.monotonic()
        silent_for = now - max(self.stats.last_received or 0.0, self._activated_at)
        delta = {k: snap[k] - self._counts_at_last_diag.get(k, 0) for k in FrameStats.COUNTERS}
        self._counts_at_last_diag = {k: snap[k] for k in FrameStats.COUNTERS}
        new_bad = delta["rejected"] + delta["failed"]
        statuses = []
        for head in self.heads:
            info = head.describe_backend()
            values = {
                "input": self._input_desc,
                "fps": snap["fps"],
                "latency_p50_ms": snap["latency_p50_ms"],
                "latency_p95_ms": snap["latency_p95_ms"],
                "inference_p50_ms": snap.get(f"{head.task}_inference_p50_ms", float("nan")),
                "inference_p95_ms": snap.get(f"{head.task}_inference_p95_ms", float("nan")),
                **{f"frames_{k}": snap[k] for k in FrameStats.COUNTERS},
                **info,
                "last_error": self.stats.last_error,
            }
            warn_after = float(self.values["no_frame_warning_s"]) or 5.0
            if silent_for > warn_after:
                level, text = "warn", f"no frame for {silent_for:.0f} s on {self._sub_topic()}"
            elif new_bad > 0:
                level, text = "warn", f"{new_bad} bad frame(s) skipped: {self.stats.last_error}"
            elif delta["processed"] == 0 and delta["skipped"] > 0:
                level, text = "ok", "idle: nobody subscribes to the outputs"
            else:
                level = "ok"
                text = (f"{snap['fps']:.1f} fps, latency p50 {snap['latency_p50_ms']:.0f} ms, "
                        f"{info['backend']} on {info['device']}")
            statuses.append(messages.diagnostic_status(
                f"{self.get_fully_qualified_name().lstrip('/')}: {head.task}",
                f"{info['backend']}/{info['device']}", level, text, values))
        pub.publish(messages.diagnostics_msg(self.get_clock().now().to_msg(), statuses))


# ---------------------------------------------------------------------- entry points
class SegmentationNode(PerceptionNode):
    def __init__(self, node_name: str = "segmentation_node", **kwargs) -> None:
        super().__init__(node_name, NODES["segmentation_node"], **kwargs)


class DetectionNode(PerceptionNode):
    def __init__(self, node_name: str = "detection_node", **kwargs) -> None:
        super().__init__(node_name, NODES["detection_node"], **kwargs)


class CombinedNode(PerceptionNode):
    def __init__(self, node_name: str = "perception_node", **kwargs) -> None:
        super().__init__(node_name, NODES["perception_node"], **kwargs)


def run(node_cls, args: list[str] | None = None) -> int:
    """Create ``node_cls`` and spin it until Ctrl-C or shutdown; the exit status."""
    from rclpy.exceptions import InvalidParameterValueException

    rclpy.init(args=args)
    node = None
    status = 0
    try:
        node = node_cls()
        if rclpy.ok():  # else Ctrl-C arrived while the models were loading
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except InvalidParameterValueException as exc:
        print(f"error: invalid parameter: {exc}", file=sys.stderr)
        status = 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return status


def segmentation_main(args: list[str] | None = None) -> int:
    return run(SegmentationNode, args)


def detection_main(args: list[str] | None = None) -> int:
    return run(DetectionNode, args)


def perception_main(args: list[str] | None = None) -> int:
    return run(CombinedNode, args)
