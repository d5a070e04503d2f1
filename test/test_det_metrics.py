"""mAP: a hand-worked example, edge cases, and agreement with pycocotools."""
import contextlib
import io

import numpy as np
import pytest

from fcn_perception.evaluation.detection import DetectionEvaluator, box_iou
from fcn_perception.evaluation.plots import plot_pr_curves


def test_hand_worked_example():
    # One class, one image, two ground-truth boxes. Detections by score:
    #   0.9 on box A (IoU 1)     -> TP, precision 1/1, recall 1/2
    #   0.8 off everything       -> FP, precision 1/2, recall 1/2
    #   0.7 on box B (IoU 0.81)  -> TP, precision 2/3, recall 2/2
    # Monotone precision: 1 for recall <= 0.5, 2/3 above.  101 recall points:
    # 0.00..0.50 (51 points) read 1, 0.51..1.00 (50 points) read 2/3:
    # AP50 = (51 * 1 + 50 * 2/3) / 101 = 0.834983...
    # At IoU >= 0.85 detection 3 becomes an FP: precision 1 up to recall 0.5, nothing
    # beyond, AP = 51/101 for thresholds 0.85, 0.90, 0.95; 0.834983 for the other 7.
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    det = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 29]], float)
    assert box_iou(det[2:], gt[1:])[0, 0] == pytest.approx(0.9)
    det[2] = [20, 20, 30, 28.1]  # IoU 0.81
    ev = DetectionEvaluator(["thing"])
    ev.add(det, [0.9, 0.8, 0.7], [0, 0, 0], gt, [0, 0])
    s = ev.summary()
    ap50 = (51 + 50 * 2 / 3) / 101
    assert s["map50"] == pytest.approx(ap50, abs=1e-12)
    assert s["per_class_ap"] == {"thing": pytest.approx(ap50, abs=1e-12)}
    assert s["map"] == pytest.approx((7 * ap50 + 3 * 51 / 101) / 10, abs=1e-12)


def test_duplicates_are_false_positives_and_classes_do_not_mix():
    gt = np.array([[0, 0, 10, 10]], float)
    ev = DetectionEvaluator(["a", "b"])
    # a duplicate of the same box (FP after the first match) and a wrong-class box
    ev.add(np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float),
           [0.9, 0.8, 0.95], [0, 0, 1], gt, [0])
    s = ev.summary()
    # b has no ground truth: left out (pycocotools divides by tp + fp + eps: 1 - 1e-16)
    assert s["per_class_ap"] == {"a": pytest.approx(1.0, abs=1e-12), "b": None}
    assert s["map50"] == pytest.approx(1.0, abs=1e-12) and s["num_gt"] == {"a": 1, "b": 0}


def test_perfect_and_empty():
    gt = np.array([[0, 0, 10, 10], [5, 5, 40, 30]], float)
    ev = DetectionEvaluator(["a"])
    ev.add(gt, [0.5, 0.6], [0, 0], gt, [0, 0])
    assert ev.summary()["map"] == pytest.approx(1.0, abs=1e-12)
    ev = DetectionEvaluator(["a"])
    ev.add(np.zeros((0, 4)), [], [], gt, [0, 0])
    assert ev.summary()["map50"] == 0.0


