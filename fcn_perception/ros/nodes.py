"""Lifecycle nodes: thin adapters from camera topics to a Predictor and back.

``segmentation_node``, ``detection_node`` and ``perception_node`` (both predictors on
one subscription, one decode per frame).  Per frame::

    subscription callback -> CameraSlots (never blocks; replaces the camera's waiting frame)
    worker thread -> decode -> task heads (Predictor -> message builders -> publishers)

With ``image_topics`` one node serves several cameras with one model: the worker takes
the waiting frame of every camera (in turn, none starving), runs each predictor once
on the batch and publishes each camera's outputs under its topic's namespace.

Lifecycle: *configure* loads the predictor(s) and creates the (lifecycle) publishers,
the subscription and the worker; *activate* opens them (publishers publish, frames are
taken) and starts the diagnostics timer; *deactivate* closes them again, the topics
staying matched; *cleanup* destroys them, drops the predictor(s) and frees GPU memory.
With ``autostart`` (default) the node configures and activates itself at start.

Hardening: ``--ros-args`` (parameters files, ``-p``) are checked before ``rclpy.init``
(:mod:`~fcn_perception.ros.ros_args`); images above ``max_input_pixels`` are refused
before decoding; diagnostics WARN below ``expected_rate``; Ctrl-C exits quietly.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from fcn_perception.errors import ConversionError, ParameterError
from fcn_perception.imaging.decode import check_message_size, decode_message
from fcn_perception.inference.backends import free_accelerator_memory
from fcn_perception.ros import messages, qos
from fcn_perception.ros.camera_input import LOG_THROTTLE_S, CameraInput, camera_namespaces
from fcn_perception.ros.heads import HEADS, HeadContext, TaskHead
from fcn_perception.ros.input_gaps import LOSS_WARN_FRACTION
from fcn_perception.ros.params import NODES, descriptor, help_text, node_specs
from fcn_perception.ros.ros_args import check_ros_args
from fcn_perception.ros.spatial_input import scene_of
from fcn_perception.ros.stats import FrameStats, HealthMonitor, task_values


def load_warm_predictor(task: str, **options):
    """The nodes' predictor factory: ``load_predictor`` and one warm-up frame."""
    # imported here: torch takes seconds to import, and a node given a bad parameter
    # should say so at once
    from fcn_perception.inference.predictor import load_predictor

    predictor = load_predictor(task, **options)
    predictor.warmup()
    return predictor


