"""Tracking, depth and camera_info over real DDS: rclpy publishers feed the nodes a
CamVid frame with a registered depth image and camera_info, and a client reads the
track ids, ``detections_3d``, ``segmentation/points`` and the passed-on camera_info."""
from __future__ import annotations

import numpy as np
import pytest
from ros_harness import (  # noqa: F401  (fixtures)
    as_array,
    frames,
    harness,
    image_msg,
    make_node,
    seg_params,
    wait_outputs_matched,
    weights,
)

from fcn_perception.ros import nodes
from fcn_perception.tracking.bytetrack import box_iou

rclpy = pytest.importorskip("rclpy")
vision = pytest.importorskip("vision_msgs.msg")
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

K = (500.0, 0.0, 240.0, 0.0, 500.0, 180.0, 0.0, 0.0, 1.0)


def camera_info(stamp: int, width: int = 480, height: int = 360) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.k = list(K)
    msg.p = [500.0, 0.0, 240.0, 0.0, 0.0, 500.0, 180.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.header.frame_id = "camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 1000 * stamp
    return msg


def depth_msg(metres: np.ndarray, stamp: int) -> Image:
    pixels = np.ascontiguousarray(metres, "<f4")
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding="32FC1",
                step=pixels.shape[1] * 4)
    msg.data = pixels.tobytes()
    msg.header.frame_id = "camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 1000 * stamp
    return msg


def cloud_points(msg: PointCloud2) -> np.ndarray:
    fields = {f.name: f.offset for f in msg.fields}
    dtype = np.dtype({"names": ["x", "y", "z", "label"], "formats": ["<f4", "<f4", "<f4", "u1"],
                      "offsets": [fields["x"], fields["y"], fields["z"], fields["label"]],
                      "itemsize": msg.point_step})
    return np.frombuffer(bytes(msg.data), dtype, count=msg.width * msg.height)


def boxes_of(msg) -> tuple[np.ndarray, list[str]]:
    boxes = [(d.bbox.center.position.x - d.bbox.size_x / 2,
              d.bbox.center.position.y - d.bbox.size_y / 2,
              d.bbox.center.position.x + d.bbox.size_x / 2,
              d.bbox.center.position.y + d.bbox.size_y / 2) for d in msg.detections]
    return np.asarray(boxes, np.float64).reshape(-1, 4), [d.id for d in msg.detections]


class Camera:
    """Publishers of a colour + depth + camera_info camera."""

    def __init__(self, harness):
        self.harness = harness
        self.image = harness.publisher("image", Image)
        self.depth = harness.publisher("depth", Image)
        self.info = harness.publisher("camera_info", CameraInfo)
        for pub in (self.image, self.depth, self.info):
            harness.wait_matched(pub)

    def send(self, rgb, depth, stamp, order=("depth", "info", "image")):
        msgs = {"image": image_msg(rgb, "rgb8", stamp), "depth": depth_msg(depth, stamp),
                "info": camera_info(stamp, rgb.shape[1], rgb.shape[0])}
        for name in order:
            getattr(self, name).publish(msgs[name])


def shifted(frame: np.ndarray, dx: int) -> np.ndarray:
    """The scene moved ``dx`` px to the left (right edge repeated)."""
    return np.pad(frame[:, dx:], ((0, 0), (0, dx), (0, 0)), mode="edge")


