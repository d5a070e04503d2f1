"""The per-frame step of the task heads: a Predictor result -> the messages to publish.

Only the outputs someone subscribes to are built: ``wanted`` maps an output key
(``labels``, ``color``, ``overlay``, ``confidence``, ``points``, ``camera_info`` for
segmentation; ``detections``, ``image``, ``detections_3d``, ``camera_info`` for
detection) to whether its topic has a subscriber.  The result is ``{key: message}``,
each message carrying the frame's header; the heads publish it on their publishers
(:mod:`~fcn_perception.ros.heads`).  No node, no DDS: the messages are the
sensor_msgs/vision_msgs classes (plain data), built by
:mod:`~fcn_perception.ros.messages`.

``rgb`` is the decoded frame ``(H, W, 3)`` uint8; ``scene`` the frame's
:class:`~fcn_perception.ros.spatial_input.Scene` (intrinsics, depth ``(Hd, Wd)`` metres,
camera_info) with spatial inputs, else None.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fcn_perception.imaging import drawing
from fcn_perception.inference.results import DetectionResult, SegmentationResult
from fcn_perception.ros import messages
from fcn_perception.spatial.project import boxes_3d, labelled_points


def _camera_info(header, wanted: Mapping[str, bool], scene) -> dict[str, Any]:
    """``camera_info``: the input's, with the frame's header (spatial inputs only)."""
    if scene is not None and wanted.get("camera_info"):
        return {"camera_info": messages.camera_info_msg(header, scene.info)}
    return {}


@dataclass(frozen=True)
class SegmentationOutputs:
    """The segmentation outputs' runtime settings (the head's parameters) and the step.

    ``lut``: the ``(256, 3)`` uint8 palette (:func:`~fcn_perception.imaging.drawing.palette_lut`).
    """

    lut: np.ndarray
    overlay_alpha: float = 0.5
    confidence_encoding: str = "mono8"  # mono8 | 32FC1
    points_stride: int = 4
    points_confidence: bool = False

    def needs_confidence(self, wanted: Mapping[str, bool]) -> bool:
        """Whether the predictor must give the confidence (it costs a softmax or a
        second graph: only while someone listens to it or to confident points)."""
        return bool(wanted.get("confidence") or self._confident_points(wanted))

    def _confident_points(self, wanted: Mapping[str, bool]) -> bool:
        return bool(wanted.get("points") and self.points_confidence)

    def messages(self, header, rgb: np.ndarray, result: SegmentationResult,
                 wanted: Mapping[str, bool], scene=None) -> dict[str, Any]:
        """``{output key: message}`` for one frame.  Raises RuntimeError when the
        result does not fit the frame (labels of another size, no confidence)."""
        labels = result.labels
        if labels.shape != rgb.shape[:2]:
            raise RuntimeError(
                f"the segmentation predictor returned labels of shape {labels.shape} for "
                f"an image of {rgb.shape[:2]}")
        out: dict[str, Any] = {}
        if wanted.get("labels"):
            out["labels"] = messages.labels_msg(header, labels)
        if wanted.get("color") or wanted.get("overlay"):
            color = drawing.colorize(labels, self.lut)
            if wanted.get("color"):
                out["color"] = messages.rgb_msg(header, color)
            if wanted.get("overlay"):
                out["overlay"] = messages.rgb_msg(
                    header, drawing.blend(rgb, color, self.overlay_alpha))
        if wanted.get("confidence"):
            if result.confidence is None:
                raise RuntimeError("the segmentation predictor gave no confidence")
            out["confidence"] = messages.confidence_msg(header, result.confidence,
                                                        self.confidence_encoding)
        out.update(_camera_info(header, wanted, scene))
        if wanted.get("points") and scene is not None and scene.depth is not None:
            points = labelled_points(
                labels, scene.depth, scene.camera, self.points_stride,
                result.confidence if self._confident_points(wanted) else None)
            out["points"] = messages.labelled_cloud_msg(header, points.xyz, points.labels,
                                                        points.confidence)
        return out


@dataclass(frozen=True)
class DetectionOutputs:
    """The detection outputs' settings and the step.  ``classes``: the model's class
    names (box captions); ``lut``: the palette, as for segmentation."""

    classes: Sequence[str]
    lut: np.ndarray
    depth_box_fraction: float = 0.5

    def messages(self, header, rgb: np.ndarray, det: DetectionResult,
                 wanted: Mapping[str, bool], scene=None,
                 ids: Sequence[str] | None = None) -> dict[str, Any]:
        """``{output key: message}`` for one frame's detections (already filtered and
        tracked); ``ids``: each detection's track id (None: untracked)."""
        dist = det.class_scores
        out: dict[str, Any] = {}
        if wanted.get("detections"):
            out["detections"] = messages.detections_msg(
                header, det.boxes, det.scores, det.class_ids, dist, ids)
        if wanted.get("image"):
            out["image"] = messages.rgb_msg(header, drawing.draw_detections(
                rgb, det.boxes, det.scores, det.class_ids, self.classes, self.lut))
        out.update(_camera_info(header, wanted, scene))
        if wanted.get("detections_3d") and scene is not None and scene.depth is not None:
            boxes = boxes_3d(det.boxes, scene.depth, scene.camera, self.depth_box_fraction)
            ok = np.flatnonzero(boxes.valid)  # boxes without a valid depth: left out
            out["detections_3d"] = messages.detections_3d_msg(
                header, boxes.centres[ok], boxes.sizes[ok], det.scores[ok],
                det.class_ids[ok], None if dist is None else dist[ok],
                None if ids is None else [ids[i] for i in ok])
        return out
