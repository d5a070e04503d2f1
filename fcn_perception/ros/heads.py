"""Task heads: one predictor and the topics it publishes, inside a node.

A head reads its task's parameters (under a prefix in ``perception_node``), builds its
predictor with the node's factory at *configure*, creates its publishers at *activate*
and, per batch of frames (one per camera), runs the predictor once and publishes each
camera's outputs that someone subscribes to, under that camera's namespace.
The logic it calls is ROS-free: :func:`~fcn_perception.ros.params.predictor_options`,
:class:`~fcn_perception.ros.filtering.DetectionFilter`, the message builders.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from fcn_perception.imaging import drawing
from fcn_perception.inference.backends import device_of
from fcn_perception.ros import messages, qos
from fcn_perception.ros.filtering import DetectionFilter
from fcn_perception.ros.multi_camera import join_topic
from fcn_perception.ros.params import (
    geometry_options,
    parse_device,
    predictor_options,
    roi_problem,
    validate_classes,
)
from fcn_perception.spatial.project import boxes_3d, labelled_points
from fcn_perception.tracking import ByteTracker, TrackerConfig

if TYPE_CHECKING:
    from fcn_perception.inference.interface import DetectionPredictor, SegmentationPredictor
    from fcn_perception.ros.nodes import PerceptionNode


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

    def __init__(self, node: PerceptionNode, prefix: str) -> None:
        self.node = node
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
        return self.node.values[f"{self.prefix}.{name}" if self.prefix else name]

    # -- configure / cleanup
    def load(self) -> None:
        """Build the (warmed-up) predictor from the parameters."""
        if self.param("allow_modified_weights"):
            from fcn_perception.card import allow_modified_weights, model_file

            allow_modified_weights(model_file(self.task, self.param("model")))
        self.predictor = self.node.predictor_factory(self.task, **predictor_options(self.param))
        self.classes = [str(c) for c in self.predictor.classes]
        self.lut = drawing.palette_lut(self.predictor.palette, len(self.classes))
        self.apply_runtime_params()

    def release(self) -> None:
        self.predictor = None

    def spatial_mode(self) -> str:
        """The node's ``spatial_inputs``: ``none``, ``camera_info`` or ``depth``."""
        return self.node.values.get("spatial_inputs", "none")

    def spatial_outputs(self, outputs: dict) -> dict:
        """``outputs`` plus ``<namespace>/camera_info`` with camera_info or depth inputs
        (the 3D outputs are added by each head with depth)."""
        if self.spatial_mode() == "none":
            return outputs
        from sensor_msgs.msg import CameraInfo

        return {**outputs, "camera_info": (f"{self.namespace}/camera_info", CameraInfo)}

    def publish_camera_info(self, pubs, header, wanted, scene) -> None:
        if scene is not None and wanted.get("camera_info"):
            pubs["camera_info"].publish(messages.camera_info_msg(header, scene.info))

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
        camera = self.node._input
        sizes = [c.frame_hw for c in camera.cameras if c.frame_hw] if camera else []
        return roi_problem(self.param, name, value, sizes)

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
            self.node.get_logger().warning(
                "vision_msgs is not installed: no label_info is published")
        self.camera_pubs, self.label_info_pubs = [], []
        for ns in namespaces or [None]:
            def where(topic, ns=ns):
                return topic if ns is None else join_topic(ns, topic)

            self.camera_pubs.append({
                key: self.node.create_lifecycle_publisher(msg_type, where(topic), out_qos)
                for key, (topic, msg_type) in self.outputs().items()})
            if LabelInfo is not None:
                self.label_info_pubs.append(self.node.create_lifecycle_publisher(
                    LabelInfo, where(self.label_info_topic), qos.latched_qos()))

    def publish_label_info(self) -> None:
        header = Header(stamp=self.node.get_clock().now().to_msg())
        for pub in self.label_info_pubs:
            pub.publish(messages.label_info_msg(header, self.classes, self.label_threshold()))

    def destroy_outputs(self) -> None:
        for pub in [*(p for pubs in self.camera_pubs for p in pubs.values()),
                    *self.label_info_pubs]:
            self.node.destroy_lifecycle_publisher(pub)
        self.camera_pubs, self.label_info_pubs = [], []

    def label_threshold(self) -> float:
        return 0.0

    def listeners(self, camera: int = 0) -> dict[str, bool]:
        """Output key -> whether camera ``camera``'s topic has a subscriber."""
        if camera >= len(self.camera_pubs):
            return {}
        return {k: p.get_subscription_count() > 0 for k, p in self.camera_pubs[camera].items()}

    # -- per frame
    def process(self, header, rgb: np.ndarray, wanted: dict[str, bool], scene=None) -> None:
        """One frame of the (first) camera."""
        self.process_batch([(0, header, rgb, wanted, scene)])

    def process_batch(self, items: list[tuple[int, Any, np.ndarray, dict[str, bool], Any]]
                      ) -> None:
        """``(camera, header, rgb, wanted outputs, scene)`` per frame (``scene``: the
        :class:`~fcn_perception.ros.spatial_input.Scene` with spatial inputs, else None):
        one predictor call for all, then each camera's publishers."""
        raise NotImplementedError

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
        self.node.stats.add_inference(self.task, (time.perf_counter() - t0) * 1e3)
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

    def _points_confidence(self, wanted) -> bool:
        return bool(wanted.get("points") and self.param("points_confidence"))

    def process_batch(self, items) -> None:
        # confidence costs a softmax (or a second graph): only while someone listens
        confidence = any(w.get("confidence") or self._points_confidence(w)
                         for _, _, _, w, _ in items)
        kwargs = {"confidence": True} if confidence else {}
        results = self.predict([rgb for _, _, rgb, _, _ in items], **kwargs)
        for (camera, header, rgb, wanted, scene), result in zip(items, results):
            pubs = self.camera_pubs[camera]
            self._publish(pubs, header, rgb, wanted, result)
            self.publish_camera_info(pubs, header, wanted, scene)
            if wanted.get("points") and scene is not None and scene.depth is not None:
                points = labelled_points(
                    result.labels, scene.depth, scene.camera, self.param("points_stride"),
                    result.confidence if self._points_confidence(wanted) else None)
                pubs["points"].publish(messages.labelled_cloud_msg(
                    header, points.xyz, points.labels, points.confidence))

    def _publish(self, pubs, header, rgb, wanted, result) -> None:
        labels = result.labels
        if labels.shape != rgb.shape[:2]:
            raise RuntimeError(
                f"the segmentation predictor returned labels of shape {labels.shape} for "
                f"an image of {rgb.shape[:2]}")
        if wanted.get("labels"):
            pubs["labels"].publish(messages.labels_msg(header, labels))
        if wanted.get("color") or wanted.get("overlay"):
            color = drawing.colorize(labels, self.lut)
            if wanted.get("color"):
                pubs["color"].publish(messages.rgb_msg(header, color))
            if wanted.get("overlay"):
                overlay = drawing.blend(rgb, color, self.param("overlay_alpha"))
                pubs["overlay"].publish(messages.rgb_msg(header, overlay))
        if wanted.get("confidence"):
            conf = getattr(result, "confidence", None)
            if conf is None:
                raise RuntimeError("the segmentation predictor gave no confidence")
            pubs["confidence"].publish(messages.confidence_msg(
                header, conf, self.param("confidence_encoding")))


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
        # the predictor drops low scores early; the filter applies the other parameters
        results = self.predict([rgb for _, _, rgb, _, _ in items],
                               score_threshold=self.filter.score_threshold)
        for (camera, header, rgb, wanted, scene), result in zip(items, results):
            pubs = self.camera_pubs[camera]
            det, ids = self.track(camera, self.filter(result))
            pubs["detections"].publish(messages.detections_msg(
                header, det.boxes, det.scores, det.class_ids, det.class_scores, ids))
            if wanted.get("image"):
                drawn = drawing.draw_detections(rgb, det.boxes, det.scores, det.class_ids,
                                                self.classes, self.lut)
                pubs["image"].publish(messages.rgb_msg(header, drawn))
            self.publish_camera_info(pubs, header, wanted, scene)
            if wanted.get("detections_3d") and scene is not None and scene.depth is not None:
                boxes = boxes_3d(det.boxes, scene.depth, scene.camera,
                                 self.param("depth_box_fraction"))
                ok = np.flatnonzero(boxes.valid)  # boxes without a valid depth: left out
                pubs["detections_3d"].publish(messages.detections_3d_msg(
                    header, boxes.centres[ok], boxes.sizes[ok], det.scores[ok],
                    det.class_ids[ok],
                    None if det.class_scores is None else det.class_scores[ok],
                    None if ids is None else [ids[i] for i in ok]))


HEADS = {"segmentation": SegmentationHead, "detection": DetectionHead}
