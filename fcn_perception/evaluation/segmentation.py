"""Segmentation metrics of the FCN paper (Sec. 5): pixel accuracy, mean accuracy,
mean IU and frequency-weighted IU, from a confusion matrix.

With ``n[i, j]`` the number of pixels of class ``i`` predicted as ``j`` and
``t_i = sum_j n[i, j]``:

* pixel accuracy ``sum_i n_ii / sum_i t_i``
* mean accuracy ``(1/k) sum_i n_ii / t_i``
* mean IU ``(1/k) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency-weighted IU ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

Classes absent from both ground truth and prediction are left out of the means
(their IoU is reported as ``None``).  :func:`write_outputs` writes the scores as
``evaluate segmentation`` and ``bag eval`` report them: a JSON and two pictures.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fcn_perception.evaluation.plots import plot_confusion, plot_iou_bars


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` confusion matrix (rows: ground truth, cols: prediction)."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target: np.ndarray, pred: np.ndarray) -> None:
        """Add a pair of label maps of equal shape (any integer dtype)."""
        target = np.asarray(target).ravel().astype(np.int64)
        pred = np.asarray(pred).ravel().astype(np.int64)
        if target.shape != pred.shape:
            raise ValueError(f"target and prediction differ in size: {target.shape} vs {pred.shape}")
        keep = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        k = self.num_classes
        pred = np.clip(pred[keep], 0, k - 1)
        self.matrix += np.bincount(target[keep] * k + pred, minlength=k * k).reshape(k, k)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def scores(self, class_names=None) -> dict:
        return segmentation_scores(self.matrix, class_names)


def segmentation_scores(matrix: np.ndarray, class_names=None) -> dict:
    """Metrics from a confusion matrix, as fractions in ``[0, 1]``.

    Returns ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``, ``fw_iou``,
    ``per_class_iou`` and ``per_class_accuracy`` (dicts keyed by class name, or index
    as a string) and ``pixels`` (number of pixels scored).
    """
    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    tp = np.diag(m)
    gt = m.sum(axis=1)
    pred = m.sum(axis=0)
    union = gt + pred - tp
    total = gt.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    present = gt > 0
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_accuracy": float(np.nanmean(acc)) if present.any() else 0.0,
        "mean_iou": float(np.nanmean(iou)) if (union > 0).any() else 0.0,
        "fw_iou": float((gt[present] * iou[present]).sum() / total) if total else 0.0,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
        "per_class_accuracy": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, acc)},
        "pixels": int(total),
    }


def draw_pictures(scores: dict, matrix, classes, palette, stem) -> dict:
    """The confusion matrix and the per-class IoU bars as ``<stem>_confusion.png`` and
    ``<stem>_iou.png``; returns ``{"confusion_png": path, "iou_png": path}``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    return {"confusion_png": str(plot_confusion(np.asarray(matrix), classes,
                                                f"{stem}_confusion.png")),
            "iou_png": str(plot_iou_bars(scores["per_class_iou"], f"{stem}_iou.png",
                                         palette=[tuple(c) for c in palette]))}


def write_outputs(scores: dict, conf: ConfusionMatrix, classes, palette, json_path) -> dict:
    """Write the metrics JSON and the two pictures beside it (:func:`draw_pictures`);
    return what the JSON holds."""
    json_path = Path(json_path)
    record = {**scores, "confusion_matrix": conf.matrix.tolist(),
              **draw_pictures(scores, conf.matrix, classes, palette, json_path.with_suffix(""))}
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return record