class PerceptionNode(LifecycleNode):
    """A lifecycle node serving one or more tasks from one camera subscription."""

    #: builds a ready predictor: ``factory(task, **params.predictor_options(...))``
    predictor_factory: Callable[..., Any] = staticmethod(load_warm_predictor)

    def __init__(self, node_name: str, tasks: tuple[str, ...], *,
                 predictor_factory: Callable[..., Any] | None = None,
                 exit_on_failed_autostart: bool = False, **kwargs) -> None:
        """``exit_on_failed_autostart`` (the console commands): a failed autostart
        configure is not logged but kept in ``configure_error`` for the caller to report
        and exit; otherwise it is logged and the node stays unconfigured."""
        super().__init__(node_name, **kwargs)
        if predictor_factory is not None:
            self.predictor_factory = predictor_factory
        self.configure_error: str | None = None
        self._quiet_failure = False
        self.tasks = tuple(tasks)
        self.specs = {s.name: s for s in node_specs(self.tasks)}
        self.values: dict[str, Any] = {}
        self.stats = FrameStats()
        context = HeadContext(
            values=self.values, create_publisher=self.create_lifecycle_publisher,
            destroy_publisher=self.destroy_lifecycle_publisher,
            predictor_factory=lambda task, **options: self.predictor_factory(task, **options),
            stats=self.stats, logger=self.get_logger(),
            now=lambda: self.get_clock().now().to_msg(), frame_sizes=self._frame_sizes)
        single = len(self.tasks) == 1
        self.heads = [HEADS[t](context, "" if single else t) for t in self.tasks]
        self._input: CameraInput | None = None
        self._health: HealthMonitor | None = None
        self._diag_timer = None
        self._diag_pub = None
        self._announced_first = False

        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._store_parameters)
        self._declare_parameters()

        if self.values["autostart"]:
            self._quiet_failure = exit_on_failed_autostart
            configured = self.trigger_configure() == TransitionCallbackReturn.SUCCESS
            self._quiet_failure = False
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
                what = "" if isinstance(exc, ValueError) else f"{type(exc).__name__}: "
                reason = f"could not load the {head.task} predictor: {what}{exc}"
            else:
                problem = head.configured_problem()
                reason = problem and f"{head.task}: {problem}"
            if reason:
                self.configure_error = reason
                if not self._quiet_failure:
                    self.get_logger().error(
                        f"{reason}. The node stays unconfigured: fix the parameter, then "
                        "configure it again (with a ROS 2 install: `ros2 lifecycle set "
                        f"{self.get_fully_qualified_name()} configure`; without one, restart "
                        "the node with the fixed parameter)")
                self._release_predictors()
                return TransitionCallbackReturn.FAILURE
            info = head.describe_backend()
            self.get_logger().info(
                f"{head.task} predictor ready: {len(head.classes)} classes, backend "
                f"{info['backend']}, device {info['device']}, precision {info['precision']}")
        self.configure_error = None
        try:  # publishers and subscription live until cleanup, gated by activation
            namespaces = camera_namespaces(self, self.values["image_topics"],
                                           self.values["input_transport"] == "compressed")
            for head in self.heads:
                head.create_outputs(namespaces)
            self._diag_pub = self.create_lifecycle_publisher(
                DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
            self._create_input()
        except Exception as exc:
            self.get_logger().error(f"configuring the topics failed: {exc}")
            self._teardown()
            self._release_predictors()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        for head in self.heads:
            head.publish_label_info()
        self._announced_first = False
        v = self.values
        camera = self._input
        self._health = HealthMonitor(self.stats, float(v["no_frame_warning_s"]) or 5.0,
                                     expected_rate=float(v["expected_rate"]),
                                     upstream=camera.upstream_text if camera else None,
                                     loss=camera.loss_report if camera else None,
                                     loss_warn=LOSS_WARN_FRACTION)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        if camera is not None:
            camera.activate()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._input is not None:
            self._input.deactivate()
        self._stop_diagnostics()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._release_predictors()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
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
        v = self.values
        self._input = CameraInput(self, self.stats, self._process_batch,
                                  transport=v["input_transport"],
                                  reliability=v["qos_reliability"], depth=v["qos_depth"],
                                  no_frame_warning_s=v["no_frame_warning_s"],
                                  image_topics=v["image_topics"], max_batch=v["max_batch"],
                                  spatial=v["spatial_inputs"],
                                  sync_queue_size=v["sync_queue_size"], sync_slop=v["sync_slop"],
                                  check_frame=self._check_frame)

    def _stop_diagnostics(self) -> None:
        timer, self._diag_timer = self._diag_timer, None
        if timer is not None:
            self.destroy_timer(timer)

    def _teardown(self) -> None:
        camera, self._input = self._input, None
        if camera is not None:
            camera.close()
        self._stop_diagnostics()
        for head in self.heads:
            head.destroy_outputs()
        if self._diag_pub is not None:
            self.destroy_lifecycle_publisher(self._diag_pub)
            self._diag_pub = None

    # ------------------------------------------------------------------ worker
    def _check_frame(self, msg) -> None:
        """On receipt (the subscription callback): refuse a frame that declares more
        than ``max_input_pixels``, before it can replace or be replaced by another."""
        check_message_size(msg, self.values["max_input_pixels"])

    def _decode(self, msg):
        return decode_message(msg, max_pixels=self.values["max_input_pixels"])

    def _process_batch(self, batch) -> None:
        """On the worker thread: decode each camera's frame once, then run every head
        someone listens to once on the frames it is wanted for, and publish."""
        start = time.monotonic()
        cameras = self._input.cameras if self._input is not None else []
        frames = []  # (camera, msg, received_at, rgb, {head index: wanted}, scene)
        for frame in batch:
            msg, received_at, *synced = frame.item  # synced: [SpatialMsgs] (spatial_inputs)
            wanted = {i: w for i, head in enumerate(self.heads)
                      if any((w := head.listeners(frame.camera)).values())}
            if not wanted:
                self.stats.count("skipped")
                continue
            topic = cameras[frame.camera].topic if frame.camera < len(cameras) else "the input"
            try:
                rgb = self._decode(msg)
            except ConversionError as exc:
                self.stats.reject(exc)
                self.get_logger().warning(f"skipping a frame from {topic}: {exc}",
                                          throttle_duration_sec=LOG_THROTTLE_S)
                continue
            if not self._announced_first:
                self._announced_first = True
                self.get_logger().info(
                    f"first frame on {topic}: {rgb.shape[1]}x{rgb.shape[0]} "
                    f"{getattr(msg, 'encoding', None) or getattr(msg, 'format', '')}")
            if frame.camera < len(cameras):  # runtime ROI checks use it (params.roi_problem)
                cameras[frame.camera].frame_hw = rgb.shape[:2]
            frames.append((frame.camera, msg, received_at, rgb, wanted,
                           self._scene(synced[0] if synced else None, rgb.shape[:2], topic)))
        if not frames:
            return
        for i, head in enumerate(self.heads):
            items = [(cam, msg.header, rgb, wanted[i], scene)
                     for cam, msg, _, rgb, wanted, scene in frames if i in wanted]
            if items:
                head.process_batch(items)
        done = time.monotonic()
        for cam, _, received_at, _, _, _ in frames:
            self.stats.latency.add((done - received_at) * 1e3)
            self.stats.processing.add((done - start) * 1e3)
            self.stats.count("processed")
            if cam < len(cameras):
                cameras[cam].latency.add((done - received_at) * 1e3)
                cameras[cam].processed += 1

    def _scene(self, msgs, image_hw, topic: str):
        """The frame's depth and intrinsics (None without spatial inputs or when they are
        unusable: then counted, logged, and only the 2D outputs are published)."""
        try:
            return scene_of(msgs, image_hw, self.values["max_input_pixels"])
        except ConversionError as exc:
            self.stats.count("spatial_rejected")
            self.stats.last_error = str(exc)
            self.get_logger().warning(f"no 3D outputs for a frame from {topic}: {exc}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return None

    def _frame_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of each camera's last decoded frame (none before one)."""
        camera = self._input
        return [c.frame_hw for c in camera.cameras if c.frame_hw] if camera else []

    def _input_topic(self) -> str:
        camera = self._input
        return camera.topic_name if camera is not None else "the input"

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        pub, health = self._diag_pub, self._health
        if pub is None or health is None:
            return
        snap, level, problem = health.assess(self._input_topic())
        statuses = []
        for head in self.heads:
            info = head.describe_backend()
            text = problem or (f"{snap['fps']:.1f} fps, latency p50 "
                               f"{snap['latency_p50_ms']:.0f} ms, {info['backend']} on "
                               f"{info['device']}")
            values = {"input": self._input.description if self._input else "", **task_values(snap, head.task), **info,
                      **(self._input.gap_values() if self._input else {}),
                      **(self._input.camera_values() if self._input else {}),
                      **(self._input.spatial.values()
                         if self._input and self._input.spatial else {}),
                      **head.diagnostic_values(),
                      "expected_rate": self.values["expected_rate"],
                      "last_error": self.stats.last_error}
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


NODE_NAMES = {SegmentationNode: "segmentation_node", DetectionNode: "detection_node",
              CombinedNode: "perception_node"}


def run(node_cls, args: list[str] | None = None) -> int:
    """Create ``node_cls`` and spin it until Ctrl-C or shutdown; the exit status.

    Bad ``--ros-args`` (a parameters file, ``-p``) end in one ``error:`` line and exit
    status 2 before ROS starts; Ctrl-C stops the worker before the context goes."""
    argv = sys.argv if args is None else list(args)
    name = NODE_NAMES[node_cls]
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "--help" in own or "-h" in own:  # the parameters, and exit without starting ROS
        print(help_text(name))
        return 0
    try:
        for warning in check_ros_args(argv, name, node_specs(NODES[name])):
            print(f"warning: {warning}", file=sys.stderr)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        rclpy.init(args=args)
    except Exception as exc:  # rcl's own argument errors
        print(f"error: the ROS arguments were refused: {_first_line(exc)}", file=sys.stderr)
        return 2
    node = None
    status = 0
    try:
        node = node_cls(exit_on_failed_autostart=True)
        if node.configure_error:  # a bad model file or parameter at start: one line, exit
            print(f"error: {_first_line(node.configure_error, 600)}", file=sys.stderr)
            status = 2
        elif rclpy.ok():  # else Ctrl-C arrived while the models were loading
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
        print(f"error: invalid parameter: {_first_line(exc)}", file=sys.stderr)
        status = 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return status


def _first_line(exc: BaseException | str, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def segmentation_main(args: list[str] | None = None) -> int:
    return run(SegmentationNode, args)


def detection_main(args: list[str] | None = None) -> int:
    return run(DetectionNode, args)


def perception_main(args: list[str] | None = None) -> int:
    return run(CombinedNode, args)
