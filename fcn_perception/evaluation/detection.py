"""Detection metrics: COCO average precision, at IoU 0.5 and over 0.5:0.95, computed by
pycocotools (``COCOeval``, ``iouType="bbox"``, one area range, at most ``max_dets``
detections per image and class).

The procedure, for each class and IoU threshold ``t``:

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


class DetectionEvaluator:
    """Accumulate per-image detections and ground truth; :meth:`summary` gives the APs
    (pycocotools' ``COCOeval`` on them, run once and kept until the next :meth:`add`).

    Args:
        class_names: detection class names (labels are indices into it).
        max_dets: detections per image and class kept, by score (COCO: 100).
    """

    def __init__(self, class_names: Sequence[str], max_dets: int = 100) -> None:
        self.class_names = list(class_names)
        self.max_dets = max_dets
        self.num_gt = np.zeros(len(self.class_names), dtype=np.int64)
        self.images = 0
        self._gt: list[dict] = []
        self._dt: list[dict] = []
        self._precision: np.ndarray | None = None  # (T, R, K), -1 where no ground truth

    def add(self, det_boxes, det_scores, det_labels, gt_boxes, gt_labels) -> None:
        """One image: ``(N, 4)`` x1 y1 x2 y2 detections with scores and class indices,
        and its ground-truth boxes and class indices."""
        det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
        det_scores = np.asarray(det_scores, np.float64).reshape(-1)
        det_labels = np.asarray(det_labels, np.int64).reshape(-1)
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
        self.images += 1
        image = self.images
        self.num_gt += np.bincount(gt_labels[(gt_labels >= 0)
                                             & (gt_labels < len(self.class_names))],
                                   minlength=len(self.class_names))
        for (x1, y1, x2, y2), c in zip(gt_boxes.tolist(), gt_labels.tolist()):
            w, h = x2 - x1, y2 - y1
            self._gt.append({"id": len(self._gt) + 1, "image_id": image,
                             "category_id": int(c) + 1, "bbox": [x1, y1, w, h],
                             "area": w * h, "iscrowd": 0})
        for (x1, y1, x2, y2), score, c in zip(det_boxes.tolist(), det_scores.tolist(),
                                             det_labels.tolist()):
            if 0 <= c < len(self.class_names):
                self._dt.append({"image_id": image, "category_id": int(c) + 1,
                                 "score": score, "bbox": [x1, y1, x2 - x1, y2 - y1]})
        self._precision = None

    def _evaluate(self) -> np.ndarray:
        """``(T, R, K)`` interpolated precision at :data:`IOU_THRESHOLDS` x
        :data:`RECALL_POINTS` x classes (pycocotools ``eval["precision"]``)."""
        if self._precision is not None:
            return self._precision
        k = len(self.class_names)
        precision = np.zeros((len(IOU_THRESHOLDS), len(RECALL_POINTS), k))
        precision[:, :, self.num_gt == 0] = -1.0
        if self._dt and self._gt:  # loadRes refuses an empty list; no detections: AP 0
            import contextlib
            import io

            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
                gt = COCO()
                gt.dataset = {"images": [{"id": i + 1} for i in range(self.images)],
                              "annotations": self._gt,
                              "categories": [{"id": c + 1, "name": n}
                                             for c, n in enumerate(self.class_names)]}
                gt.createIndex()
                ev = COCOeval(gt, gt.loadRes(self._dt), "bbox")
                ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
                ev.params.maxDets = [self.max_dets]
                ev.params.iouThrs, ev.params.recThrs = IOU_THRESHOLDS, RECALL_POINTS
                ev.params.catIds = list(range(1, k + 1))
                ev.evaluate()
                ev.accumulate()
            precision = ev.eval["precision"][:, :, :, 0, 0]
        self._precision = precision
        return precision

    def curves(self, c: int, threshold_index: int = 0):
        """``(precision, recall)`` of class ``c`` at ``IOU_THRESHOLDS[threshold_index]``:
        the interpolated (monotone) precision at the 101 :data:`RECALL_POINTS`."""
        return np.clip(self._evaluate()[threshold_index, :, c], 0.0, None), RECALL_POINTS

    def summary(self) -> dict:
        """``map50``, ``map``, ``per_class_ap`` (at 0.5), ``per_class_ap_coco``
        (0.5:0.95), ``num_gt`` per class and ``images`` -- fractions in ``[0, 1]``."""
        precision = self._evaluate()
        ap = precision.mean(axis=1).T  # (K, T)
        ap[self.num_gt == 0] = np.nan
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
