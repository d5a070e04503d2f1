"""Depth, intrinsics, 3D boxes, labelled points and the approximate time synchroniser
(no ROS)."""
from __future__ import annotations

import numpy as np
import pytest

from fcn_perception.errors import ConversionError, ImageTooLargeError
from fcn_perception.spatial.depth import Intrinsics, decode_depth
from fcn_perception.spatial.project import boxes_3d, labelled_points
from fcn_perception.spatial.sync import ApproximateSync

CAMERA = Intrinsics(500.0, 500.0, 240.0, 180.0, 480, 360)


# --------------------------------------------------------------------------- depth
def test_decode_depth_units_invalid_values_padding_and_endianness():
    mm = np.array([[0, 1500, 2000], [65535, 10, 3000]], "<u2")
    out = decode_depth("16UC1", 2, 3, 8, 0, np.pad(mm.view(np.uint8), ((0, 0), (0, 2))).tobytes())
    np.testing.assert_array_equal(np.isnan(out), [[True, False, False], [False] * 3])
    np.testing.assert_allclose(out[~np.isnan(out)], [1.5, 2.0, 65.535, 0.01, 3.0], rtol=1e-6)
    big = decode_depth("16UC1", 2, 3, 6, 1, mm.astype(">u2").tobytes())
    np.testing.assert_array_equal(big, out)
    metres = np.array([[1.25, np.nan, -1.0, np.inf]], "<f4")
    got = decode_depth("32FC1", 1, 4, 16, 0, metres.tobytes())
    assert got[0, 0] == 1.25 and np.isnan(got[0, 1:]).all()


@pytest.mark.parametrize("args, match", [
    (("rgb8", 2, 2, 6, 0, bytes(12)), "depth encoding"),
    (("32FC1", 2, 2, 4, 0, bytes(16)), "shorter than one row"),
    (("32FC1", 2, 2, 8, 0, bytes(15)), "fewer than"),
    (("16UC1", 0, 2, 4, 0, b""), "empty"),
])
def test_bad_depth_images_are_refused_with_a_reason(args, match):
    with pytest.raises(ConversionError, match=match):
        decode_depth(*args)


def test_depth_size_limit():
    with pytest.raises(ImageTooLargeError):
        decode_depth("16UC1", 100, 100, 200, 0, bytes(20000), max_pixels=5000)


def test_intrinsics_scale_per_axis_and_refuse_uncalibrated():
    half = CAMERA.scaled(240, 180)
    assert (half.fx, half.fy, half.cx, half.cy) == (250.0, 250.0, 119.75, 89.75)
    # the same ray from both: colour pixel (u, v) and its place in the half-size image
    u, v = 400.0, 100.0
    p = CAMERA.back_project(u, v, 4.0)
    q = half.back_project((u + 0.5) / 2 - 0.5, (v + 0.5) / 2 - 0.5, 4.0)
    np.testing.assert_allclose(p, q)
    with pytest.raises(ConversionError, match="calibrated"):
        Intrinsics.from_camera_info(np.zeros(9), 480, 360)
    k = [500, 0, 240, 0, 500, 180, 0, 0, 1]
    assert Intrinsics.from_camera_info(k, 0, 0, image_size=(360, 480)) == CAMERA


# --------------------------------------------------------------------------- 3D boxes
def test_boxes_3d_on_a_plane_at_ten_metres():
    depth = np.full((360, 480), 10.0, np.float32)
    boxes = np.array([[100, 50, 200, 150], [300.5, 200, 401, 330], [236, 170, 246, 190]])
    out = boxes_3d(boxes, depth, CAMERA)
    u = (boxes[:, 0] + boxes[:, 2]) / 2
    v = (boxes[:, 1] + boxes[:, 3]) / 2
    np.testing.assert_allclose(out.centres[:, 2], 10.0)
    np.testing.assert_allclose(out.centres[:, 0], (u - 240) * 10 / 500)
    np.testing.assert_allclose(out.centres[:, 1], (v - 180) * 10 / 500)
    np.testing.assert_allclose(out.sizes[:, :2], (boxes[:, 2:] - boxes[:, :2]) * 10 / 500)
    np.testing.assert_allclose(out.sizes[:, 2], 0.0)
    assert out.valid.all()


def test_boxes_3d_median_ignores_invalid_depth_and_background():
    """An object at 4 m in front of a wall at 9 m, with holes (0 -> NaN) in it: the
    median of the box's central region is the object's depth."""
    depth = np.full((360, 480), 9.0, np.float32)
    depth[100:200, 150:250] = 4.0
    depth[140:150, 160:240] = np.nan  # holes
    box = np.array([[140, 90, 260, 210]])  # 10 px of wall around the object
    out = boxes_3d(box, depth, CAMERA)
    assert out.centres[0, 2] == pytest.approx(4.0)
    whole = boxes_3d(box, depth, CAMERA, central_fraction=1.0)
    assert whole.centres[0, 2] == pytest.approx(4.0)  # the wall is the minority
    assert whole.sizes[0, 2] == pytest.approx(5.0)  # the 10-90% spread reaches the wall
    empty = np.full((360, 480), np.nan, np.float32)
    assert not boxes_3d(box, empty, CAMERA).valid[0]


