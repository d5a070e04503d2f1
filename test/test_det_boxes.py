"""Boxes derived from label maps: connected components with a minimum area."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_perception.evaluation.boxes import connected_components, derive_boxes

SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"
CAR, PED, BIKE, ROAD = 8, 9, 10, 3


def synthetic():
    lab = np.full((40, 60), ROAD, dtype=np.uint8)
    lab[2:10, 3:15] = CAR          # car A: 8 x 12 = 96 px
    lab[20:30, 40:58] = CAR        # car B: 10 x 18 = 180 px
    lab[12:14, 20:22] = CAR        # tiny car: 4 px (below min_area 10)
    lab[15:25, 5:9] = PED          # pedestrian 1: rows 15..24, cols 5..8 (40 px)
    lab[25:35, 9:13] = PED         # pedestrian 2 touches 1 only at a corner
    lab[30:38, 20:24] = BIKE       # bicyclist, L-shaped with a bar
    lab[36:38, 24:30] = BIKE
    return lab


def test_components_of_a_synthetic_map_are_exact():
    lab = synthetic()
    boxes, labels = derive_boxes(lab, (CAR, PED, BIKE), min_area=10, connectivity=4)
    got = sorted(zip(labels.tolist(), boxes.tolist()))
    assert got == [
        (0, [3.0, 2.0, 15.0, 10.0]),
        (0, [40.0, 20.0, 58.0, 30.0]),
        (1, [5.0, 15.0, 9.0, 25.0]),
        (1, [9.0, 25.0, 13.0, 35.0]),
        (2, [20.0, 30.0, 30.0, 38.0]),
    ]
    assert boxes.dtype == np.float32 and labels.dtype == np.int64


def test_eight_connectivity_merges_corner_neighbours():
    boxes, labels = derive_boxes(synthetic(), (PED,), min_area=10, connectivity=8)
    assert boxes.tolist() == [[5.0, 15.0, 13.0, 35.0]] and labels.tolist() == [0]


def test_min_area_and_class_order():
    lab = synthetic()
    boxes, labels = derive_boxes(lab, (BIKE, CAR), min_area=1, connectivity=4)
    assert labels.tolist() == [0, 1, 1, 1]  # bicyclist first, then three cars
    boxes, _ = derive_boxes(lab, (CAR,), min_area=100, connectivity=4)
    assert boxes.tolist() == [[40.0, 20.0, 58.0, 30.0]]  # 96 px car and 4 px car dropped
    none = derive_boxes(np.zeros((5, 5), np.uint8), (CAR,))
    assert none[0].shape == (0, 4) and none[1].shape == (0,)


def test_components_areas_and_u_shape():
    mask = np.zeros((6, 7), bool)
    mask[1:5, 1] = mask[1:5, 5] = True
    mask[4, 1:6] = True               # a U: the two arms join at the bottom row
    mask[0, 6] = True                 # a separate pixel
    comps = connected_components(mask, 4)
    assert comps.tolist() == [[6, 0, 7, 1, 1], [1, 1, 6, 5, 11]]  # raster order
    with pytest.raises(ValueError):
        connected_components(mask, 6)


def test_real_label_map_gives_boxes_inside_the_frame():
    lab = np.asarray(Image.open(SAMPLE / "valannot" / "0016E5_07959.png"))
    boxes, labels = derive_boxes(lab)
    assert len(boxes) > 0
    h, w = lab.shape
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    for (x1, y1, x2, y2), c in zip(boxes.astype(int), labels):
        assert (lab[y1:y2, x1:x2] == (CAR, PED, BIKE)[c]).sum() >= 100
