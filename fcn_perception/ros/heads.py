"""Task heads: one predictor and the topics it publishes, inside a node.

A head reads its task's parameters (under a prefix in ``perception_node``), builds its
predictor with the node's factory at *configure*, creates its publishers at *activate*
and, per frame, runs the predictor and publishes only the outputs someone subscribes to.
The logic it calls is ROS-free: :func:`~fcn_perception.ros.params.predictor_options`,
:class:`~fcn_perception.ros.filtering.DetectionFilter`, the message builders.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from fcn_perception.imaging import drawing
from fcn_perception.inference.backends import device_of
from fcn_perception.ros import messages, qos
from fcn_perception.ros.filtering import DetectionFilter
from fcn_perception.ros.params import parse_device, predictor_options, validate_classes

if TYPE_CHECKING:
    from fcn_perception.inference.interface import DetectionPredictor, SegmentationPredictor
    from fcn_perception.ros.nodes import PerceptionNode


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
        """Build the (warmed-up) predictor from the parameters."""
        if self.param("allow_modified_weights"):
            from fcn_perception.weights_io import DEFAULT_WEIGHTS, allow_modified_weights

            allow_modified_weights(self.param("weights") or DEFAULT_WEIGHTS[self.task])
        self.predictor = self.node.predictor_factory(self.task, **predictor_options(self.param))
        self.classes = [str(c) for c in self.predictor.classes]
        self.lut = drawing.palette_lut(self.predictor.palette, len(self.classes))
        self.apply_runtime_params()

    def release(self) -> None:
        self.predictor = None

    def describe_backend(self) -> dict[str, str]:
        """backend, device and precision of the loaded predictor (or the parameters)."""
        if self.predictor is None:
            return {k: str(self.param(k)) for k in ("backend", "device", "precision")}
        name = self.predictor.backend_name
        return {"backend": name, "device": device_of(name, parse_device(self.param("device"))[1]),
                "precision": self.predictor.precision}

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
        """Lifecycle publishers (at configure): visible while inactive, silent until the
        node is activated; ``label_info`` is published on activation."""
        out_qos = qos.output_qos()
        self.pubs = {key: self.node.create_lifecycle_publisher(msg_type, topic, out_qos)
                     for key, (topic, msg_type) in self.outputs().items()}
        try:
            from vision_msgs.msg import LabelInfo  # optional: a segmentation-only robot
        except ImportError:
            self.node.get_logger().warning(
                "vision_msgs is not installed: no label_info is published")
            return
        self.label_info_pub = self.node.create_lifecycle_publisher(
            LabelInfo, self.label_info_topic, qos.latched_qos())

    def publish_label_info(self) -> None:
        if self.label_info_pub is not None:
            header = Header(stamp=self.node.get_clock().now().to_msg())
            self.label_info_pub.publish(
                messages.label_info_msg(header, self.classes, self.label_threshold()))

    def destroy_outputs(self) -> None:
        for pub in [*self.pubs.values(), self.label_info_pub]:
            if pub is not None:
                self.node.destroy_lifecycle_publisher(pub)
        self.pubs, self.label_info_pub = {}, None

    def label_threshold(self) -> float:
        return 0.0

    def listeners(self) -> dict[str, bool]:
        return {k: p.get_subscription_count() > 0 for k, p in self.pubs.items()}

    # -- per frame
    def process(self, header, rgb: np.ndarray, wanted: dict[str, bool]) -> None:
        raise NotImplementedError

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
        return {
            "labels": ("segmentation/labels", Image),
            "color": ("segmentation/color", Image),
            "overlay": ("segmentation/overlay", Image),
        }

    def process(self, header, rgb, wanted) -> None:
        labels = self.timed(self.predictor, rgb).labels
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
    predictor: DetectionPredictor | None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.filter = DetectionFilter()

    def outputs(self):
        from vision_msgs.msg import Detection2DArray  # optional for segmentation nodes

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
        self.filter = DetectionFilter.for_model(
            self.classes, self.predictor.nms_threshold,
            score_threshold=self.param("score_threshold"),
            nms_threshold=self.param("nms_threshold"),
            max_detections=self.param("max_detections"), classes=self.param("classes"))
        self.publish_label_info()  # its threshold is score_threshold

    def process(self, header, rgb, wanted) -> None:
        # the predictor drops low scores early; the filter applies the other parameters
        det = self.filter(self.timed(self.predictor, rgb,
                                     score_threshold=self.filter.score_threshold))
        self.pubs["detections"].publish(messages.detections_msg(
            header, det.boxes, det.scores, det.class_ids, det.class_scores))
        if wanted["image"]:
            drawn = drawing.draw_detections(rgb, det.boxes, det.scores, det.class_ids,
                                            self.classes, self.lut)
            self.pubs["image"].publish(messages.rgb_msg(header, drawn))


HEADS = {"segmentation": SegmentationHead, "detection": DetectionHead}
