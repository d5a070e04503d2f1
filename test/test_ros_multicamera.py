"""Issue 14 over real DDS (rclpy pub/sub): several cameras on one node, the confidence
topic, camera-driver encodings, the input geometry parameters, image_transport naming
of the compressed input and the node executables' --help.

Models are the small random ones of test_ros_nodes (a U-Net and a slim R-FCN whose cards
ask for a 90x120 network input), on real CamVid frames."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

import ros_harness  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_harness import (  # noqa: E402
    CLASSES,
    as_array,
    det_params,
    header_of,
    image_msg,
    make_node,
    seg_params,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from fcn_perception.imaging import camera_encodings as ce  # noqa: E402
from fcn_perception.imaging.decode import decode  # noqa: E402
from fcn_perception.inference.geometry import UNSEEN_LABEL  # noqa: E402
from fcn_perception.inference.predictor import load_predictor  # noqa: E402
from fcn_perception.ros import nodes  # noqa: E402

# the shared fixtures of test/ros_harness.py
weights, frames, harness = ros_harness.weights, ros_harness.frames, ros_harness.harness

VENV_BIN = Path(sys.executable).parent
CAMERAS = ["/cam1/image_raw", "/cam2/image_raw", "/cam3/image_raw"]


class FakePredictorForWiring:
    """Stands in for a model where only topics are checked (no frame is sent)."""

    classes = ["a", "b"]
    palette = None
    backend_name = "torch-cpu"
    precision = "fp32"
    nms_threshold = 0.3


def raw_msg(rows: np.ndarray, encoding: str, width: int, stamp: int, frame_id: str = "camera",
            bigendian: bool = False) -> Image:
    msg = Image(height=rows.shape[0], width=width, step=rows.shape[1], encoding=encoding,
                is_bigendian=int(bigendian))
    msg.data = rows.tobytes()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 1000 * stamp
    return msg


def confidence_of(msg: Image) -> np.ndarray:
    if msg.encoding == "32FC1":
        rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
        return rows[:, : msg.width * 4].copy().view("<f4").reshape(msg.height, msg.width)
    return as_array(msg).astype(np.float32) / 255.0


# ============================================================================ cameras
def test_three_cameras_one_node_each_answered_under_its_namespace(harness, weights, frames):
    """perception_node with three image_topics: each camera's segmentation and detections
    come back under its namespace, with its header, at its resolution, equal to the model
    run on that camera's frame alone; a flooding camera does not starve the others."""
    node = make_node(nodes.CombinedNode, harness, {
        **{f"segmentation.{k}": v for k, v in seg_params(weights).items()},
        **{f"detection.{k}": v for k, v in det_params(weights, score_threshold=0.0).items()},
        "image_topics": CAMERAS})
    assert node._state_machine.current_state[1] == "active"
    assert [c.namespace for c in node._input.cameras] == ["/cam1", "/cam2", "/cam3"]
    for ns in ("/cam1", "/cam2", "/cam3"):
        harness.subscribe(f"{ns}/segmentation/labels", Image)
        harness.subscribe(f"{ns}/detections", _detection_type())
    harness.subscribe("/diagnostics", DiagnosticArray)
    pubs = [harness.publisher(t, Image) for t in CAMERAS]
    for pub in pubs:
        harness.wait_matched(pub)
    for head in node.heads:
        for cam_pubs in head.camera_pubs:
            for pub in cam_pubs.values():
                if pub.topic_name.endswith(("labels", "detections")):
                    harness.wait(lambda pub=pub: pub.get_subscription_count() > 0,
                                 what=f"a subscriber on {pub.topic_name}")
    # three cameras, three sizes: an answer in the wrong namespace would have the wrong size
    sized = [frames[0], np.ascontiguousarray(frames[1][:300, :400]),
             np.ascontiguousarray(frames[2][:240, :320])]
    reference = load_predictor("segmentation", "torch-cpu", weights["segmentation"])
    for round_ in range(2):
        msgs = [image_msg(f, "rgb8", 1000 * (k + 1) + round_, f"cam{k + 1}_optical")
                for k, f in enumerate(sized)]
        # camera 1 floods (ten frames per round), cameras 2 and 3 send one each
        for extra in range(10):
            flood = image_msg(sized[0], "rgb8", 50_000 + 100 * round_ + extra, "cam1_optical")
            pubs[0].publish(flood)
        for pub, msg in zip(pubs, msgs):
            pub.publish(msg)
        for k, msg in enumerate(msgs):
            ns = f"/cam{k + 1}"
            out = harness.message_with_stamp(f"{ns}/segmentation/labels", msg.header.stamp.sec)
            assert header_of(out) == header_of(msg)
            assert (out.height, out.width) == sized[k].shape[:2]
            np.testing.assert_array_equal(as_array(out), reference(sized[k]).labels)
            det = harness.message_with_stamp(f"{ns}/detections", msg.header.stamp.sec)
            assert header_of(det) == header_of(msg)
            for d in det.detections:  # boxes inside that camera's frame
                assert 0 <= d.bbox.center.position.x <= sized[k].shape[1]
                assert 0 <= d.bbox.center.position.y <= sized[k].shape[0]
    # nothing leaked into another camera's namespace
    for k in range(3):
        stamps = {m.header.frame_id for m in harness.received[f"/cam{k + 1}/segmentation/labels"]}
        assert stamps == {f"cam{k + 1}_optical"}, stamps
    cams = node._input.cameras
    assert all(c.processed >= 2 for c in cams), [c.processed for c in cams]

    def camera_diagnostics():
        for arr in reversed(harness.received.get("/diagnostics", [])):
            for status in arr.status:
                values = {kv.key: kv.value for kv in status.values}
                if values.get("cam3/frames_processed", "0") not in ("0", ""):
                    return values
        return None

    values = harness.wait(camera_diagnostics, what="per-camera values in /diagnostics")
    assert values["cam1/topic"] == "/cam1/image_raw"
    for key in ("processing_p50_ms", "processing_p95_ms", "processing_p99_ms",
                "latency_p99_ms", "inference_p99_ms", "cam2/latency_p95_ms", "cam1/fps"):
        assert key in values, key
    assert float(values["processing_p95_ms"]) > 0


