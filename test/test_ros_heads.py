"""The task heads and their per-frame step without a node or DDS: the shipped models on a
real CamVid frame, the messages built (sensor_msgs/vision_msgs classes are plain data),
and heads publishing through a :class:`~fcn_perception.ros.heads.HeadContext` whose
publishers keep what they are given (no rclpy.init)."""
from __future__ import annotations

import numpy as np
import pytest
from factories import camvid_frames

pytest.importorskip("sensor_msgs.msg")
pytest.importorskip("vision_msgs.msg")

from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from fcn_perception.imaging import drawing  # noqa: E402
from fcn_perception.ros.filtering import DetectionFilter  # noqa: E402
from fcn_perception.ros.frame_outputs import DetectionOutputs, SegmentationOutputs  # noqa: E402
from fcn_perception.ros.heads import DetectionHead, HeadContext, SegmentationHead  # noqa: E402
from fcn_perception.ros.params import node_specs  # noqa: E402
from fcn_perception.ros.spatial_input import Scene  # noqa: E402
from fcn_perception.ros.stats import FrameStats  # noqa: E402
from fcn_perception.spatial.depth import Intrinsics  # noqa: E402

SEG_KEYS = ("labels", "color", "overlay", "confidence")
PLANE_M = 8.0  # the synthetic depth: a wall this far in front of the camera


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return camvid_frames(1)[0]


@pytest.fixture(scope="module")
def seg():
    from fcn_perception import load_predictor

    return load_predictor("segmentation", backend="torch-cpu")


@pytest.fixture(scope="module")
def det():
    from fcn_perception import load_predictor

    return load_predictor("detection", backend="torch-cpu")


def header() -> Header:
    h = Header(frame_id="camera")
    h.stamp.sec, h.stamp.nanosec = 17, 42
    return h


