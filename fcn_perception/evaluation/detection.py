"""Detection metrics: COCO-style average precision, at IoU 0.5 and over 0.5:0.95.

For each class and IoU threshold ``t`` (the COCO procedure, ``iouType="bbox"``, one
area range, at most ``max_dets`` detections per image and class):

1. per image, detections are taken in descending score order; each is matched to the
   unmatched ground-truth box of its class with the highest IoU, if that IoU >= ``t``
   (true positive), otherwise it is a false positive;
2. over all images, detections are sorted by score (stable), giving cumulative
   precision ``TP / (TP + FP)`` and recall ``TP / #ground truth``;
3. precision is made monotone (each value replaced by the maximum to its right) and
   read at the 101 recall points ``0, 0.01, ..., 1`` (0 where the recall is never
   reached); AP is their mean.

``map50`` is the mean AP over classes at ``t = 0.5``; ``map`` the mean over classes and
``t = 0.50, 0.55, ..., 0.95``.  Classes without ground truth are left out of the means
(their AP is ``None``).  Box IoU uses continuous coordinates (area ``w * h``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of ``x1, y1, x2, y2`` boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(det_boxes, gt_boxes, thresholds) -> np.ndarray:
    """``(T, D)`` true-positive flags for score-sorted detections of one image and class."""
    tp = np.zeros((len(thresholds), len(det_boxes)), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(det_boxes, gt_boxes)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for d in range(len(det_boxes)):
            cand = np.where(taken, -1.0, iou[d])
            g = int(np.argmax(cand))
            if cand[g] >= t - 1e-10:  # COCO compares with min(t, 1 - 1e-10)
                taken[g] = True
                tp[ti, d] = True
    return tp


def precision_recall(scores: np.ndarray, tp: np.ndarray, num_gt: int):
    """Cumulative precision and recall for detections with ``scores`` and TP flags."""
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order].astype(np.float64)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1.0 - tp)
    recall = ctp / max(num_gt, 1)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return precision, recall


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """101-point interpolated AP (COCO)."""
    if len(precision) == 0:
        return 0.0
    p = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    vals = np.where(idx < len(p), p[np.minimum(idx, len(p) - 1)], 0.0)
    return float(vals.mean())


class DetectionEvaluator:
    """Accumulate per-image detections and ground truth; :meth:`summary` gives the APs.

    Args:
        class_names: detection class names (labels are indices into it).
        max_dets: detections per image and class kept, by score (COCO: 100).
    """

    def __init__(self, class_names: Sequence[str], max_dets: int = 100) -> None:
        self.class_names = list(class_names)
        self.max_dets = max_dets
        k = len(self.class_names)
        self.scores = [[] for _ in range(k)]
        self.tp = [[] for _ in range(k)]
        self.num_gt = np.zeros(k, dtype=np.int64)
        self.images = 0

    def add(self, det_boxes, det_scores, det_labels, gt_boxes, gt_labels) -> None:
        det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
        det_scores = np.asarray(det_scores, np.float64).reshape(-1)
        det_labels = np.asarray(det_labels, np.int64).reshape(-1)
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
        self.images += 1
        for c in range(len(self.class_names)):
            g = gt_boxes[gt_labels == c]
            self.num_gt[c] += len(g)
            m = det_labels == c
            order = np.argsort(-det_scores[m], kind="mergesort")[: self.max_dets]
            d, s = det_boxes[m][order], det_scores[m][order]
            self.scores[c].append(s)
            self.tp[c].append(_match(d, g, IOU_THRESHOLDS))

    def curves(self, c: int, threshold_index: int = 0):
        """Precision and recall of class ``c`` at ``IOU_THRESHOLDS[threshold_index]``."""
        scores = np.concatenate(self.scores[c]) if self.scores[c] else np.zeros(0)
        tp = np.concatenate([t[threshold_index] for t in self.tp[c]]) if self.tp[c] \
            else np.zeros(0, bool)
        return precision_recall(scores, tp, int(self.num_gt[c]))

    def summary(self) -> dict:
        """``map50``, ``map``, ``per_class_ap`` (at 0.5), ``per_class_ap_coco``
        (0.5:0.95), ``num_gt`` per class and ``images`` -- fractions in ``[0, 1]``."""
        k = len(self.class_names)
        ap = np.full((k, len(IOU_THRESHOLDS)), np.nan)
        for c in range(k):
            if self.num_gt[c] == 0:
                continue
            for ti in range(len(IOU_THRESHOLDS)):
                ap[c, ti] = interpolated_ap(*self.curves(c, ti))
        present = ~np.isnan(ap[:, 0])

        def mean(v):
            return float(np.mean(v)) if len(v) else 0.0

        return {
            "map50": mean(ap[present, 0]),
            "map": mean(ap[present].mean(axis=1)) if present.any() else 0.0,
            "per_class_ap": {n: (None if np.isnan(ap[c, 0]) else float(ap[c, 0]))
                             for c, n in enumerate(self.class_names)},
            "per_class_ap_coco": {n: (None if np.isnan(ap[c, 0]) else float(ap[c].mean()))
                                  for c, n in enumerate(self.class_names)},
            "num_gt": {n: int(self.num_gt[c]) for c, n in enumerate(self.class_names)},
            "images": int(self.images),
        }

