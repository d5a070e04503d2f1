"""The README's 3D picture: ``detections_3d`` and ``segmentation/points`` seen from above,
computed the way the nodes do (shipped FCN-8s and R-FCN, ByteTrack, the spatial
module) on a CamVid frame with a synthetic depth image.

    python scripts/spatial_figure.py [--out docs/spatial_topdown.png]

The synthetic scene: a pinhole camera (fx = fy = 500, cx = 240, cy = 180) 1.5 m above a
flat road; below the horizon each pixel's depth is the road's, above it a wall 40 m
away; each detected object is a flat board standing on the road at the depth of its
box's bottom edge.  Left: the frame with the track ids; right: the labelled points
(stride 2, coloured by class, the road's dropped beyond 40 m) and each detection's 3D
box from above (x across, z forward), with its id.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FX = FY = 500.0
CX, CY = 240.0, 180.0
HEIGHT_M = 1.5
WALL_M = 40.0


def synthetic_depth(boxes: np.ndarray, shape=(360, 480)) -> np.ndarray:
    v = np.arange(shape[0], dtype=np.float64)[:, None] + np.zeros(shape)
    with np.errstate(divide="ignore"):
        road = np.where(v > CY + 1, FY * HEIGHT_M / (v - CY), np.inf)
    depth = np.minimum(road, WALL_M)
    for x1, y1, x2, y2 in sorted(boxes.tolist(), key=lambda b: -b[3]):  # far first
        z = FY * HEIGHT_M / max(y2 - CY, 1.0) if y2 > CY + 1 else WALL_M
        r0, r1, c0, c1 = int(y1), int(np.ceil(y2)), int(x1), int(np.ceil(x2))
        depth[r0:r1, c0:c1] = np.minimum(depth[r0:r1, c0:c1], min(z, WALL_M))
    return depth.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "spatial_topdown.png")
    parser.add_argument("--frame", type=Path, default=None,
                        help="a CamVid frame (default: the packaged sample's fourth)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from fcn_perception import load_predictor
    from fcn_perception.imaging.drawing import draw_detections, palette_lut
    from fcn_perception.spatial.depth import Intrinsics
    from fcn_perception.spatial.project import boxes_3d, labelled_points
    from fcn_perception.tracking import ByteTracker

    path = args.frame or sorted(
        (ROOT / "fcn_perception" / "data" / "camvid_sample" / "val").glob("*.png"))[3]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    seg = load_predictor("segmentation", backend="onnxruntime-cpu")
    det = load_predictor("detection", backend="onnxruntime-cpu")
    result = det(rgb, score_threshold=0.1)
    ids = ByteTracker().update(result.boxes, result.scores)
    keep = ids >= 0
    boxes, ids = result.boxes[keep], ids[keep]
    labels = seg(rgb).labels
    camera = Intrinsics(FX, FY, CX, CY, rgb.shape[1], rgb.shape[0])
    depth = synthetic_depth(boxes, labels.shape)
    depth[depth >= WALL_M] = np.nan  # the wall (sky, far buildings) left out of the plot
    points = labelled_points(labels, depth, camera, stride=2)
    b3 = boxes_3d(boxes, depth, camera)

    seg_lut = palette_lut(seg.palette, len(seg.classes))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6),
                                      gridspec_kw={"width_ratios": [1.1, 1]})
    drawn = draw_detections(rgb, boxes, result.scores[keep], result.class_ids[keep],
                            list(det.classes), palette_lut(det.palette))
    left.imshow(drawn)
    for (x1, y1, _, _), tid in zip(boxes, ids):
        left.text(x1, y1 - 14, f"id {tid}", color="yellow", fontsize=8,
                  bbox={"facecolor": "black", "alpha": 0.6, "pad": 1})
    left.set_title(f"{path.stem}: detections with track ids")
    left.axis("off")
    right.scatter(points.xyz[:, 0], points.xyz[:, 2], s=0.3,
                  c=seg_lut[points.labels][:, :3] / 255.0, rasterized=True)
    for (cx, _, cz), (sx, _, sz), tid, cid, ok in zip(b3.centres, b3.sizes, ids,
                                                      result.class_ids[keep], b3.valid):
        if not ok:
            continue
        depth_extent = max(sz, 0.3)
        right.add_patch(plt.Rectangle((cx - sx / 2, cz - depth_extent / 2), sx, depth_extent,
                                      fill=False, edgecolor="red", linewidth=1.5))
        right.text(cx, cz + 1.0, f"{tid} {det.classes[cid]}", color="red", fontsize=7,
                   ha="center")
    right.set_xlabel("x (m, right)")
    right.set_ylabel("z (m, forward)")
    right.set_xlim(-20, 20)
    right.set_ylim(0, WALL_M)
    right.set_aspect("equal")
    right.set_title("top-down: segmentation/points by class, detections_3d boxes")
    shown = [c for c in np.unique(points.labels) if c < len(seg.classes)]
    handles = [plt.Line2D([], [], marker="s", linestyle="", color=seg_lut[c][:3] / 255.0,
                          label=seg.classes[c]) for c in shown]
    right.legend(handles=handles, fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: {len(points.xyz)} points, {int(b3.valid.sum())} 3D detections")


if __name__ == "__main__":
    main()
