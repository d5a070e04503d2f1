"""The per-frame cost each optional feature adds to a node, on a 360x480 CamVid frame:
tracking (ByteTrack update), the synchroniser (three messages per frame), depth
decoding, detections_3d (median depth per box, message), segmentation/points (labelled
points at points_stride 4 and 1, PointCloud2 message) and camera_info passed on.
Detections are the shipped R-FCN's on the frame (score >= 0.1), labels the shipped
FCN-8s's; depth a tilted plane.  Median of ``--repeats`` runs each.

    .venv/bin/python benchmarks/spatial_cost.py [--repeats 50] [--out docs/spatial_cost.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, camvid_frames, cpu_line, load_average  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()``."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "spatial_cost.json")
    args = parser.parse_args()

    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from fcn_perception import load_predictor
    from fcn_perception.ros import messages
    from fcn_perception.spatial.depth import Intrinsics, decode_depth
    from fcn_perception.spatial.project import boxes_3d, labelled_points
    from fcn_perception.spatial.sync import ApproximateSync
    from fcn_perception.tracking import ByteTracker

    frame = camvid_frames(1)[0]
    det = load_predictor("detection", backend="onnxruntime-cpu")(frame, score_threshold=0.1)
    labels = load_predictor("segmentation", backend="onnxruntime-cpu")(frame).labels
    camera = Intrinsics(500.0, 500.0, 240.0, 180.0, 480, 360)
    rows = np.arange(360, dtype=np.float32)[:, None]
    depth = np.broadcast_to(5.0 + rows / 36.0, (360, 480)).astype(np.float32)
    raw = np.rint(depth * 1000).astype("<u2").tobytes()
    header = Header(frame_id="camera")
    info = CameraInfo(width=480, height=360)
    info.k = [500.0, 0.0, 240.0, 0.0, 500.0, 180.0, 0.0, 0.0, 1.0]

    tracker = ByteTracker()
    shift = [0]

    def track():  # the scene pans 2 px a frame: tracks continue
        shift[0] += 2
        tracker.update(det.boxes - [shift[0], 0, shift[0], 0], det.scores)

    sync = ApproximateSync(3, 10, 0.01, lambda *a: None)
    stamp = [0]

    def synchronise():
        stamp[0] += 33_000_000
        for i in (2, 1, 0):
            sync.add(i, stamp[0], i)

    kept = det.scores >= 0.5
    boxes = det.boxes[kept]

    def three_d():
        b = boxes_3d(boxes, depth, camera)
        messages.detections_3d_msg(header, b.centres, b.sizes, det.scores[kept],
                                   det.class_ids[kept])

    def points(stride):
        def run():
            p = labelled_points(labels, depth, camera, stride)
            messages.labelled_cloud_msg(header, p.xyz, p.labels)
        return run

    n_points = {s: len(labelled_points(labels, depth, camera, s).xyz) for s in (4, 1)}
    r = args.repeats
    figures = {
        "tracking (ByteTrack update)": timed(track, r),
        "synchroniser (3 messages)": timed(synchronise, r),
        "depth decode (16UC1 360x480)": timed(
            lambda: decode_depth("16UC1", 360, 480, 960, 0, raw), r),
        f"detections_3d ({int(kept.sum())} boxes)": timed(three_d, r),
        f"segmentation/points stride 4 ({n_points[4]} points)": timed(points(4), r),
        f"segmentation/points stride 1 ({n_points[1]} points)": timed(points(1), max(5, r // 5)),
        "camera_info passed on": timed(lambda: messages.camera_info_msg(header, info), r),
    }
    for name, ms in figures.items():
        print(f"{name:48s} {ms:8.3f} ms/frame")
    report = {"ms_per_frame_median": figures, "detections_to_tracker": int(len(det.scores)),
              "cpu": cpu_line(), "load_average": load_average(),
              "command": "python benchmarks/spatial_cost.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}  ({report['cpu']}; load {report['load_average']})")


if __name__ == "__main__":
    main()
