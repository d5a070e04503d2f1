"""Tracking quality and cost on CamVid sequences with known identities.

CamVid frames are 1 s apart, too far for frame-to-frame tracking, so sequences are made
from single frames with their ground truth: a window (320 x 400) pans across a frame
(CamVid val, or a list-file split such as a held-out sequence) at a constant speed, and
the frame's ground-truth objects (Car, Pedestrian, Bicyclist boxes derived from its label
image, the CamVid box rule) move with the window, each keeping its identity.  In the
``missed`` variant every 6th frame is blank (no object visible, none in the ground
truth): tracks must survive it.  The R-FCN (the shipped one, or ``--weights``, e.g. a run
that never saw the split's street) detects
(ONNX Runtime, CPU; detections >= 0.1 go to the tracker, as in the node) and
:class:`~fcn_perception.tracking.ByteTracker` tracks.  Scored with motmetrics (IoU >= 0.5
matches): MOTA, IDF1, ID switches, plus the tracker's own time per frame.

    .venv/bin/python benchmarks/tracking_eval.py [--frames 6] [--length 20]
        [--split val.txt | training/splits/camvid_0006R0.txt] [--weights RUN/model.safetensors]
        [--out docs/tracking_eval.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cpu_line, load_average  # noqa: E402

from fcn_perception.card import DEFAULT_WEIGHTS, sha256_of  # noqa: E402
from fcn_perception.evaluation.camvid import read_split  # noqa: E402

WINDOW = (320, 400)  # height, width
SPEEDS = {"pan 2 px/frame": (2, 0), "pan 6 px/frame": (6, 1), "pan 12 px/frame": (-12, 0)}


def ground_truth(label_path: Path):
    from PIL import Image

    from fcn_perception.evaluation.boxes import derive_boxes

    boxes, _ = derive_boxes(np.asarray(Image.open(label_path)))
    return boxes.astype(np.float64)


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def sequence(frame, gt, speed, length, missed):
    """Frames, ground-truth boxes and their identities of one panned sequence."""
    h, w = WINDOW
    dx, dy = speed
    x0 = 0 if dx >= 0 else frame.shape[1] - w - abs(dx) * (length - 1)
    y0 = 0 if dy >= 0 else frame.shape[0] - h
    out = []
    for k in range(length):
        x, y = x0 + dx * k, y0 + dy * k
        x = int(np.clip(x, 0, frame.shape[1] - w))
        y = int(np.clip(y, 0, frame.shape[0] - h))
        crop = np.ascontiguousarray(frame[y:y + h, x:x + w])
        boxes = gt - [x, y, x, y]
        clipped = np.clip(boxes, 0, [w, h, w, h])
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        seen = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
        visible = seen >= 0.5 * area
        if missed and k % 6 == 5:
            crop = np.full_like(crop, 128)
            visible[:] = False
        out.append((crop, clipped[visible], np.flatnonzero(visible)))
    return out


def run(args) -> dict:
    import motmetrics as mm

    from fcn_perception import load_predictor
    from fcn_perception.tracking import ByteTracker, TrackerConfig
    from fcn_perception.tracking.bytetrack import box_iou

    det = load_predictor("detection", backend="onnxruntime-cpu", weights=args.weights)
    pairs = sorted((s.image, s.label) for s in read_split(args.data, args.split))
    picked = []
    for path, label in pairs[:: max(1, len(pairs) // (args.frames * 4))]:
        gt = ground_truth(label)
        if len(gt) >= 2:
            picked.append((path, gt))
        if len(picked) == args.frames:
            break
    from PIL import Image

    rows = {}
    tracker_ms, detector_ms = [], []
    for variant in [*SPEEDS, *(f"{name}, missed frames" for name in SPEEDS)]:
        speed = SPEEDS[variant.split(",")[0]]
        accs, names = [], []
        for path, gt in picked:
            frame = np.asarray(Image.open(path).convert("RGB"))
            acc = mm.MOTAccumulator(auto_id=True)
            tracker = ByteTracker(TrackerConfig(high_threshold=0.5, low_threshold=0.1))
            for crop, gt_boxes, gt_ids in sequence(frame, gt, speed, args.length,
                                                   "missed" in variant):
                t0 = time.perf_counter()
                result = det(crop, score_threshold=0.1)
                t1 = time.perf_counter()
                ids = tracker.update(result.boxes, result.scores)
                tracker_ms.append((time.perf_counter() - t1) * 1e3)
                detector_ms.append((t1 - t0) * 1e3)
                keep = ids >= 0
                hyp = result.boxes[keep].astype(np.float64)
                # motmetrics 1.4's iou_matrix calls np.asfarray (gone in NumPy 2): the same
                # distance (1 - IoU, NaN beyond 0.5) from the tracker's IoU
                dist = 1.0 - box_iou(gt_boxes, hyp)
                dist[dist > 0.5] = np.nan
                acc.update(list(gt_ids), list(ids[keep]), dist)
            accs.append(acc)
            names.append(path.stem)
        mh = mm.metrics.create()
        summary = mh.compute_many(accs, names=names, generate_overall=True, metrics=[
            "mota", "idf1", "num_switches", "num_false_positives", "num_misses",
            "num_objects", "num_unique_objects", "mostly_tracked", "precision", "recall"])
        overall = summary.loc["OVERALL"]
        rows[variant] = {k: (float(v) if k in ("mota", "idf1", "precision", "recall")
                             else int(v)) for k, v in overall.items()}
        r = rows[variant]
        print(f"{variant:32s} MOTA {r['mota']:.3f}  IDF1 {r['idf1']:.3f}  ID switches "
              f"{r['num_switches']}  objects {r['num_unique_objects']}  recall "
              f"{r['recall']:.3f}")
    t = np.asarray(tracker_ms)
    d = np.asarray(detector_ms)
    cost = {"tracker_ms_mean": float(t.mean()), "tracker_ms_p95": float(np.percentile(t, 95)),
            "detector_ms_mean": float(d.mean()), "frames": int(t.size)}
    print(f"tracker {cost['tracker_ms_mean']:.3f} ms/frame (p95 {cost['tracker_ms_p95']:.3f}),"
          f" detector {cost['detector_ms_mean']:.1f} ms/frame, {cost['frames']} frames")
    weights = Path(args.weights) if args.weights else DEFAULT_WEIGHTS["detection"]
    return {"protocol": (f"{len(picked)} CamVid frames of {args.split} "
                         f"({', '.join(p.stem for p, _ in picked)})"
                         f", a {WINDOW[1]}x{WINDOW[0]} window panned {args.length} frames per "
                         "sequence; ground truth: the frame's Car/Pedestrian/Bicyclist boxes "
                         "(CamVid box rule) moved with the window, kept while >= 50% visible; "
                         "'missed frames': every 6th frame blank; R-FCN (ONNX Runtime CPU), "
                         "detections >= 0.1 to ByteTrack (high 0.5); motmetrics, IoU >= 0.5"),
            "weights": _shown(weights), "weights_sha256": sha256_of(weights),
            "sequences": rows, "cost": cost, "motmetrics": mm.__version__,
            "cpu": cpu_line(), "load_average": load_average(),
            "command": "python benchmarks/tracking_eval.py " + " ".join(sys.argv[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tracking_eval.json")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "camvid")
    parser.add_argument("--split", default="val.txt",
                        help="frames: a CamVid list file, in --data (val.txt) or a path "
                             "(training/splits/camvid_0006R0.txt)")
    parser.add_argument("--weights", default=None,
                        help="detector weights (default: the shipped one); e.g. a run held "
                             "out of --split's sequence, so the detector has not seen it")
    args = parser.parse_args()
    report = run(args)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}  ({report['cpu']}; load {report['load_average']})")


if __name__ == "__main__":
    main()
