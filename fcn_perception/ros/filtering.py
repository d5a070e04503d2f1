"""The detection node's runtime filters on a DetectionResult (no ROS, numpy only).

The predictor already applies the model's own per-class NMS (the card's
``architecture.nms_thresh``, 0.3 by default) and, when given, ``score_threshold`` and
``max_detections``.  These filters let the node's parameters change at runtime on any
backend (a TensorRT engine's NMS is baked in): an NMS threshold below the model's
suppresses more; one at or above it changes nothing (suppressed boxes are gone).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from fcn_perception.inference.results import DetectionResult


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                  iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy per-class NMS (IoU above ``iou_threshold`` suppresses), in
    descending score order: OpenCV's ``dnn.NMSBoxesBatched``, numpy and OpenCV only, so
    an ONNX Runtime node needs no torch."""
    import cv2

    if len(scores) == 0:
        return np.zeros(0, np.int64)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    xywh = np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]])
    keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), np.asarray(scores, np.float32).tolist(),
                                   np.asarray(class_ids, np.int64).tolist(),
                                   -1.0, float(iou_threshold))  # -1: no score cut here
    return np.asarray(keep, np.int64).reshape(-1)


def filter_detections(result: DetectionResult, *, score_threshold: float = 0.0,
                      allowed: np.ndarray | None = None, nms_threshold: float | None = None,
                      max_detections: int | None = None) -> DetectionResult:
    """The detections of ``result`` kept by score, class whitelist (``allowed`` ids or
    None for all), an extra NMS (skipped when ``nms_threshold`` is None) and the count
    limit, sorted by descending score (class distributions follow their boxes)."""
    boxes = np.asarray(result.boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(result.scores, np.float32).reshape(-1)
    class_ids = np.asarray(result.class_ids, np.int64).reshape(-1)
    keep = scores >= score_threshold
    if allowed is not None:
        keep &= np.isin(class_ids, allowed)
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    if nms_threshold is not None and idx.size > 1:
        idx = idx[nms_per_class(boxes[idx], scores[idx], class_ids[idx], nms_threshold)]
    if max_detections is not None:
        idx = idx[:max_detections]
    dist = None if result.class_scores is None else np.asarray(result.class_scores)[idx]
    return dataclasses.replace(result, boxes=boxes[idx], scores=scores[idx],
                               class_ids=class_ids[idx], class_scores=dist)


@dataclasses.dataclass(frozen=True)
class DetectionFilter:
    """The detection parameters, resolved against the loaded model once per change."""

    score_threshold: float = 0.0
    allowed: np.ndarray | None = None  # class ids to keep; None: all
    nms_threshold: float | None = None  # None: the model's own NMS is the last word
    max_detections: int | None = None

    @classmethod
    def for_model(cls, model_classes: Sequence[str], model_nms_threshold: float, *,
                  score_threshold: float, nms_threshold: float, max_detections: int,
                  classes: Sequence[str] = ()) -> DetectionFilter:
        """``classes`` are names of ``model_classes`` (empty: all); ``nms_threshold``
        runs only when it is below ``model_nms_threshold``, the model's own."""
        allowed = (np.array([i for i, n in enumerate(model_classes) if n in classes], np.int64)
                   if classes else None)
        return cls(float(score_threshold), allowed,
                   float(nms_threshold) if nms_threshold < model_nms_threshold else None,
                   int(max_detections))

    def __call__(self, result: DetectionResult) -> DetectionResult:
        return filter_detections(result, score_threshold=self.score_threshold,
                                 allowed=self.allowed, nms_threshold=self.nms_threshold,
                                 max_detections=self.max_detections)