def _detection_type():
    from vision_msgs.msg import Detection2DArray

    return Detection2DArray


def test_cameras_sharing_a_namespace_are_refused(harness, weights):
    node = make_node(nodes.SegmentationNode, harness, {
        **seg_params(weights), "image_topics": ["/cam/left", "/cam/right"]})
    assert node._state_machine.current_state[1] == "unconfigured"
    assert node._input is None and not node.heads[0].camera_pubs


# ============================================================================ confidence
def test_confidence_topic_only_while_subscribed(harness, weights, frames):
    """segmentation/confidence: the top class's probability at the input resolution, mono8
    (x255) or 32FC1 (runtime switch); not computed while nobody subscribes to it."""
    asked = []

    def factory(task, **options):
        predictor = nodes.load_warm_predictor(task, **options)

        class Recording:  # the real predictor; records what each call asked for
            def __getattr__(self, name):
                return getattr(predictor, name)

            def __call__(self, rgb, **kw):
                asked.append(kw.get("confidence", False))
                return predictor(rgb, **kw)

        return Recording()

    node = make_node(nodes.SegmentationNode, harness, seg_params(weights),
                     predictor_factory=factory)
    harness.subscribe("segmentation/labels", Image)
    pub = harness.publisher("image", Image)
    harness.wait_matched(pub)
    harness.wait(lambda: node.heads[0].pubs["labels"].get_subscription_count() > 0)
    frame = frames[0]
    pub.publish(image_msg(frame, "rgb8", 1))
    harness.message_with_stamp("segmentation/labels", 1)
    assert asked == [False]  # labels only: no confidence computed

    harness.subscribe("segmentation/confidence", Image)
    harness.wait(lambda: node.heads[0].pubs["confidence"].get_subscription_count() > 0)
    reference = load_predictor("segmentation", "torch-cpu", weights["segmentation"])
    want = reference(frame, confidence=True)
    pub.publish(image_msg(frame, "rgb8", 2, "cam_conf"))
    out = harness.message_with_stamp("segmentation/confidence", 2)
    assert asked[-1] is True
    assert header_of(out)[2] == "cam_conf" and out.encoding == "mono8"
    assert (out.height, out.width) == frame.shape[:2]
    np.testing.assert_array_equal(as_array(out),
                                  np.rint(want.confidence * 255).astype(np.uint8))
    labels = as_array(harness.message_with_stamp("segmentation/labels", 2))
    np.testing.assert_array_equal(labels, want.labels)

    node.set_parameters([Parameter("confidence_encoding", value="32FC1")])
    pub.publish(image_msg(frame, "rgb8", 3))
    out = harness.message_with_stamp("segmentation/confidence", 3)
    assert out.encoding == "32FC1" and out.step == 4 * out.width
    np.testing.assert_allclose(confidence_of(out), want.confidence, atol=1e-6)
    assert confidence_of(out).min() >= 1 / len(CLASSES) - 1e-6

    harness.unsubscribe("segmentation/confidence")
    harness.wait(lambda: node.heads[0].pubs["confidence"].get_subscription_count() == 0)
    pub.publish(image_msg(frame, "rgb8", 4))
    harness.message_with_stamp("segmentation/labels", 4)
    assert asked[-1] is False