def test_tracked_detections_in_3d_from_a_planar_depth(harness, frames):  # noqa: F811
    """The shipped R-FCN on a CamVid frame panned 2 px a frame, depth 10 m everywhere,
    fx = fy = 500, cx = 240, cy = 180: matched detections keep their id (also across a
    frame with no detection), every 3D centre is where the box and the plane put it,
    and camera_info comes back with the colour header."""
    node = make_node(nodes.DetectionNode, harness, {
        "backend": "torch-cpu", "spatial_inputs": "depth", "sync_slop": 0.01,
        "qos_reliability": "best_effort"})
    for topic, cls in (("detections", vision.Detection2DArray),
                       ("detections_3d", vision.Detection3DArray),
                       ("detections/camera_info", CameraInfo)):
        harness.subscribe(topic, cls)
    cam = Camera(harness)
    wait_outputs_matched(harness, node, {"detections", "detections_3d", "camera_info"})
    depth = np.full((360, 480), 10.0, np.float32)
    sequence = [shifted(frames[0], 2 * k) for k in range(10)]
    sequence += [np.full_like(frames[0], 128), sequence[-1]]  # a blank frame, then back
    for stamp, rgb in enumerate(sequence, start=1):
        cam.send(rgb, depth, stamp)
        harness.message_with_stamp("detections_3d", stamp)  # one frame at a time

    kept = matched = 0
    previous = None
    for stamp in range(1, 11):
        boxes, ids = boxes_of(harness.message_with_stamp("detections", stamp))
        assert all(ids) and len(set(ids)) == len(ids)  # every detection has its own id
        if previous is not None and len(boxes) and len(previous[0]):
            iou = box_iou(previous[0] - [2, 0, 2, 0], boxes)
            for i, j in zip(*np.nonzero(iou >= 0.5)):
                if iou[i].argmax() == j and iou[:, j].argmax() == i:
                    matched += 1
                    kept += previous[1][i] == ids[j]
        previous = (boxes, ids)
    assert matched >= 9 and kept / matched >= 0.9, (kept, matched)
    # the blank frame: nothing; the next: the same objects under the same ids
    assert boxes_of(harness.message_with_stamp("detections", 11))[1] == []
    boxes, ids = boxes_of(harness.message_with_stamp("detections", 12))
    same = box_iou(previous[0], boxes)
    pairs = [(i, j) for i, j in zip(*np.nonzero(same >= 0.7))]
    assert pairs and sum(previous[1][i] == ids[j] for i, j in pairs) / len(pairs) >= 0.9

    for stamp in range(1, 13):
        msg2d = harness.message_with_stamp("detections", stamp)
        msg3d = harness.message_with_stamp("detections_3d", stamp)
        assert (msg3d.header.stamp.sec, msg3d.header.frame_id) == (stamp, "camera")
        assert [d.id for d in msg3d.detections] == [d.id for d in msg2d.detections]
        for d2, d3 in zip(msg2d.detections, msg3d.detections):
            u = d2.bbox.center.position.x
            c = d3.bbox.center.position
            assert c.z == pytest.approx(10.0, rel=0.05)
            assert c.x == pytest.approx((u - 240) * 10 / 500, rel=0.05, abs=1e-9)
            assert d3.bbox.size.x == pytest.approx(d2.bbox.size_x * 10 / 500, rel=0.05)
            assert [r.hypothesis.class_id for r in d3.results] == \
                [r.hypothesis.class_id for r in d2.results]
    assert sum(len(harness.message_with_stamp("detections_3d", s).detections)
               for s in range(1, 11)) >= 10
    info = harness.message_with_stamp("detections/camera_info", 3)
    assert info.header.frame_id == "camera" and tuple(info.k) == K


def test_labelled_points_and_the_synchroniser_over_dds(harness, frames):  # noqa: F811
    """segmentation/points from a tilted depth plane: each point's label is the label
    image's at the pixel it projects to.  Depth and camera_info sent before or after the
    image are paired by stamp; a frame whose depth never comes gets no output."""
    node = make_node(nodes.SegmentationNode, harness, {  # the shipped FCN-8s
        "backend": "torch-cpu", "spatial_inputs": "depth", "points_stride": 3,
        "sync_slop": 0.001, "qos_reliability": "best_effort"})
    harness.subscribe("segmentation/labels", Image)
    harness.subscribe("segmentation/points", PointCloud2)
    harness.subscribe("segmentation/camera_info", CameraInfo)
    cam = Camera(harness)
    wait_outputs_matched(harness, node, {"labels", "points", "camera_info"})
    rows = np.arange(360, dtype=np.float32)[:, None]
    depth = np.broadcast_to(5.0 + rows / 36.0, (360, 480)).copy()  # 5 m (top) to 15 m
    depth[::7, ::5] = 0.0  # invalid pixels
    rgb = frames[1]
    # one frame at a time (the worker keeps only the newest waiting frame)
    cam.send(rgb, depth, 1, order=("image", "depth", "info"))
    harness.message_with_stamp("segmentation/points", 1)
    cam.send(rgb, depth, 2, order=("info", "image", "depth"))
    harness.message_with_stamp("segmentation/points", 2)
    cam.image.publish(image_msg(rgb, "rgb8", 3))  # no depth for this one
    cam.info.publish(camera_info(3))
    cam.send(rgb, depth, 4)
    for stamp in (1, 2, 4):
        labels = as_array(harness.message_with_stamp("segmentation/labels", stamp))
        cloud = harness.message_with_stamp("segmentation/points", stamp)
        assert cloud.header.frame_id == "camera" and cloud.is_dense
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "label"]
        pts = cloud_points(cloud)
        sampled = np.isfinite(np.where(depth > 0, depth, np.nan)[1::3, 1::3]).sum()
        assert len(pts) == sampled
        u = np.rint(pts["x"] * 500 / pts["z"] + 240).astype(int)
        v = np.rint(pts["y"] * 500 / pts["z"] + 180).astype(int)
        np.testing.assert_allclose(pts["z"], depth[v, u], rtol=1e-5)
        np.testing.assert_array_equal(pts["label"], labels[v, u])
        assert len(np.unique(pts["label"])) >= 4  # road, sky, building, ...
        harness.message_with_stamp("segmentation/camera_info", stamp)
    assert 3 not in harness.stamps("segmentation/labels")
    assert node._input.spatial.sync.waiting()[0] == 1  # frame 3 still waits for depth


def test_spatial_inputs_refused_with_several_cameras(harness, weights):  # noqa: F811
    node = make_node(nodes.SegmentationNode, harness, seg_params(
        weights, spatial_inputs="depth", image_topics=["/a/image", "/b/image"]))
    assert node._state_machine.current_state[1] == "unconfigured"
    assert node._input is None
    assert not harness.client.get_subscriptions_info_by_topic("/depth")