def test_agrees_with_pycocotools(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    ev = DetectionEvaluator(["a", "b", "c"])
    images, anns, dets = [], [], []
    for i in range(40):
        images.append({"id": i + 1, "width": 500, "height": 400})
        gb, gl = [], []
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 400), rng.uniform(0, 300)
            w, h = rng.uniform(20, 100, 2)
            c = int(rng.integers(0, 3))
            gb.append([x, y, x + w, y + h])
            gl.append(c)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        db, ds, dl = [], [], []
        for _ in range(rng.integers(0, 12)):
            if gb and rng.random() < 0.6:
                j = rng.integers(len(gb))
                b = np.array(gb[j]) + rng.normal(0, 8, 4)
                b[2:] = np.maximum(b[2:], b[:2] + 2)
                c = gl[j] if rng.random() < 0.8 else int(rng.integers(0, 3))
            else:
                x, y = rng.uniform(0, 400), rng.uniform(0, 300)
                w, h = rng.uniform(20, 100, 2)
                b, c = np.array([x, y, x + w, y + h]), int(rng.integers(0, 3))
            s = float(rng.random())
            db.append(b)
            ds.append(s)
            dl.append(c)
            dets.append({"image_id": i + 1, "category_id": c + 1, "score": s,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
        ev.add(np.array(db).reshape(-1, 4), ds, dl, np.array(gb).reshape(-1, 4), gl)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": k + 1, "name": n} for k, n in enumerate("abc")]}
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(dets), "bbox")
        e.params.areaRng, e.params.areaRngLbl, e.params.maxDets = [[0, 1e10]], ["all"], [100]
        e.evaluate()
        e.accumulate()
    p = e.eval["precision"][:, :, :, 0, 0]  # (T, R, K)
    s = ev.summary()
    assert s["map"] == pytest.approx(p.mean(), abs=1e-9)
    assert s["map50"] == pytest.approx(p[0].mean(), abs=1e-9)
    for k, name in enumerate("abc"):
        assert s["per_class_ap"][name] == pytest.approx(p[0, :, k].mean(), abs=1e-9)
    plot_pr_curves(ev, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").stat().st_size > 1000


# ---------------------------------------------------------------- the previous evaluator
# The hand-written COCO matching this package used before pycocotools did it (kept here
# as the reference the replacement must agree with, on real detections).
def _reference_match(det_boxes, gt_boxes, thresholds):
    tp = np.zeros((len(thresholds), len(det_boxes)), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(det_boxes, gt_boxes)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for d in range(len(det_boxes)):
            cand = np.where(taken, -1.0, iou[d])
            g = int(np.argmax(cand))
            if cand[g] >= t - 1e-10:
                taken[g] = True
                tp[ti, d] = True
    return tp


def _reference_ap(images, k: int, max_dets: int = 100) -> np.ndarray:
    """``(K, T)`` AP (NaN without ground truth) of ``[(det boxes, scores, labels, gt
    boxes, gt labels), ...]``, the previous implementation."""
    from fcn_perception.evaluation.detection import IOU_THRESHOLDS, RECALL_POINTS

    scores = [[] for _ in range(k)]
    tps = [[] for _ in range(k)]
    num_gt = np.zeros(k, np.int64)
    for db, ds, dl, gb, gl in images:
        for c in range(k):
            g = gb[gl == c]
            num_gt[c] += len(g)
            order = np.argsort(-ds[dl == c], kind="mergesort")[:max_dets]
            scores[c].append(ds[dl == c][order])
            tps[c].append(_reference_match(db[dl == c][order], g, IOU_THRESHOLDS))
    ap = np.full((k, len(IOU_THRESHOLDS)), np.nan)
    for c in range(k):
        if num_gt[c] == 0:
            continue
        s = np.concatenate(scores[c])
        order = np.argsort(-s, kind="mergesort")
        for ti in range(len(IOU_THRESHOLDS)):
            tp = np.concatenate([t[ti] for t in tps[c]])[order].astype(np.float64)
            ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
            recall = ctp / num_gt[c]
            precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
            if len(precision) == 0:
                ap[c, ti] = 0.0
                continue
            p = np.maximum.accumulate(precision[::-1])[::-1]
            idx = np.searchsorted(recall, RECALL_POINTS, side="left")
            ap[c, ti] = np.where(idx < len(p), p[np.minimum(idx, len(p) - 1)], 0.0).mean()
    return ap


def test_pycocotools_evaluator_agrees_with_the_previous_one_on_real_detections():
    """The shipped R-FCN on the bundled CamVid frames, ground truth by the card's box
    rule: pycocotools' APs equal the hand-written evaluator's, class by class."""
    from pathlib import Path

    from PIL import Image

    from fcn_perception import load_predictor
    from fcn_perception.evaluation.boxes import BoxRule

    det = load_predictor("detection", backend="onnxruntime-cpu")
    rule = BoxRule.from_card(det.card)
    sample = Path(__file__).resolve().parents[1] / "fcn_perception" / "data" / "camvid_sample"
    ev = DetectionEvaluator(det.classes)
    images = []
    for line in (sample / "val.txt").read_text().split("\n"):
        if not line.strip():
            continue
        image_rel, label_rel = line.split()
        frame = np.asarray(Image.open(sample / image_rel).convert("RGB"))
        label = np.asarray(Image.open(sample / label_rel))
        r = det(frame, score_threshold=0.0)
        gb, gl = rule.derive(label)
        ev.add(r.boxes, r.scores, r.class_ids, gb, gl)
        images.append((r.boxes.astype(np.float64), r.scores.astype(np.float64),
                       r.class_ids, gb.astype(np.float64), gl))
    assert len(images) == 10 and sum(len(i[0]) for i in images) > 50
    ref = _reference_ap(images, len(det.classes))
    s = ev.summary()
    assert s["map50"] == pytest.approx(np.nanmean(ref[:, 0]), abs=1e-12)
    assert s["map"] == pytest.approx(np.nanmean(ref.mean(axis=1)), abs=1e-12)
    for c, name in enumerate(det.classes):
        assert s["per_class_ap"][name] == pytest.approx(ref[c, 0], abs=1e-12)
        assert s["per_class_ap_coco"][name] == pytest.approx(ref[c].mean(), abs=1e-12)
    assert 0.3 < s["map50"] < 1.0
