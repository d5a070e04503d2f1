"""Detection data: boxes derived from label maps (CamVid), COCO JSON, transforms and batching."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_perception.errors import DatasetError
from fcn_perception.training.det_data import (
    DetectionTransform,
    LabelMapBoxes,
    collate,
    open_detection_split,
)

SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"


def test_camvid_boxes_follow_the_rule():
    ds = open_detection_split(SAMPLE, "val.txt", limit=3)
    assert isinstance(ds, LabelMapBoxes) and len(ds) == 3
    assert ds.classes == ("Car", "Pedestrian", "Bicyclist") and ds.label_ids == [8, 9, 10]
    assert ds.rule["min_area"] == 100 and ds.palette[0] == [64, 0, 128]
    image, boxes, labels = ds[0]
    assert image.shape == (360, 480, 3) and len(boxes) == len(labels) > 0
    with_sign = open_detection_split(SAMPLE, "val.txt", ["Car", "SignSymbol"], limit=1)
    assert with_sign.label_ids == [8, 6]
    with pytest.raises(DatasetError, match="not classes"):
        open_detection_split(SAMPLE, "val.txt", ["Unicorn"], limit=1)


def _coco(tmp_path):
    for name, size in (("a.png", (40, 30)), ("b.png", (50, 20))):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(tmp_path / name)
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 3, "file_name": "b.png", "width": 50, "height": 20}],
        "categories": [{"id": 5, "name": "truck"}, {"id": 2, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 4, 4], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 2, "bbox": [0, 0, 9, 9], "iscrowd": 1},
            {"id": 4, "image_id": 3, "category_id": 5, "bbox": [5, 5, 0, 3], "iscrowd": 0},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))


def test_coco_json(tmp_path):
    _coco(tmp_path)
    ds = open_detection_split(tmp_path, "ann.json")
    assert ds.classes == ("person", "truck")  # category id order
    assert len(ds) == 2
    image, boxes, labels = ds[1]  # image id 7 (images sorted by id)
    assert image.shape == (30, 40, 3)
    assert sorted(zip(labels.tolist(), boxes.tolist())) == [
        (0, [0.0, 0.0, 4.0, 4.0]), (1, [1.0, 2.0, 11.0, 7.0])]  # crowd box skipped
    assert len(ds[0][1]) == 0  # the zero-width box is dropped
    only = open_detection_split(tmp_path, "ann.json", ["truck"])
    assert only.classes == ("truck",) and only[1][2].tolist() == [0]
    with pytest.raises(DatasetError, match="no categories named"):
        open_detection_split(tmp_path, "ann.json", ["bus"])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DatasetError, match="not a COCO"):
        open_detection_split(tmp_path, "bad.json")


def test_flip_moves_boxes_and_collate_pads():
    image = np.zeros((20, 30, 3), np.uint8)
    boxes = np.array([[2.0, 3.0, 10.0, 8.0]], np.float32)
    torch.manual_seed(0)
    flips = set()
    t = DetectionTransform(True, (0, 0, 0), (1, 1, 1))
    for _ in range(20):
        _, tg = t(image, boxes, np.array([1]))
        flips.add(tuple(tg["boxes"][0].tolist()))
    assert flips == {(2.0, 3.0, 10.0, 8.0), (20.0, 3.0, 28.0, 8.0)}
    ev = DetectionTransform(False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    a = ev(image, boxes, np.array([1]))
    b = ev(np.zeros((25, 10, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert float(a[0].min()) == -1.0
    images, targets, sizes = collate([a, b])
    assert images.shape == (2, 3, 25, 30) and sizes == [(20, 30), (25, 10)]
    assert float(images[1, :, :, 10:].abs().max()) == 0.0 and targets[1]["boxes"].shape == (0, 4)


def test_scale_jitter_resizes_frame_and_boxes_together():
    """A bright square with its box: after the random resize the box still frames it."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[40:80, 60:100] = 255
    boxes = np.array([[60.0, 40.0, 100.0, 80.0]], np.float32)
    torch.manual_seed(0)
    t = DetectionTransform(True, (0, 0, 0), (1, 1, 1), jitter=0.0, scale_range=(0.5, 1.5))
    heights = []
    for _ in range(12):
        x, tg = t(image, boxes, np.array([0]))
        h, w = x.shape[-2:]
        s = h / 120
        assert w == pytest.approx(160 * s, abs=1) and 60 <= h <= 180
        x1, y1, x2, y2 = tg["boxes"][0].tolist()
        assert (y2 - y1) == pytest.approx(40 * s, abs=0.6)
        ys, xs = np.nonzero(x[0].numpy() > 0.5)
        assert ys.min() == pytest.approx(y1, abs=1.5) and ys.max() + 1 == pytest.approx(y2, abs=1.5)
        assert min(xs.min(), w - xs.max() - 1) == pytest.approx(min(x1, w - x2), abs=1.5)
        heights.append(h)
    assert len(set(heights)) > 6  # a factor drawn per frame, both ways of 1
    assert min(heights) < 100 and max(heights) > 140
    same = DetectionTransform(False, (0, 0, 0), (1, 1, 1), scale_range=(0.5, 1.5))
    assert same(image, boxes, np.array([0]))[0].shape == (3, 120, 160)  # evaluation: native
    with pytest.raises(ValueError, match="scale_range"):
        DetectionTransform(True, (0, 0, 0), (1, 1, 1), scale_range=(1.2, 0.8))


def test_peer_keeps_the_input_size():
    """The Faster R-CNN peer sees the pixels it is given (native or jittered), no resize."""
    from fcn_perception.training.fasterrcnn_peer import build_fasterrcnn_peer

    model = build_fasterrcnn_peer(3).eval()
    for h, w in ((200, 296), (360, 480), (450, 600)):
        batch, _ = model.transform([torch.rand(3, h, w)])
        assert batch.image_sizes == [(h, w)]
