"""Bounding boxes derived from semantic label maps (CamVid has no box annotations).

Rule: for each detection class (by default CamVid's Car, Pedestrian and Bicyclist;
SignSymbol can be added), every connected component of that class's pixels is one
object, and its box is the tightest box around the component's pixels, in pixel-edge
coordinates ``x1 = min column, y1 = min row, x2 = max column + 1, y2 = max row + 1``.
Components smaller than ``min_area`` pixels are dropped.

Known limits of the rule (they are limits of the ground truth derived this way, and
so of every score computed on it):

* touching or overlapping objects of the same class merge into one box (a row of
  parked cars, a group of pedestrians);
* an object split by an occluder (a pole in front of a car) becomes two boxes;
* CamVid's Bicyclist label covers rider and bicycle together, so a cyclist is one box;
* the minimum area drops distant objects, which are then neither targets nor
  counted as misses.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# CamVid 11-class ids (see fcn_perception.evaluation.camvid)
DEFAULT_CLASS_IDS = (8, 9, 10)  # Car, Pedestrian, Bicyclist
DEFAULT_MIN_AREA = 100
DEFAULT_CONNECTIVITY = 8


def connected_components(mask: np.ndarray, connectivity: int = DEFAULT_CONNECTIVITY):
    """Components of a boolean mask (OpenCV's ``connectedComponentsWithStats``).

    Returns an ``(N, 5)`` int64 array, one row per component in order of first
    appearance (raster order): ``x1, y1, x2, y2, area`` with exclusive ``x2, y2``.
    ``connectivity`` is 4 (edge neighbours) or 8 (edge and corner neighbours).
    """
    import cv2

    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    if not mask.any():
        return np.zeros((0, 5), dtype=np.int64)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
    # OpenCV numbers components in its scan's order (2x2 blocks): order them by their
    # first pixel in raster order, so the boxes come in the order of the image
    ids, first = np.unique(labels.ravel(), return_index=True)
    order = ids[1:][np.argsort(first[1:], kind="stable")]  # id 0 is the background
    x, y, w, h, area = stats[order].astype(np.int64).T
    return np.stack([x, y, x + w, y + h, area], axis=1)


def derive_boxes(label: np.ndarray, class_ids: Sequence[int] = DEFAULT_CLASS_IDS,
                 min_area: int = DEFAULT_MIN_AREA,
                 connectivity: int = DEFAULT_CONNECTIVITY) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the connected components of ``class_ids`` in a label map.

    Args:
        label: ``(H, W)`` integer label map (class id per pixel).
        class_ids: label-map ids of the detection classes; detection class ``i`` is
            ``class_ids[i]``.
        min_area: components with fewer pixels are dropped.
        connectivity: 4 or 8.

    Returns:
        ``boxes`` ``(N, 4)`` float32 ``x1, y1, x2, y2`` (pixel edges) and ``labels``
        ``(N,)`` int64 detection-class indices into ``class_ids``.
    """
    label = np.asarray(label)
    boxes, labels = [], []
    for i, cid in enumerate(class_ids):
        comps = connected_components(label == cid, connectivity)
        comps = comps[comps[:, 4] >= min_area]
        boxes.append(comps[:, :4].astype(np.float32))
        labels.append(np.full(len(comps), i, dtype=np.int64))
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(boxes), np.concatenate(labels)


def derivation_rule(class_names: Sequence[str], class_ids: Sequence[int], min_area: int,
                    connectivity: int = DEFAULT_CONNECTIVITY) -> dict:
    """The rule as recorded in model cards and evaluation JSON."""
    return {
        "method": "connected components of label-map classes",
        "classes": list(class_names),
        "label_ids": [int(c) for c in class_ids],
        "min_area": int(min_area),
        "connectivity": int(connectivity),
        "box": "tight box around component pixels, x2/y2 exclusive (pixel edges)",
    }


@dataclass
class BoxRule:
    """How detection targets are derived from label maps: the detector card's
    ``box_derivation`` (the one parser of it: bag eval and ``evaluate detection`` both
    read it here)."""

    label_ids: tuple[int, ...]
    min_area: int
    connectivity: int

    @classmethod
    def from_card(cls, card: dict | None) -> BoxRule:
        """The card's ``box_derivation``; label ids from it, else the card's class names
        looked up in CamVid's classes (a card without a rule: CamVid's defaults)."""
        card = card or {}
        rule = card.get("box_derivation") or {}
        ids = rule.get("label_ids")
        if ids is None:
            from fcn_perception.evaluation.camvid import CLASSES

            names = card.get("classes") or []
            ids = ([CLASSES.index(n) for n in names] if names and set(names) <= set(CLASSES)
                   else DEFAULT_CLASS_IDS)
        return cls(tuple(int(i) for i in ids),
                   int(rule.get("min_area", DEFAULT_MIN_AREA)),
                   int(rule.get("connectivity", DEFAULT_CONNECTIVITY)))

    def derive(self, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes (N, 4) float32, labels (N,) int64)`` of a label map."""
        return derive_boxes(label, self.label_ids, self.min_area, self.connectivity)

    def record(self, class_names: Sequence[str]) -> dict:
        """The rule as model cards and evaluation JSON record it."""
        return derivation_rule(class_names, self.label_ids, self.min_area, self.connectivity)
