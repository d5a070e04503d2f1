"""Library replacements that need real data to show they agree with what they replaced
(the others sit with their modules' tests: MCAP CRCs in test_mcap_crc.py, OpenCV
connected components in test_det_boxes.py, pycocotools AP in test_det_metrics.py, the
weight average in test_ema.py)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_perception.ros.filtering import nms_per_class

SAMPLE = Path(__file__).resolve().parents[1] / "fcn_perception" / "data" / "camvid_sample"


# The greedy NumPy NMS the detection node used before OpenCV's (the reference).
def _reference_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                  iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy per-class NMS, in descending score order."""
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes, np.float64)
    # offset each class far apart so one pass never suppresses across classes
    offset = (boxes.max() + 1.0) * np.asarray(class_ids, np.float64)[:, None]
    b = boxes + offset
    x1, y1, x2, y2 = b.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


@pytest.fixture(scope="module")
def detections():
    """The shipped R-FCN's detections (score threshold 0: every box the model keeps) on
    the bundled CamVid frames."""
    from fcn_perception import load_predictor

    det = load_predictor("detection", backend="onnxruntime-cpu")
    frames = [np.asarray(Image.open(p).convert("RGB"))
              for p in sorted((SAMPLE / "val").glob("*.png"))]
    return [det(f, score_threshold=0.0) for f in frames]


@pytest.mark.parametrize("threshold", [0.05, 0.1, 0.2, 0.29, 0.5])
def test_opencv_nms_keeps_what_the_previous_nms_kept(detections, threshold):
    suppressed = 0
    for r in detections:
        for ids in (r.class_ids, np.zeros_like(r.class_ids)):  # per class and across
            new = nms_per_class(r.boxes, r.scores, ids, threshold)
            old = _reference_nms(r.boxes, r.scores, ids, threshold)
            np.testing.assert_array_equal(new, old)
            suppressed += len(r.scores) - len(old)
    assert sum(len(r.scores) for r in detections) > 50
    if threshold < 0.3:
        assert suppressed > 0  # the thresholds below the model's own NMS suppress boxes
