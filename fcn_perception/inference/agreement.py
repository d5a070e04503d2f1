"""How closely two predictors agree: fp16 or int8 against fp32, TensorRT against torch.

* segmentation: the fraction of pixels with the same label;
* detection: the fraction of the reference's boxes (score >= ``score_threshold``) that
  the candidate reproduces: a box of the same class with IoU >= ``iou`` and a score of
  at least ``score_threshold - score_margin`` (a box scored 0.51 by fp32 and 0.49 by
  int8 is the same detection), matched one to one.

With label maps beside the frames, :func:`compare_on_folder` also reports both
predictors' mean IoU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(A, B)`` IoU of ``(A, 4)`` and ``(B, 4)`` ``x1, y1, x2, y2`` boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def matched_boxes(ref_boxes, ref_labels, cand_boxes, cand_labels, iou: float = 0.9
                  ) -> np.ndarray:
    """``(R,)`` bool: reference box ``i`` has its own same-class candidate box with IoU >=
    ``iou`` (greedy by IoU, each candidate used once)."""
    ref_labels, cand_labels = np.asarray(ref_labels), np.asarray(cand_labels)
    ious = box_iou(ref_boxes, cand_boxes)
    ious[ref_labels[:, None] != cand_labels[None, :]] = 0.0
    matched = np.zeros(len(ref_labels), bool)
    used = np.zeros(len(cand_labels), bool)
    pairs = np.argwhere(ious >= iou)
    for i, j in sorted(pairs.tolist(), key=lambda p: -ious[p[0], p[1]]):
        if not matched[i] and not used[j]:
            matched[i] = used[j] = True
    return matched


def detection_agreement(reference, candidate, score_threshold: float = 0.5,
                        score_margin: float = 0.1, iou: float = 0.9) -> tuple[int, int]:
    """``(reference boxes, matched)`` for two :class:`DetectionResult` of one frame."""
    keep_r = reference.scores >= score_threshold
    keep_c = candidate.scores >= score_threshold - score_margin
    m = matched_boxes(reference.boxes[keep_r], reference.class_ids[keep_r],
                      candidate.boxes[keep_c], candidate.class_ids[keep_c], iou)
    return int(keep_r.sum()), int(m.sum())


def compare_frames(reference, candidate, frames, score_threshold: float = 0.5,
                   score_margin: float = 0.1, iou: float = 0.9) -> dict:
    """Run both predictors on ``frames`` (RGB uint8 arrays) and compare.

    Segmentation: ``{"frames", "pixels", "agreement"}``; detection: ``{"frames",
    "boxes", "matched", "agreement"}`` (agreement = matched / boxes, 0 without boxes).
    """
    if reference.task != candidate.task:
        raise ValueError(f"cannot compare a {reference.task} with a {candidate.task} predictor")
    same = total = count = 0
    for rgb in frames:
        a, b = reference(rgb), candidate(rgb)
        count += 1
        if reference.task == "segmentation":
            same += int((a.labels == b.labels).sum())
            total += a.labels.size
        else:
            boxes, matched = detection_agreement(a, b, score_threshold, score_margin, iou)
            total += boxes
            same += matched
    key = "pixels" if reference.task == "segmentation" else "boxes"
    out = {"frames": count, key: total, "agreement": same / total if total else 0.0}
    if reference.task == "detection":
        out["matched"] = same
    return out


def read_frames(folder: str | Path, limit: int | None = None) -> list[np.ndarray]:
    from PIL import Image

    from fcn_perception.inference.calibration import list_images

    return [np.asarray(Image.open(p).convert("RGB")) for p in list_images(folder, limit)]


def mean_iou(predictor, folder: str | Path, label_folder: str | Path, num_classes: int,
             ignore_index: int | None = None, limit: int | None = None) -> float | None:
    """Mean IoU of a segmentation predictor on the frames that have a label map of the
    same name in ``label_folder`` (None when none has)."""
    from PIL import Image

    from fcn_perception.inference.calibration import list_images

    k = num_classes
    conf = np.zeros((k, k), np.int64)
    seen = False
    for path in list_images(folder, limit):
        gt_path = Path(label_folder) / path.name
        if not gt_path.is_file():
            continue
        seen = True
        pred = predictor(np.asarray(Image.open(path).convert("RGB"))).labels.astype(np.int64)
        gt = np.asarray(Image.open(gt_path)).astype(np.int64)
        keep = (gt >= 0) & (gt < k)
        if ignore_index is not None:
            keep &= gt != ignore_index
        conf += np.bincount(gt[keep] * k + np.minimum(pred[keep], k - 1),
                            minlength=k * k).reshape(k, k)
    if not seen:
        return None
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(np.where(union > 0, tp / union, np.nan)))
