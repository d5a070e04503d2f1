"""Task heads: one predictor and the topics it publishes.

A head reads its task's parameters (under a prefix in ``perception_node``), builds its
predictor at *configure*, creates its publishers and, per batch of frames (one per
camera), runs the predictor once and publishes each camera's outputs that someone
subscribes to, under that camera's namespace.

A head knows no node: what it needs comes in a :class:`HeadContext` (parameter values,
publisher factory, stats, logger, clock, predictor factory, the cameras' frame sizes),
so a head runs with plain publishers in a test.  The logic it calls is ROS-free:
:func:`~fcn_perception.ros.params.predictor_options`,
:class:`~fcn_perception.ros.filtering.DetectionFilter`, the tracker and the per-frame
step :mod:`~fcn_perception.ros.frame_outputs` (result -> messages).
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from fcn_perception.imaging import drawing
from fcn_perception.inference.backends import device_of
from fcn_perception.ros import messages, qos
from fcn_perception.ros.filtering import DetectionFilter
from fcn_perception.ros.frame_outputs import DetectionOutputs, SegmentationOutputs
from fcn_perception.ros.multi_camera import join_topic
from fcn_perception.ros.params import (
    geometry_options,
    parse_device,
    predictor_options,
    roi_problem,
    validate_classes,
)
from fcn_perception.ros.stats import FrameStats
from fcn_perception.tracking import ByteTracker, TrackerConfig

if TYPE_CHECKING:
    from fcn_perception.inference.interface import DetectionPredictor, SegmentationPredictor


@dataclass
class HeadContext:
    """What a head needs from its node.

    ``values``: parameter values by full name (``segmentation.model`` in
    ``perception_node``), kept current by the node; ``create_publisher(msg_type, topic,
    qos)`` / ``destroy_publisher(pub)``: the node's (lifecycle) publishers;
    ``predictor_factory(task, **load_predictor options)``: a ready predictor; ``now()``:
    the current time as a ``builtin_interfaces/Time`` (``label_info``'s stamp);
    ``frame_sizes()``: the ``(height, width)`` of each camera's last frame (runtime ROI
    checks); ``logger``: ``info``/``warning``/``error``."""

    values: Mapping[str, Any]
    create_publisher: Callable[..., Any]
    destroy_publisher: Callable[[Any], Any]
    predictor_factory: Callable[..., Any]
    stats: FrameStats
    logger: Any
    now: Callable[[], Any]
    frame_sizes: Callable[[], list[tuple[int, int]]] = list


class TaskHead:
    """One predictor and its outputs inside a node.

    ``prefix`` is the parameter prefix (empty in a single-task node).  ``label_info`` is
    published on ``label_info`` in a single-task node and on ``<namespace>/label_info``
    in ``perception_node``, where the two class maps would otherwise share a topic.

    Publishers exist per camera (``camera_pubs[i]``, topics under camera ``i``'s output
    namespace; one camera without ``image_topics``: the node's own); ``pubs`` is the
    first camera's.
    """

    task = ""
    namespace = ""

    def __init__(self, context: HeadContext, prefix: str = "") -> None:
        self.context = context
        self.prefix = prefix
        self.label_info_topic = f"{self.namespace}/label_info" if prefix else "label_info"
        self.predictor = None
        self.classes: list[str] = []
        self.lut = drawing.palette_lut(None)
        self.camera_pubs: list[dict[str, Any]] = []
        self.label_info_pubs: list[Any] = []

    @property
    def pubs(self) -> dict[str, Any]:
        return self.camera_pubs[0] if self.camera_pubs else {}

    @property
    def label_info_pub(self):
        return self.label_info_pubs[0] if self.label_info_pubs else None

    def param(self, name: str):
        return self.context.values[f"{self.prefix}.{name}" if self.prefix else name]

    # -- configure / cleanup
    def load(self) -> None:
        """Build the (warmed-up) predictor from the parameters."""
        if self.param("allow_modified_weights"):
            from fcn_perception.card import allow_modified_weights, model_file

            allow_modified_weights(model_file(self.task, self.param("model")))
        self.predictor = self.context.predictor_factory(self.task,
                                                        **predictor_options(self.param))
        self.classes = [str(c) for c in self.predictor.classes]
        self.lut = drawing.palette_lut(self.predictor.palette, len(self.classes))
        self.apply_runtime_params()

    def release(self) -> None:
        self.predictor = None

    def spatial_mode(self) -> str:
        """The node's ``spatial_inputs``: ``none``, ``camera_info`` or ``depth``."""
        return self.context.values.get("spatial_inputs", "none")

    def spatial_outputs(self, outputs: dict) -> dict:
        """``outputs`` plus ``<namespace>/camera_info`` with camera_info or depth inputs
        (the 3D outputs are added by each head with depth)."""
        if self.spatial_mode() == "none":
            return outputs
        from sensor_msgs.msg import CameraInfo

        return {**outputs, "camera_info": (f"{self.namespace}/camera_info", CameraInfo)}

    def diagnostic_values(self) -> dict:
        """The head's own diagnostics key/values."""
        return {}

    def describe_backend(self) -> dict[str, str]:
        """backend, device and precision of the loaded predictor (or the parameters)."""
        if self.predictor is None:
            return {k: str(self.param(k)) for k in ("backend", "device", "precision")}
        name = self.predictor.backend_name
        return {"backend": name, "device": device_of(name, parse_device(self.param("device"))[1]),
                "precision": self.predictor.precision}

    def apply_runtime_params(self) -> None:
        """Called after configure and after a runtime parameter changed."""
        self.apply_geometry()

    def apply_geometry(self) -> None:
        """The runtime geometry parameters (aspect policy, ROI) to the predictor."""
        geometry = getattr(self.predictor, "geometry", None)
        if geometry is None:
            return
        opts = geometry_options(self.param)
        self.predictor.geometry = replace(geometry, policy=opts["aspect"], roi=opts["roi"],
                                          max_pixels=int(self.param("max_network_pixels")))

    def validate(self, name: str, value) -> str | None:
        """A reason parameter ``name`` = ``value`` does not suit the loaded model (or, for
        the ROI, the frames received), else None."""
        return roi_problem(self.param, name, value, self.context.frame_sizes())

    def configured_problem(self) -> str | None:
        """After loading: a reason the parameters do not suit the model, else None."""
        return None

    # -- activate / deactivate
    def outputs(self) -> dict[str, tuple[str, type]]:
        """key -> (topic, message type)"""
        raise NotImplementedError

    def create_outputs(self, namespaces: list[str | None] | None = None) -> None:
        """Lifecycle publishers (at configure): visible while inactive, silent until the
        node is activated; ``label_info`` is published on activation.  One set per
        camera: ``namespaces[i]`` is camera ``i``'s output namespace (None: the node's
        own, relative names)."""
        out_qos = qos.output_qos()
        try:
            from vision_msgs.msg import LabelInfo  # optional: a segmentation-only robot
        except ImportError:
            LabelInfo = None
            self.context.logger.warning(
                "vision_msgs is not installed: no label_info is published")
        self.camera_pubs, self.label_info_pubs = [], []
        for ns in namespaces or [None]:
            def where(topic, ns=ns):
                return topic if ns is None else join_topic(ns, topic)

            self.camera_pubs.append({
                key: self.context.create_publisher(msg_type, where(topic), out_qos)
                for key, (topic, msg_type) in self.outputs().items()})
            if LabelInfo is not None:
                self.label_info_pubs.append(self.context.create_publisher(
                    LabelInfo, where(self.label_info_topic), qos.latched_qos()))

    def publish_label_info(self) -> None:
        header = Header(stamp=self.context.now())
        for pub in self.label_info_pubs:
            pub.publish(messages.label_info_msg(header, self.classes, self.label_threshold()))

    def destroy_outputs(self) -> None:
        for pub in [*(p for pubs in self.camera_pubs for p in pubs.values()),
                    *self.label_info_pubs]:
            self.context.destroy_publisher(pub)
        self.camera_pubs, self.label_info_pubs = [], []

    def label_threshold(self) -> float:
        return 0.0

    def listeners(self, camera: int = 0) -> dict[str, bool]:
        """Output key -> whether camera ``camera``'s topic has a subscriber."""
        if camera >= len(self.camera_pubs):
            return {}
        return {k: p.get_subscription_count() > 0 for k, p in self.camera_pubs[camera].items()}

    # -- per frame
    def process_batch(self, items: list[tuple[int, Any, np.ndarray, dict[str, bool], Any]]
                      ) -> None:
        """``(camera, header, rgb, wanted outputs, scene)`` per frame (``scene``: the
        :class:`~fcn_perception.ros.spatial_input.Scene` with spatial inputs, else None):
        one predictor call for all, then each camera's publishers."""
        raise NotImplementedError

    def publish(self, camera: int, msgs: dict[str, Any]) -> None:
        """Camera ``camera``'s messages, each on its output's publisher."""
        pubs = self.camera_pubs[camera]
        for key, msg in msgs.items():
            pubs[key].publish(msg)

    def predict(self, images: list[np.ndarray], **kwargs) -> list:
        """The predictor on the frames: one call for one frame, one batch for several
        when it has ``predict_batch``."""
        batch = getattr(self.predictor, "predict_batch", None)
        if len(images) > 1 and batch is not None:
            return self.timed(batch, images, **kwargs)
        return self.timed(lambda: [self.predictor(img, **kwargs) for img in images])

    def timed(self, call, *args, **kwargs):
        t0 = time.perf_counter()
        result = call(*args, **kwargs)
        self.context.stats.add_inference(self.task, (time.perf_counter() - t0) * 1e3)
        return result


class SegmentationHead(TaskHead):
    task = "segmentation"
    namespace = "segmentation"
    predictor: SegmentationPredictor | None

    def outputs(self):
        outputs = {
            "labels": ("segmentation/labels", Image),
            "color": ("segmentation/color", Image),
            "overlay": ("segmentation/overlay", Image),
            "confidence": ("segmentation/confidence", Image),
        }
        if self.spatial_mode() == "depth":
            from sensor_msgs.msg import PointCloud2

            outputs["points"] = ("segmentation/points", PointCloud2)
        return self.spatial_outputs(outputs)

    def frame_outputs(self) -> SegmentationOutputs:
        """The per-frame step with the current runtime parameters."""
        return SegmentationOutputs(
            self.lut, overlay_alpha=self.param("overlay_alpha"),
            confidence_encoding=self.param("confidence_encoding"),
            points_stride=self.param("points_stride"),
            points_confidence=self.param("points_confidence"))

    def process_batch(self, items) -> None:
        step = self.frame_outputs()
        confidence = any(step.needs_confidence(wanted) for _, _, _, wanted, _ in items)
        results = self.predict([rgb for _, _, rgb, _, _ in items],
                               **({"confidence": True} if confidence else {}))
        for (camera, header, rgb, wanted, scene), result in zip(items, results):
            self.publish(camera, step.messages(header, rgb, result, wanted, scene))


class DetectionHead(TaskHead):
    task = "detection"
    namespace = "detections"
    predictor: DetectionPredictor | None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.filter = DetectionFilter()
        self.track_config: TrackerConfig | None = None  # None: tracking off
        self.trackers: dict[int, ByteTracker] = {}  # per camera
        self._track_ids = itertools.count(1)  # shared: ids unique within the node's run

    def outputs(self):
        from vision_msgs.msg import Detection2DArray  # optional for segmentation nodes

        outputs = {"detections": ("detections", Detection2DArray),
                   "image": ("detections/image", Image)}
        if self.spatial_mode() == "depth":
            from vision_msgs.msg import Detection3DArray

            outputs["detections_3d"] = ("detections_3d", Detection3DArray)
        return self.spatial_outputs(outputs)

    def release(self) -> None:
        super().release()
        self.trackers = {}

    def diagnostic_values(self) -> dict:
        if self.track_config is None:
            return {}
        return {"tracks_active": sum(t.active for t in list(self.trackers.values()))}

    def configured_problem(self) -> str | None:
        return self.validate("classes", self.param("classes"))

    def label_threshold(self) -> float:
        return float(self.param("score_threshold"))

    def validate(self, name: str, value) -> str | None:
        if name == "classes" and self.classes:
            return validate_classes(value, self.classes)
        return super().validate(name, value)

    def apply_runtime_params(self) -> None:
        self.apply_geometry()
        score = float(self.param("score_threshold"))
        config = None
        if self.param("tracking"):
            config = TrackerConfig(high_threshold=score, track_buffer=self.param("track_buffer"),
                                   low_threshold=min(score, self.param("track_low_threshold")))
        if config != self.track_config:  # new tracks (ids go on from the same counter)
            self.track_config, self.trackers = config, {}
        # with tracking the predictor and filter keep the low detections for the tracker
        self.filter = DetectionFilter.for_model(
            self.classes, self.predictor.nms_threshold,
            score_threshold=score if config is None else config.low_threshold,
            nms_threshold=self.param("nms_threshold"),
            max_detections=self.param("max_detections"), classes=self.param("classes"))
        self.publish_label_info()  # its threshold is score_threshold

    def track(self, camera: int, det):
        """``(det, ids)``: the detections to publish and their track ids (tracking off:
        ``det`` as it is, ids None).  A detection below score_threshold is kept only when
        it continues a track."""
        config = self.track_config
        if config is None:
            return det, None
        tracker = self.trackers.get(camera)
        if tracker is None:
            tracker = self.trackers[camera] = ByteTracker(config, self._track_ids)
        ids = tracker.update(det.boxes, det.scores)
        keep = np.flatnonzero(ids >= 0)
        det = replace(det, boxes=det.boxes[keep], scores=det.scores[keep],
                      class_ids=det.class_ids[keep],
                      class_scores=None if det.class_scores is None else det.class_scores[keep])
        return det, [str(i) for i in ids[keep]]

    def process_batch(self, items) -> None:
        step = DetectionOutputs(self.classes, self.lut, self.param("depth_box_fraction"))
        # the predictor drops low scores early; the filter applies the other parameters
        results = self.predict([rgb for _, _, rgb, _, _ in items],
                               score_threshold=self.filter.score_threshold)
        for (camera, header, rgb, wanted, scene), result in zip(items, results):
            det, ids = self.track(camera, self.filter(result))
            self.publish(camera, step.messages(header, rgb, det, wanted, scene, ids))


HEADS = {"segmentation": SegmentationHead, "detection": DetectionHead}