# ============================================================================ encodings
@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2", "bayer_rggb8", "bayer_bggr8",
                                      "bayer_gbrg8", "bayer_grbg8"])
def test_camera_driver_encodings_over_dds(harness, weights, frames, encoding):
    """A frame sent as `encoding` is answered with the labels of its cv_bridge (OpenCV)
    decoding sent as rgb8, and those agree with the original rgb8 frame's."""
    node = make_node(nodes.SegmentationNode, harness, seg_params(weights))
    harness.subscribe("segmentation/labels", Image)
    pub = harness.publisher("image", Image)
    harness.wait_matched(pub)
    harness.wait(lambda: node.heads[0].pubs["labels"].get_subscription_count() > 0)
    frame = frames[1]
    h, w = frame.shape[:2]
    rows = ce.encode_camera(frame, encoding)
    msg = raw_msg(rows, encoding, w, 10, f"cam_{encoding}")
    pub.publish(msg)
    out = harness.message_with_stamp("segmentation/labels", 10)
    assert header_of(out) == header_of(msg) and (out.height, out.width) == (h, w)
    decoded = decode(encoding, h, w, rows.shape[1], 0, rows.tobytes())
    pub.publish(image_msg(decoded, "rgb8", 11))
    via_rgb8 = as_array(harness.message_with_stamp("segmentation/labels", 11))
    np.testing.assert_array_equal(as_array(out), via_rgb8)
    pub.publish(image_msg(frame, "rgb8", 12))
    original = as_array(harness.message_with_stamp("segmentation/labels", 12))
    agreement = float((as_array(out) == original).mean())
    assert agreement > 0.9, agreement
    assert node.stats.counts["rejected"] == 0


def test_depth_frames_are_rejected_with_a_reason(harness, weights, frames):
    node = make_node(nodes.SegmentationNode, harness, seg_params(weights))
    harness.subscribe("segmentation/labels", Image)
    pub = harness.publisher("image", Image)
    harness.wait_matched(pub)
    harness.wait(lambda: node.heads[0].pubs["labels"].get_subscription_count() > 0)
    depth = np.full((48, 64), 1500, "<u2")
    msg = raw_msg(depth.view(np.uint8).reshape(48, 128), "16UC1", 64, 1)
    pub.publish(msg)
    harness.wait(lambda: node.stats.counts["rejected"] == 1, what="the depth frame rejected")
    assert "depth" in node.stats.last_error and "colour topic" in node.stats.last_error
    pub.publish(image_msg(frames[0][:48, :64], "rgb8", 2))
    harness.message_with_stamp("segmentation/labels", 2)


