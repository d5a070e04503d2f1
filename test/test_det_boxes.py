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


# ------------------------------------------------------------- the previous implementation
# Run-length union-find, as the package computed components before OpenCV did it (kept
# as the reference the replacement must agree with on real CamVid labels).
def _row_runs(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) columns of the runs of True in a boolean row."""
    padded = np.concatenate(([False], row, [False]))
    change = np.flatnonzero(padded[1:] != padded[:-1])
    return change[0::2], change[1::2]

def _reference_components(mask: np.ndarray, connectivity: int = 8):
    """The hand-written union-find over horizontal runs that OpenCV replaced, kept as
    the reference: the same ``(N, 5)`` rows as ``connected_components``."""
    mask = np.asarray(mask, dtype=bool)
    reach = 1 if connectivity == 8 else 0
    parent: list[int] = []
    runs: list[tuple[int, int, int]] = []  # (row, start, end)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prev: list[int] = []  # run ids of the previous row, sorted by start
    for y in range(mask.shape[0]):
        starts, ends = _row_runs(mask[y])
        cur = []
        j = 0
        for s, e in zip(starts.tolist(), ends.tolist()):
            rid = len(runs)
            runs.append((y, s, e))
            parent.append(rid)
            # previous-row runs [ps, pe) touching [s - reach, e + reach)
            while j < len(prev) and runs[prev[j]][2] + reach <= s:
                j += 1
            t = j
            while t < len(prev) and runs[prev[t]][1] < e + reach:
                a, b = find(prev[t]), find(rid)
                if a != b:
                    parent[max(a, b)] = min(a, b)
                t += 1
            cur.append(rid)
        prev = cur
    if not runs:
        return np.zeros((0, 5), dtype=np.int64)
    roots = np.fromiter((find(i) for i in range(len(runs))), dtype=np.int64, count=len(runs))
    r = np.asarray(runs, dtype=np.int64)
    uniq, comp = np.unique(roots, return_inverse=True)  # roots ascend in raster order
    n = len(uniq)
    out = np.empty((n, 5), dtype=np.int64)
    out[:, 0] = np.full(n, np.iinfo(np.int64).max)
    out[:, 1] = np.full(n, np.iinfo(np.int64).max)
    out[:, 2:4] = -1
    np.minimum.at(out[:, 0], comp, r[:, 1])
    np.minimum.at(out[:, 1], comp, r[:, 0])
    np.maximum.at(out[:, 2], comp, r[:, 2])
    np.maximum.at(out[:, 3], comp, r[:, 0] + 1)
    out[:, 4] = np.bincount(comp, weights=r[:, 2] - r[:, 1], minlength=n).astype(np.int64)
    return out


def test_opencv_components_equal_the_previous_implementation_on_camvid_labels():
    """Every detection class of every bundled CamVid label (and up to 60 of the shared
    CamVid's, when present), 4- and 8-connected: the same boxes, areas and order."""
    paths = sorted((SAMPLE / "valannot").glob("*.png"))
    shared = SAMPLE.parents[2].parent / "shared" / "camvid" / "trainannot"
    paths += sorted(shared.glob("*.png"))[::6][:60]
    compared = 0
    for path in paths:
        lab = np.asarray(Image.open(path))
        for cid in (CAR, PED, BIKE, 5):  # 5: poles, thin and many
            for connectivity in (4, 8):
                new = connected_components(lab == cid, connectivity)
                old = _reference_components(lab == cid, connectivity)
                np.testing.assert_array_equal(new, old, err_msg=f"{path.name} {cid}")
                compared += len(old)
    assert compared > 500
