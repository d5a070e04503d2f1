"""Render the README's pictures from the shipped models and their cards.

    python scripts/readme_figures.py --data ../shared/camvid --out docs

Writes ``docs/overlay.png`` (frames: segmentation overlay | detections drawn, best
class and score), ``docs/training_curves.png`` (per epoch: the default segmentation
recipe's held-out mean IoU, from its card's ``heldout.history``; the detector's held-out
mAP@0.5, mAP and Pedestrian AP50, likewise; a card without a held-out run shows its
``training.history`` on val).  The per-class IoU
bars, confusion matrix and PR curves come from ``fcn-perception evaluate
segmentation|detection``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import fcn_perception
from fcn_perception.card import DEFAULT_WEIGHTS, model_title, read_card
from fcn_perception.evaluation.camvid import CamVid
from fcn_perception.evaluation.plots import plot_training_curves
from fcn_perception.imaging.drawing import blend, colorize, draw_detections, palette_lut


def overlay_grid(data: CamVid, frames: list[int], min_score: float) -> np.ndarray:
    seg = fcn_perception.load_predictor("segmentation")
    det = fcn_perception.load_predictor("detection")
    seg_lut, det_lut = palette_lut(seg.palette), palette_lut(det.palette)
    rows = []
    for i in frames:
        rgb, _ = data.load(i)
        overlay = blend(rgb, colorize(seg(rgb).labels, seg_lut), 0.5)
        r = det(rgb)
        keep = r.scores >= min_score
        boxes = draw_detections(rgb, r.boxes[keep], r.scores[keep], r.class_ids[keep],
                                list(det.classes), det_lut)
        rows.append(np.concatenate([overlay, np.full((rgb.shape[0], 8, 3), 255, np.uint8),
                                    boxes], axis=1))
    gap = np.full((8, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)


def training_curves(path: Path) -> None:
    """Per task, the default model's run with the sequence held out when its card has one
    (``heldout.history``: held-out scores per epoch, and the last epoch the fixed schedule
    keeps), else its own training run on val (``training.history``)."""
    panels = []
    for task, keys in (("segmentation", ("val/mean_iou", "val/pixel_accuracy")),
                       ("detection", ("val/map50", "val/map", "val/ap50_Pedestrian"))):
        card = read_card(DEFAULT_WEIGHTS[task])
        held = card.get("heldout")
        where = f"{' + '.join(held['sequences'])} held out" if held else "CamVid val"
        panels.append({"title": f"{task} ({model_title(card)}): {where}", "keys": keys,
                       "history": held["history"] if held else card["training"]["history"],
                       "selected": held["selected_epoch"] if held else card["selected_epoch"]})
    plot_training_curves(panels, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val.txt")
    p.add_argument("--frames", type=int, nargs="+", default=[10, 60, 95])
    p.add_argument("--min-score", type=float, default=0.5)
    p.add_argument("--out", default="docs")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = overlay_grid(CamVid(args.data, args.split), args.frames, args.min_score)
    Image.fromarray(grid).save(out / "overlay.png", optimize=True)
    training_curves(out / "training_curves.png")
    print(f"wrote {out / 'overlay.png'} and {out / 'training_curves.png'}")


if __name__ == "__main__":
    main()