def pixels(msg) -> np.ndarray:
    channels = {"mono8": 1, "rgb8": 3}[msg.encoding]
    flat = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    out = flat[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    return out[:, :, 0] if channels == 1 else out


def scene(hw: tuple[int, int]) -> Scene:
    """A calibrated camera looking at a wall PLANE_M away (depth at half resolution)."""
    h, w = hw
    info = CameraInfo(height=h, width=w, k=[400.0, 0, w / 2, 0, 400.0, h / 2, 0, 0, 1])
    depth = np.full((h // 2, w // 2), PLANE_M, np.float32)
    return Scene(Intrinsics(400.0, 400.0, w / 2, h / 2, w, h), depth, info)


# ------------------------------------------------------------------ the per-frame step
def test_segmentation_step_builds_the_wanted_outputs_only(seg, frame):
    result = seg(frame, confidence=True)
    lut = drawing.palette_lut(seg.palette, len(seg.classes))
    step = SegmentationOutputs(lut, overlay_alpha=0.3)
    only = step.messages(header(), frame, result, {"labels": True, "color": False})
    assert list(only) == ["labels"]
    np.testing.assert_array_equal(pixels(only["labels"]), result.labels)
    assert only["labels"].header == header()
    assert len(np.unique(result.labels)) >= 4  # a street scene, not one class

    out = step.messages(header(), frame, result, dict.fromkeys(SEG_KEYS, True))
    assert sorted(out) == sorted(SEG_KEYS)  # no spatial inputs: no camera_info, no points
    color = drawing.colorize(result.labels, lut)
    np.testing.assert_array_equal(pixels(out["color"]), color)
    np.testing.assert_array_equal(pixels(out["overlay"]), drawing.blend(frame, color, 0.3))
    np.testing.assert_array_equal(pixels(out["confidence"]),
                                  np.rint(result.confidence * 255).astype(np.uint8))
    assert all(m.header == header() for m in out.values())
    assert step.needs_confidence({"confidence": True})
    assert not step.needs_confidence({"points": True, "labels": True})
    assert SegmentationOutputs(lut, points_confidence=True).needs_confidence({"points": True})

    with pytest.raises(RuntimeError, match="no confidence"):
        step.messages(header(), frame, seg(frame), {"confidence": True})
    with pytest.raises(RuntimeError, match="labels of shape"):
        step.messages(header(), frame[:100], result, {"labels": True})


def test_detection_step_carries_the_filtered_detections(det, frame):
    result = det(frame)
    kept = DetectionFilter(score_threshold=0.5)(result)
    assert len(kept) >= 1  # the frame shows cars
    lut = drawing.palette_lut(det.palette, len(det.classes))
    step = DetectionOutputs(det.classes, lut)
    ids = [str(i + 1) for i in range(len(kept))]
    out = step.messages(header(), frame, kept, {"detections": True, "image": False}, ids=ids)
    assert list(out) == ["detections"]
    msgs = out["detections"].detections
    assert len(msgs) == len(kept) and [d.id for d in msgs] == ids
    assert [int(d.results[0].hypothesis.class_id) for d in msgs] == kept.class_ids.tolist()
    assert [d.results[0].hypothesis.score for d in msgs] == pytest.approx(kept.scores.tolist())
    centres = [(d.bbox.center.position.x, d.bbox.center.position.y) for d in msgs]
    want = np.column_stack([kept.boxes[:, [0, 2]].mean(1), kept.boxes[:, [1, 3]].mean(1)])
    np.testing.assert_allclose(centres, want, atol=1e-3)
    drawn = step.messages(header(), frame, kept, {"image": True})["image"]
    np.testing.assert_array_equal(pixels(drawn), drawing.draw_detections(
        frame, kept.boxes, kept.scores, kept.class_ids, det.classes, lut))


def test_spatial_outputs_from_a_scene(seg, det, frame):
    s = scene(frame.shape[:2])
    result = seg(frame, confidence=True)
    lut = drawing.palette_lut(seg.palette, len(seg.classes))
    out = SegmentationOutputs(lut, points_stride=4, points_confidence=True).messages(
        header(), frame, result, {"points": True, "camera_info": True}, s)
    assert sorted(out) == ["camera_info", "points"]
    assert out["camera_info"].header == header() and list(out["camera_info"].k) == list(s.info.k)
    cloud = out["points"]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "label", "confidence"]
    dtype = np.dtype({"names": ["z", "label"], "formats": ["<f4", "u1"], "offsets": [8, 12],
                      "itemsize": cloud.point_step})
    points = np.frombuffer(bytes(cloud.data), dtype)
    dh, dw = s.depth.shape
    assert len(points) == -(-dh // 4) * -(-dw // 4)  # every 4th depth pixel, all valid
    np.testing.assert_allclose(points["z"], PLANE_M)
    assert set(np.unique(points["label"])) <= set(np.unique(result.labels))
    # no depth (camera_info only): camera_info, no points
    flat = Scene(s.camera, None, s.info)
    assert list(SegmentationOutputs(lut).messages(
        header(), frame, result, {"points": True, "camera_info": True}, flat)) == ["camera_info"]

    kept = DetectionFilter(score_threshold=0.5)(det(frame))
    out = DetectionOutputs(det.classes, lut).messages(
        header(), frame, kept, {"detections_3d": True}, s)
    boxes = out["detections_3d"].detections
    assert len(boxes) == len(kept)
    assert [b.bbox.center.position.z for b in boxes] == pytest.approx([PLANE_M] * len(kept))


# ------------------------------------------------------------------ heads, no node
class KeptPublisher:
    """A publisher that keeps what it is given; ``subscribers`` is set by the test."""

    def __init__(self, msg_type, topic: str, qos) -> None:
        self.msg_type, self.topic_name, self.qos = msg_type, topic, qos
        self.sent: list = []
        self.subscribers = 0

    def publish(self, msg) -> None:
        assert isinstance(msg, self.msg_type)
        self.sent.append(msg)

    def get_subscription_count(self) -> int:
        return self.subscribers


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level):
        return lambda text, **_: self.lines.append((level, text))


def context(tasks: tuple[str, ...], predictors: dict, **values) -> HeadContext:
    specs = node_specs(tasks)
    made, destroyed = [], []

    def create(msg_type, topic, qos):
        made.append(KeptPublisher(msg_type, topic, qos))
        return made[-1]

    ctx = HeadContext(
        values={**{s.name: s.default for s in specs}, **values},
        create_publisher=create, destroy_publisher=destroyed.append,
        predictor_factory=lambda task, **options: predictors[task],
        stats=FrameStats(), logger=Log(), now=lambda: header().stamp,
        frame_sizes=lambda: [(360, 480)])
    ctx.made, ctx.destroyed = made, destroyed
    return ctx


def test_segmentation_head_publishes_what_is_subscribed(seg, frame):
    ctx = context(("segmentation",), {"segmentation": seg}, overlay_alpha=0.7)
    head = SegmentationHead(ctx)
    head.load()
    head.create_outputs()
    assert sorted(head.pubs) == sorted(SEG_KEYS)
    assert head.pubs["labels"].topic_name == "segmentation/labels"
    assert head.label_info_pub.topic_name == "label_info"
    head.publish_label_info()
    names = [c.class_name for c in head.label_info_pub.sent[0].class_map]
    assert names == list(seg.classes)
    assert head.listeners() == dict.fromkeys(SEG_KEYS, False)

    head.pubs["overlay"].subscribers = 1
    head.process_batch([(0, header(), frame, head.listeners(), None)])
    assert [len(head.pubs[k].sent) for k in SEG_KEYS] == [0, 0, 1, 0]
    expected = drawing.blend(frame, drawing.colorize(seg(frame).labels, head.lut), 0.7)
    np.testing.assert_array_equal(pixels(head.pubs["overlay"].sent[0]), expected)
    assert ctx.stats.snapshot()["segmentation_inference_p50_ms"] > 0
    # the ROI check sees the cameras' frame sizes through the context
    assert "refused" in head.validate("roi_x", 600)
    assert head.validate("roi_x", 100) is None
    head.destroy_outputs()
    assert len(ctx.destroyed) == 5 and not head.camera_pubs


def test_detection_head_filters_tracks_and_follows_its_parameters(det, frame):
    ctx = context(("segmentation", "detection"), {"detection": det},
                  **{"detection.score_threshold": 0.5})
    head = DetectionHead(ctx, "detection")
    head.load()
    head.create_outputs([None, "/cam2"])  # two cameras
    assert head.camera_pubs[1]["detections"].topic_name == "/cam2/detections"
    assert head.label_info_pubs[0].topic_name == "detections/label_info"
    assert head.configured_problem() is None
    assert "not in the model's classes" in head.validate("classes", ["Truck"])
    pubs = head.camera_pubs[0]
    pubs["detections"].subscribers = 1
    for _ in range(2):  # the same frame twice: the same tracks
        head.process_batch([(0, header(), frame, head.listeners(0), None)])
    first, second = (m.detections for m in pubs["detections"].sent)
    assert not pubs["image"].sent and not head.camera_pubs[1]["detections"].sent
    assert len(first) >= 1 and [d.id for d in second] == [d.id for d in first]
    assert all(d.id for d in second) and head.diagnostic_values()["tracks_active"] >= 1
    expected = DetectionFilter(score_threshold=0.5)(det(frame))
    assert len(second) == len(expected)

    # runtime parameters: a class whitelist and no tracking
    ctx.values["detection.classes"] = ["Pedestrian"]
    ctx.values["detection.tracking"] = False
    head.apply_runtime_params()
    head.process_batch([(0, header(), frame, head.listeners(0), None)])
    last = pubs["detections"].sent[-1].detections
    pedestrian = det.classes.index("Pedestrian")
    assert len(last) == int((expected.class_ids == pedestrian).sum()) >= 1
    assert all(d.results[0].hypothesis.class_id == str(pedestrian) and d.id == ""
               for d in last)
    assert head.label_info_pubs[0].sent[-1].threshold == pytest.approx(0.5)
