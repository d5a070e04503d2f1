"""Render the README's picture: val frames with the shipped models' outputs.

    python scripts/readme_figures.py --data ../shared/camvid --out docs/overlay.png

Each row: segmentation overlay | detections drawn on the frame.
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

import fcn_perception
from fcn_perception.evaluation.camvid import CamVid
from fcn_perception.imaging.drawing import blend, colorize, draw_detections, palette_lut


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val.txt")
    p.add_argument("--frames", type=int, nargs="+", default=[10, 60])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    seg = fcn_perception.load_predictor("segmentation")
    det = fcn_perception.load_predictor("detection")
    seg_lut, det_lut = palette_lut(seg.palette), palette_lut(det.palette)
    data = CamVid(args.data, args.split)
    rows = []
    for i in args.frames:
        rgb, _ = data.load(i)
        overlay = blend(rgb, colorize(seg(rgb).labels, seg_lut), 0.5)
        r = det(rgb)
        keep = r.scores >= 0.5
        boxes = draw_detections(rgb, r.boxes[keep], r.scores[keep], r.class_ids[keep],
                                list(det.classes), det_lut)
        rows.append(np.concatenate([overlay, np.full((rgb.shape[0], 8, 3), 255, np.uint8),
                                    boxes], axis=1))
    gap = np.full((8, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
    Image.fromarray(grid).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
