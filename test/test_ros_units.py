"""ROS-free pieces of the nodes: conversion, drawing, stats, params,
detection filters and message builders (no rclpy.init, no DDS)."""
from __future__ import annotations

import array
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from fcn_perception.bag import typestore as T
from fcn_perception.errors import ConversionError
from fcn_perception.imaging import drawing
from fcn_perception.imaging.decode import ENCODINGS, decode, decode_compressed, decode_message
from fcn_perception.imaging.encode import encode, encode_compressed
from fcn_perception.inference import backends
from fcn_perception.inference.results import DetectionResult
from fcn_perception.ros import filtering, layout, params
from fcn_perception.ros.stats import FrameStats, HealthMonitor, LatencyWindow, task_values

COLOUR_ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "rgb16", "bgr16", "rgba16", "bgra16"]
MONO_ENCODINGS = ["mono8", "8UC1", "mono16"]


@pytest.fixture(scope="module")
def frame(camvid_dir: Path) -> np.ndarray:
    path = sorted((camvid_dir / "val").glob("*.png"))[0]
    return np.asarray(PILImage.open(path).convert("RGB"))


def grey_of(rgb: np.ndarray) -> np.ndarray:
    return encode(rgb, "mono8")[3]


# ----------------------------------------------------------------------------- decode
@pytest.mark.parametrize("encoding", COLOUR_ENCODINGS)
@pytest.mark.parametrize("pad", [0, 7])
@pytest.mark.parametrize("bigendian", [False, True])
def test_decode_colour_round_trip(frame, encoding, pad, bigendian):
    h, w, step, data = encode(frame, encoding, is_bigendian=bigendian, pad=pad)
    assert step == w * ENCODINGS[encoding][0] * ENCODINGS[encoding][1] + pad
    rgb = decode(encoding, h, w, step, bigendian, array.array("B", data))
    assert rgb.shape == frame.shape and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, frame)


@pytest.mark.parametrize("encoding", MONO_ENCODINGS)
def test_decode_mono_gives_grey_rgb(frame, encoding):
    h, w, step, data = encode(frame, encoding, pad=3)
    rgb = decode(encoding, h, w, step, 0, data)
    assert rgb.shape == (h, w, 3)
    grey = np.frombuffer(grey_of(frame), np.uint8).reshape(h, w)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], grey)


def test_decode_16bit_honours_byte_order():
    # one pixel, value 0x1234 per channel: high byte 0x12
    little = np.array([0x34, 0x12] * 3, np.uint8).tobytes()
    assert decode("rgb16", 1, 1, 6, False, little).tolist() == [[[0x12] * 3]]
    assert decode("rgb16", 1, 1, 6, True, little).tolist() == [[[0x34] * 3]]


