"""Measure the box-size distribution of a detection split and fit R-FCN's anchors to it.

    python -m fcn_perception.training.anchor_fit --data ../shared/camvid --split train.txt \
        --json docs/camvid_box_stats.json

Per class: how many boxes, percentiles of the box size (square root of the area, in
pixels at the frames' resolution), of the height and of the height/width ratio.  Then
1-D k-means in log space (3 clusters each) over all boxes' sizes and ratios: the anchor
sizes and aspect ratios (``--anchor-sizes``/``--aspect-ratios`` of ``train detection``;
the defaults of :data:`fcn_perception.models.rfcn.DEFAULTS` are these, rounded).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fcn_perception.training.det_data import open_detection_split

PERCENTILES = (10, 25, 50, 75, 90)


def log_kmeans(values: np.ndarray, k: int = 3, iterations: int = 100) -> list[float]:
    """Centres of 1-D k-means on ``log(values)`` (started at the 1/(2k) .. quantiles)."""
    x = np.log(values)
    centres = np.quantile(x, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        assign = np.argmin(np.abs(x[:, None] - centres[None]), axis=1)
        new = np.array([x[assign == i].mean() if (assign == i).any() else centres[i]
                        for i in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return [float(c) for c in np.exp(np.sort(centres))]


def box_statistics(boxes: np.ndarray, labels: np.ndarray, classes) -> dict:
    """Size, height and ratio percentiles per class and the fitted anchors."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    size, ratio = np.sqrt(w * h), h / np.maximum(w, 1e-6)

    def pct(v):
        return {f"p{q}": round(float(np.percentile(v, q)), 2) for q in PERCENTILES}

    per_class = {}
    for c, name in enumerate(classes):
        m = labels == c
        if m.any():
            per_class[name] = {"boxes": int(m.sum()), "size": pct(size[m]),
                               "height": pct(h[m]), "height_over_width": pct(ratio[m])}
    return {"boxes": int(len(boxes)), "per_class": per_class,
            "anchor_sizes": [round(s, 1) for s in log_kmeans(size)],
            "aspect_ratios": [round(r, 2) for r in log_kmeans(ratio)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train.txt")
    p.add_argument("--classes", nargs="+", default=None,
                   help="default: the data set's detection classes (CamVid: Car, "
                        "Pedestrian, Bicyclist)")
    p.add_argument("--json", default=None, help="write the statistics here")
    args = p.parse_args(argv)
    src = open_detection_split(args.data, args.split, args.classes)
    pairs = [src.boxes(i) for i in range(len(src))]
    boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b, _ in pairs])
    labels = np.concatenate([np.asarray(lab, np.int64).reshape(-1) for _, lab in pairs])
    stats = {"data": str(args.data), "split": args.split, "frames": len(src),
             "box_rule": getattr(src, "rule", None),
             **box_statistics(boxes, labels, src.classes)}
    text = json.dumps(stats, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