# ============================================================================ geometry
def test_aspect_policies_and_roi_map_back_to_input_pixels(harness, weights, frames):
    """network 96x96 (from the parameters, not the card) and each aspect policy with a
    ROI: labels at the input resolution, 255 outside what the network saw, equal to the
    predictor with the same geometry; detections inside the ROI."""
    roi = {"roi_x": 40, "roi_y": 20, "roi_width": 400, "roi_height": 300}
    geo = {"network_height": 96, "network_width": 96, **roi}
    node = make_node(nodes.CombinedNode, harness, {
        **{f"segmentation.{k}": v for k, v in seg_params(weights, **geo).items()},
        **{f"detection.{k}": v for k, v in det_params(weights, score_threshold=0.0,
                                                       **geo).items()}})
    harness.subscribe("segmentation/labels", Image)
    harness.subscribe("detections", _detection_type())
    pub = harness.publisher("image", Image)
    harness.wait_matched(pub)
    for head in node.heads:
        pub_ = head.pubs["labels" if head.task == "segmentation" else "detections"]
        harness.wait(lambda p=pub_: p.get_subscription_count() > 0)
    frame = frames[2]
    x0, y0, x1, y1 = 40, 20, 440, 320
    reference = load_predictor("segmentation", "torch-cpu", weights["segmentation"],
                               input_size=(96, 96))
    for stamp, policy in enumerate(("resize", "letterbox", "crop"), start=1):
        node.set_parameters([Parameter("segmentation.aspect_policy", value=policy),
                             Parameter("detection.aspect_policy", value=policy)])
        reference.set_geometry(size=(96, 96), policy=policy, roi=(40, 20, 400, 300))
        pub.publish(image_msg(frame, "rgb8", stamp, f"cam_{policy}"))
        out = harness.message_with_stamp("segmentation/labels", stamp)
        labels = as_array(out)
        assert labels.shape == frame.shape[:2]
        np.testing.assert_array_equal(labels, reference(frame).labels)
        outside = np.ones(labels.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert (labels[outside] == UNSEEN_LABEL).all()
        seen = labels[y0:y1, x0:x1]
        if policy == "crop":  # a square crop of the 400x300 ROI: its middle 300 columns
            assert (seen[:, :50] == UNSEEN_LABEL).all() and (seen[:, 350:] == UNSEEN_LABEL).all()
            assert (seen[:, 50:350] < len(CLASSES)).all()
        else:
            assert (seen < len(CLASSES)).all()
        det = harness.message_with_stamp("detections", stamp)
        for d in det.detections:
            c, sx, sy = d.bbox.center.position, d.bbox.size_x, d.bbox.size_y
            assert x0 - 1e-3 <= c.x - sx / 2 and c.x + sx / 2 <= x1 + 1e-3
            assert y0 - 1e-3 <= c.y - sy / 2 and c.y + sy / 2 <= y1 + 1e-3


# ============================================================================ wiring
@pytest.mark.parametrize("cli,topic", [
    (["-r", "image:=/camera/image_raw"], "/camera/image_raw/compressed"),
    (["-r", "image:=/camera/image_raw", "-r", "image/compressed:=/other/jpeg"], "/other/jpeg"),
    ([], "/image/compressed"),
    (["-r", "__ns:=/robot", "-r", "image:=front/image_raw"], "/robot/front/image_raw/compressed"),
])
def test_compressed_input_follows_the_image_remap(harness, cli, topic):
    node = make_node(nodes.SegmentationNode, harness, {"input_transport": "compressed"},
                     cli_args=["--ros-args", *cli],
                     predictor_factory=lambda task, **kw: FakePredictorForWiring())
    assert node._input.topic_name == topic
    assert node._input.msg_type is CompressedImage


def test_compressed_multi_camera_topics(harness):
    node = make_node(nodes.SegmentationNode, harness, {
        "input_transport": "compressed", "image_topics": ["/a/image_raw", "/b/image_raw"]},
        predictor_factory=lambda task, **kw: FakePredictorForWiring())
    assert [c.topic for c in node._input.cameras] == ["/a/image_raw/compressed",
                                                       "/b/image_raw/compressed"]
    topics = {p.topic_name for head in node.heads for pubs in head.camera_pubs
              for p in pubs.values()}
    assert "/a/segmentation/labels" in topics and "/b/segmentation/confidence" in topics


@pytest.mark.parametrize("exe", ["segmentation_node", "detection_node", "perception_node"])
def test_node_help_prints_the_parameters_and_exits(exe):
    proc = subprocess.run([str(VENV_BIN / exe), "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"usage: {exe}")
    for name in ("image_topics", "max_batch", "aspect_policy", "roi_x", "network_height",
                 "expected_rate"):
        assert name in out, name
    if exe == "perception_node":
        assert "segmentation.confidence_encoding" in out and "detection.classes" in out
    assert "listening on" not in proc.stderr  # no node was started