def test_boxes_3d_with_a_smaller_registered_depth_image():
    """Depth at half resolution: a box maps to the same place in the view."""
    depth = np.full((180, 240), 9.0, np.float32)
    depth[50:100, 75:125] = 3.0  # full-res rows 100-200, columns 150-250
    out = boxes_3d(np.array([[150, 100, 250, 200], [0, 0, 100, 60]]), depth, CAMERA)
    np.testing.assert_allclose(out.centres[:, 2], [3.0, 9.0])
    np.testing.assert_allclose(out.centres[0, :2], [(200 - 240) * 3 / 500, (150 - 180) * 3 / 500])


# --------------------------------------------------------------------------- points
def _reproject(xyz: np.ndarray, camera: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    u = np.rint(xyz[:, 0] * camera.fx / xyz[:, 2] + camera.cx).astype(int)
    v = np.rint(xyz[:, 1] * camera.fy / xyz[:, 2] + camera.cy).astype(int)
    return u, v


@pytest.mark.parametrize("depth_hw", [(360, 480), (180, 240), (720, 960)])
def test_labelled_points_carry_the_label_at_their_pixel(depth_hw):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.repeat(rng.integers(0, 11, (36, 48)), 10, 0), 10, 1).astype(np.uint8)
    depth = rng.uniform(2.0, 30.0, depth_hw).astype(np.float32)
    depth[rng.random(depth_hw) < 0.2] = np.nan
    conf = rng.random((360, 480)).astype(np.float32)
    pts = labelled_points(labels, depth, CAMERA, stride=3, confidence=conf)
    rows, cols = np.arange(1, depth_hw[0], 3), np.arange(1, depth_hw[1], 3)
    assert len(pts.xyz) == np.isfinite(depth[np.ix_(rows, cols)]).sum() > 0
    u, v = _reproject(pts.xyz.astype(np.float64), CAMERA)
    inside = (u >= 0) & (u < 480) & (v >= 0) & (v < 360)
    assert inside.all()
    # label and confidence are those of the colour pixel each point projects to (up to
    # the rounding of a depth pixel between colour pixels in the mismatched sizes)
    agree = (labels[v, u] == pts.labels).mean()
    assert agree == 1.0 if depth_hw == (360, 480) else agree > 0.97
    np.testing.assert_array_equal(pts.labels, labels[pts.pixels[:, 0], pts.pixels[:, 1]])
    np.testing.assert_array_equal(pts.confidence, conf[pts.pixels[:, 0], pts.pixels[:, 1]])


def test_labelled_points_refuse_labels_of_another_size():
    with pytest.raises(ValueError, match="labels of shape"):
        labelled_points(np.zeros((10, 10), np.uint8), np.ones((10, 10), np.float32), CAMERA)


# --------------------------------------------------------------------------- sync
class Sets:
    def __init__(self):
        self.sets = []

    def __call__(self, *items):
        self.sets.append(items)


def test_sync_pairs_by_stamp_under_reordering():
    out = Sets()
    sync = ApproximateSync(3, queue_size=10, slop_s=0.01, callback=out)
    ms = 1_000_000
    rng = np.random.default_rng(0)
    events = [(i, k * 100 * ms + int(rng.integers(-4, 5)) * ms * (i > 0), f"{i}-{k}")
              for k in range(20) for i in range(3)]
    order = rng.permutation(len(events))  # every message within the queue's reach
    order = sorted(order, key=lambda j: events[j][1] // (100 * ms) * 10 + rng.random() * 15)
    for j in order:
        sync.add(*events[j])
    assert len(out.sets) == 20 and sync.emitted == 20
    for items in out.sets:
        ks = {s.split("-")[1] for s in items}
        assert len(ks) == 1 and [s[0] for s in items] == ["0", "1", "2"]
    assert sync.waiting() == [0, 0, 0]


def test_sync_drops_unpartnered_messages_from_full_queues():
    out = Sets()
    sync = ApproximateSync(2, queue_size=3, slop_s=0.005, callback=out)
    ms = 1_000_000
    for k in range(10):
        sync.add(0, k * 33 * ms, ("image", k))
        if k % 2 == 0:  # the depth camera skips every other frame
            sync.add(1, k * 33 * ms + 2 * ms, ("depth", k))
    assert [items[0][1] for items in out.sets] == [0, 2, 4, 6, 8]
    assert all(a[1] == b[1] for a, b in out.sets)
    assert sync.dropped[0] == 2 and sync.dropped[1] == 0  # frames 1, 3 fell out
    assert sync.waiting() == [3, 0]


def test_sync_slop_and_closest_partner():
    out = Sets()
    sync = ApproximateSync(2, queue_size=5, slop_s=0.01, callback=out)
    ms = 1_000_000
    sync.add(1, 100 * ms, "far")  # 20 ms away: never its partner
    sync.add(1, 117 * ms, "near")
    sync.add(1, 125 * ms, "nearest")
    assert sync.add(0, 120 * ms, "image")
    assert out.sets == [("image", "near")]  # 3 ms away, "nearest" 5 ms (sent later)
    assert sync.waiting() == [0, 2]
    assert not sync.add(0, 300 * ms, "late image")
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateSync(2, 0, 0.1, out)