def test_decode_accepts_bytes_memoryview_and_lists():
    data = bytes(range(12))
    want = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    for buf in (data, bytearray(data), memoryview(data), list(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(decode("rgb8", 2, 2, 6, 0, buf), want)


@pytest.mark.parametrize("fields,reason", [
    (("nv21", 2, 2, 4, 0, b"\0" * 8), "unsupported encoding"),
    (("rgb8", 0, 4, 12, 0, b""), "empty image"),
    (("rgb8", 4, 0, 0, 0, b""), "empty image"),
    (("rgb8", 2, 4, 11, 0, b"\0" * 24), "shorter than one row"),
    (("rgb8", 2, 4, 12, 0, b"\0" * 23), "fewer than step x height"),
    (("bgra8", 100000, 2, 8, 0, b"\0" * 16), "limit"),
])
def test_decode_rejects_bad_fields_with_a_reason(fields, reason):
    with pytest.raises(ConversionError, match=reason):
        decode(*fields)


# ----------------------------------------------------------------------------- compressed
@pytest.mark.parametrize("fmt", ["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8"])
def test_decode_compressed(frame, fmt):
    data = encode_compressed(frame, fmt, quality=95)
    rgb = decode_compressed(fmt, array.array("B", data))
    assert rgb.shape == frame.shape and rgb.dtype == np.uint8
    if "png" in fmt:
        np.testing.assert_array_equal(rgb, frame)
    else:
        assert np.abs(rgb.astype(int) - frame).mean() < 4


def test_decode_compressed_grey_png():
    grey = (np.arange(12 * 16) % 256).astype(np.uint8).reshape(12, 16)
    import io

    out = io.BytesIO()
    PILImage.fromarray(grey).save(out, format="PNG")
    rgb = decode_compressed("png", out.getvalue())
    np.testing.assert_array_equal(rgb[:, :, 1], grey)


@pytest.mark.parametrize("mangle,reason", [
    (lambda b: b"", "no data"),
    (lambda b: b[: len(b) // 3], "corrupt JPEG"),
    (lambda b: b[:2] + bytes(200) + b[202:], "corrupt JPEG"),
    (lambda b: b"GIF89a" + b[6:], "neither JPEG nor PNG"),
])
def test_decode_compressed_rejects_corrupt_data(frame, mangle, reason):
    data = mangle(encode_compressed(frame[:64, :64], "jpeg"))
    with pytest.raises(ConversionError, match=reason):
        decode_compressed("jpeg", data)


def test_decode_compressed_rejects_compressed_depth():
    with pytest.raises(ConversionError, match="compressedDepth"):
        decode_compressed("16UC1; compressedDepth", b"\x89PNG\r\n\x1a\n" + bytes(20))


def test_decode_message_dispatches_on_the_message_kind(frame):
    """One dispatch for both message kinds, here on rosbags messages (rclpy's have the
    same fields; the node tests send those)."""
    h, w, step, data = encode(frame, "bgr8", pad=5)
    raw = T.msg_class(T.IMAGE)(header=T.header(0, "cam"), height=h, width=w, encoding="bgr8",
                               is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
    np.testing.assert_array_equal(decode_message(raw), frame)
    np.testing.assert_array_equal(decode_message(T.compressed_msg(frame, 0, "cam", "png")), frame)
    empty = T.msg_class(T.COMPRESSED_IMAGE)(header=T.header(0, "cam"), format="png",
                                            data=np.zeros(0, np.uint8))
    with pytest.raises(ConversionError, match="no data"):
        decode_message(empty)


# ----------------------------------------------------------------------------- drawing
def test_palette_colorize_and_blend():
    lut = drawing.palette_lut([[255, 0, 0], [0, 255, 0]], num_classes=4)
    assert lut.shape == (256, 3) and lut[0].tolist() == [255, 0, 0]
    assert lut[2].any() and lut[3].any() and not lut[255].any()  # generated, then black
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    colour = drawing.colorize(labels, lut)
    assert colour.shape == (2, 2, 3) and colour[0, 1].tolist() == [0, 255, 0]
    rgb = np.full((2, 2, 3), 100, np.uint8)
    assert (drawing.blend(rgb, colour, 0.0) == rgb).all()
    assert (drawing.blend(rgb, colour, 1.0) == colour).all()
    half = drawing.blend(rgb, colour, 0.5)
    assert half[0, 0].tolist() == [178, 50, 50]


def test_draw_detections_outlines_boxes():
    rgb = np.zeros((60, 80, 3), np.uint8)
    lut = drawing.palette_lut([[255, 0, 0], [0, 255, 0]])
    out = drawing.draw_detections(rgb, np.array([[10, 20, 50, 55]], np.float32),
                                  np.array([0.9], np.float32), np.array([1]), ["a", "b"], lut)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert out[40, 10].tolist() == [0, 255, 0]  # left edge
    assert not rgb.any()  # input untouched
    empty = drawing.draw_detections(rgb, np.zeros((0, 4)), np.zeros(0), np.zeros(0), [], lut)
    assert (empty == rgb).all()


# ----------------------------------------------------------------------------- stats
def test_latency_window_percentiles_and_rate():
    win = LatencyWindow(size=100)
    assert np.isnan(win.percentiles(50)[0]) and win.rate() == 0.0
    for i in range(200):
        win.add(float(i), now=100.0 + i * 0.1)
    p50, p95 = win.percentiles(50, 95)
    assert 148 <= p50 <= 151 and 193 <= p95 <= 196  # only the last 100 are kept
    assert win.rate(horizon_s=5.0, now=119.9) == pytest.approx(10.0, rel=0.05)


def test_frame_stats_snapshot():
    stats = FrameStats()
    for name in ("received", "received", "dropped", "rejected", "processed"):
        stats.count(name)
    stats.latency.add(12.0)
    stats.add_inference("segmentation", 8.0)
    snap = stats.snapshot()
    assert snap["received"] == 2 and snap["dropped"] == 1 and snap["rejected"] == 1
    assert snap["latency_p50_ms"] == 12.0 and snap["segmentation_inference_p95_ms"] == 8.0


def test_health_levels():
    stats = FrameStats()
    health = HealthMonitor(stats, silent_after_s=5.0, now=100.0)
    snap, level, message = health.assess("/cam", now=104.0)
    assert (level, message) == ("ok", None) and snap["received"] == 0
    assert health.assess("/cam", now=106.0)[1:] == ("warn", "no frame for 6 s on /cam")
    stats.count("received")  # stats.last_received is now (time.monotonic())
    stats.count("skipped")
    now = stats.last_received + 1.0
    assert health.assess("/cam", now=now)[1:] == ("ok", "idle: nobody subscribes to the outputs")
    stats.count("received")
    stats.count("rejected")
    stats.last_error = "bad step"
    assert health.assess("/cam", now=now)[1:] == ("warn", "1 bad frame(s) skipped: bad step")
    assert health.assess("/cam", now=now)[1:] == ("ok", None)  # nothing new since
    stats.count("received")
    stats.count("processed")
    stats.add_inference("detection", 7.0)
    values = task_values(stats.snapshot(), "detection")
    assert values["frames_processed"] == 1 and values["frames_rejected"] == 1
    assert values["inference_p50_ms"] == 7.0
    assert np.isnan(task_values(stats.snapshot(), "segmentation")["inference_p50_ms"])


# ----------------------------------------------------------------------------- params
def test_param_specs_validate():
    specs = {s.name: s for s in params.node_specs(("detection",))}
    assert specs["score_threshold"].validate(0.25) is None
    assert "above the maximum" in specs["score_threshold"].validate(1.5)
    assert "must be a float" in specs["score_threshold"].validate("high")
    seg = {s.name: s for s in params.node_specs(("segmentation",))}
    assert "must be finite" in seg["overlay_alpha"].validate(float("nan"))
    assert "below the minimum" in specs["max_detections"].validate(0)
    assert "not one of" in specs["backend"].validate("tensorflow")
    assert specs["classes"].validate(["Car"]) is None
    assert "string_array" in specs["classes"].validate([1])
    both = {s.name for s in params.node_specs(("segmentation", "detection"))}
    assert {"segmentation.model", "detection.score_threshold", "qos_depth"} <= both
    assert "model" not in both
    seg_node = [s.name for s in params.node_specs(params.NODES["segmentation_node"])]
    assert seg_node == [s.name for s in (*params.NODE_PARAMS, *params.PREDICTOR_PARAMS,
                                         *params.TASK_PARAMS["segmentation"])]
    assert {"autostart", "model", "overlay_alpha"} <= set(seg_node)
    assert "score_threshold" not in seg_node


def test_param_descriptors_carry_ranges():
    specs = {s.name: s for s in params.node_specs(("detection",))}
    d = params.descriptor(specs["score_threshold"])
    assert d.floating_point_range[0].from_value == 0.0 and d.floating_point_range[0].to_value == 1.0
    d = params.descriptor(specs["max_detections"])
    assert d.integer_range[0].to_value == 1000
    assert "tensorrt" in params.descriptor(specs["backend"]).additional_constraints


def test_markdown_table_of_the_specs():
    rows = params.markdown_table().splitlines()
    assert rows[0] == "| parameter | type | default | range | applied | description |"
    names = [s.name for s in (*params.NODE_PARAMS, *params.PREDICTOR_PARAMS)] + [
        s.name for t in params.TASK_PARAMS.values() for s in t]
    assert [r.split("`")[1] for r in rows[2:]] == names
    assert ("| `score_threshold` (detection) | float | `0.5` | [0.0, 1.0] | runtime | "
            "detections scoring below are not published (with tracking, except those "
            "continuing a confirmed track, down to track_low_threshold) |") in rows
    assert "| `classes` (detection) | string[] | `[]` |" in params.markdown_table()
    device = next(r for r in rows if r.startswith("| `device`"))
    assert device.count(" | ") == 5  # the pattern's | are escaped: still six cells


def test_readme_parameter_table_is_generated_from_the_specs():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"<!-- BEGIN parameters table -->\n(.*?)\n<!-- END parameters table -->",
                      readme, re.S)
    assert block, "README.md has no <!-- BEGIN/END parameters table --> markers"
    assert block.group(1) == params.markdown_table(), (
        "README.md's parameter table differs from the specs: paste the output of "
        "`python -m fcn_perception.ros.params` between its markers")


def test_backend_candidates():
    assert params.backend_candidates("auto", "auto") == ["tensorrt", "onnxruntime-cuda",
                                                         "torch-cuda", "onnxruntime-cpu",
                                                         "torch-cpu"]
    assert params.backend_candidates("auto", "cpu") == ["onnxruntime-cpu", "torch-cpu"]
    assert params.backend_candidates("torch", "auto") == ["torch-cuda", "torch-cpu"]
    assert params.backend_candidates("torch", "cuda") == ["torch-cuda"]
    assert params.backend_candidates("ort", "cpu") == ["onnxruntime-cpu"]
    assert params.backend_candidates("torch-cpu", "cpu") == ["torch-cpu"]
    assert params.backend_candidates("onnxruntime-tensorrt", "cuda:1") == ["onnxruntime-tensorrt"]
    with pytest.raises(ValueError, match="runs on cuda"):
        params.backend_candidates("tensorrt", "cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        params.backend_candidates("openvino", "auto")


def test_predictor_options_from_parameters():
    values = {"model": "fast", "backend": "auto", "device": "auto", "precision": "auto",
              "force_engine_rebuild": False, "network_height": 0, "network_width": 0,
              "aspect_policy": "resize", "roi_x": 0, "roi_y": 0, "roi_width": 0,
              "roi_height": 0}
    assert params.predictor_options(values.get) == {
        "backend": "auto", "device": "auto", "weights": "fast", "precision": None}
    values.update(model="m.onnx", backend="tensorrt", device="cuda:2", precision="int8",
                  force_engine_rebuild=True)
    assert params.predictor_options(values.get) == {
        "backend": "tensorrt", "device": "cuda", "weights": "m.onnx", "precision": "int8",
        "gpu": 2, "rebuild": True}
    values.update(network_height=288, network_width=512, aspect_policy="letterbox",
                  roi_x=10, roi_height=100)
    options = params.predictor_options(values.get)
    assert (options["input_size"], options["aspect"], options["roi"]) == (
        (288, 512), "letterbox", (10, 0, 0, 100))
    values.update(network_width=0)
    with pytest.raises(ValueError, match="both network_height and network_width"):
        params.predictor_options(values.get)


def test_device_of_a_backend():
    assert backends.device_of("torch-cpu") == "cpu"
    assert backends.device_of("onnxruntime-cpu", gpu=1) == "cpu"
    assert backends.device_of("tensorrt") == "cuda"
    assert backends.device_of("onnxruntime-tensorrt", gpu=3) == "cuda:3"
    with pytest.raises(ValueError):
        backends.device_of("cuda-something")


# ----------------------------------------------------------------------------- filtering
def test_filter_detections():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.3], np.float32)
    ids = np.array([0, 0, 1, 0])
    dist = np.array([[0.9, 0.05], [0.8, 0.1], [0.2, 0.7], [0.3, 0.1]], np.float32)
    result = DetectionResult(boxes, scores, ids, class_scores=dist)
    out = filtering.filter_detections(result, score_threshold=0.5)
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    out = filtering.filter_detections(result, nms_threshold=0.5)
    assert out.scores.tolist() == pytest.approx([0.9, 0.7, 0.3])  # same-class overlap only
    np.testing.assert_array_equal(out.class_scores, dist[[0, 2, 3]])  # follow their boxes
    out = filtering.filter_detections(result, allowed=np.array([1]))
    assert out.class_ids.tolist() == [1] and out.class_scores.tolist() == [dist[2].tolist()]
    out = filtering.filter_detections(result, max_detections=2)
    assert len(out) == 2 and out.boxes.shape == (2, 4)
    out = filtering.filter_detections(DetectionResult(), nms_threshold=0.1)
    assert out.boxes.shape == (0, 4) and out.class_scores is None


def test_detection_filter_from_the_parameters():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    result = DetectionResult(boxes, np.array([0.9, 0.8, 0.6], np.float32), np.array([0, 0, 2]))
    card = {"model_classes": ["Car", "Pedestrian", "Bicyclist"], "model_nms_threshold": 0.3}
    f = filtering.DetectionFilter.for_model(**card, score_threshold=0.5, nms_threshold=0.3,
                                            max_detections=100)
    assert f.nms_threshold is None and f.allowed is None  # 0.3 is the model's own NMS
    assert f(result).scores.tolist() == pytest.approx([0.9, 0.8, 0.6])
    f = filtering.DetectionFilter.for_model(**card, score_threshold=0.7, nms_threshold=0.2,
                                            max_detections=100)
    assert f.nms_threshold == 0.2 and f(result).scores.tolist() == pytest.approx([0.9])
    f = filtering.DetectionFilter.for_model(**card, score_threshold=0.0, nms_threshold=0.3,
                                            max_detections=1, classes=["Bicyclist"])
    assert f.allowed.tolist() == [2] and f(result).class_ids.tolist() == [2]


# ----------------------------------------------------------------------------- messages
def test_message_builders_copy_the_header():
    pytest.importorskip("sensor_msgs.msg")
    from std_msgs.msg import Header

    from fcn_perception.ros import messages

    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    labels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    msg = messages.labels_msg(header, labels)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (2, 3, 3, "mono8")
    assert msg.header == header and msg.header is not header
    assert bytes(msg.data) == labels.tobytes()
    rgb = messages.rgb_msg(header, np.zeros((2, 3, 3), np.uint8))
    assert rgb.step == 9 and rgb.encoding == "rgb8"
    status = messages.diagnostic_status("n: segmentation", "torch-cpu/cpu", "warn", "m",
                                        {"fps": 1.234, "frames": 3, "p": float("nan")})
    assert [(kv.key, kv.value) for kv in status.values] == [("fps", "1.23"), ("frames", "3"),
                                                            ("p", "nan")]
    pytest.importorskip("vision_msgs.msg")
    dets = messages.detections_msg(header, np.array([[10, 20, 30, 60]], np.float32),
                                   np.array([0.75], np.float32), np.array([2]))
    d = dets.detections[0]
    assert (d.bbox.center.position.x, d.bbox.center.position.y) == (20, 40)
    assert (d.bbox.size_x, d.bbox.size_y) == (20, 40)
    assert d.results[0].hypothesis.class_id == "2" and d.results[0].hypothesis.score == 0.75
    # with the class distribution: one hypothesis per class, the detected class first
    dets = messages.detections_msg(header, np.array([[10, 20, 30, 60]] * 2, np.float32),
                                   np.array([0.75, 0.15], np.float32), np.array([2, 0]),
                                   np.array([[0.05, 0.15, 0.75], [0.15, 0.05, 0.75]]))
    ids = [[h.hypothesis.class_id for h in d.results] for d in dets.detections]
    assert ids == [["2", "1", "0"], ["0", "2", "1"]]
    got = [[h.hypothesis.score for h in d.results] for d in dets.detections]
    assert got == [pytest.approx([0.75, 0.15, 0.05]), pytest.approx([0.15, 0.75, 0.05])]
    assert dets.header == header and d.header == header
    assert layout.hypotheses(1, 0.5) == [(1, 0.5)]
    assert layout.hypotheses(0, 0.2, np.array([0.2, 0.5, 0.3])) == [(0, 0.2), (1, 0.5),
                                                                     (2, 0.3)]
    info = messages.label_info_msg(header, ["a", "b"], 0.5)
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "a"), (1, "b")]


def test_qos_profiles_and_hints():
    pytest.importorskip("rclpy")
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from fcn_perception.ros import qos

    sensor = qos.input_qos("best_effort", 3)
    reliable = qos.input_qos("reliable", 7)
    assert sensor.reliability == ReliabilityPolicy.BEST_EFFORT and sensor.depth == 3
    assert reliable.reliability == ReliabilityPolicy.RELIABLE
    assert qos.latched_qos().durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert qos.describe(sensor) == "best_effort, volatile, keep_last(3)"
    assert "nobody publishes" in qos.compatibility_hint(sensor, [])
    assert "qos_reliability:=best_effort" in qos.compatibility_hint(reliable, [sensor])
    assert "compatible QoS" in qos.compatibility_hint(sensor, [reliable])
    with pytest.raises(ValueError):
        qos.input_qos("sometimes")
