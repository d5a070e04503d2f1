"""The nodes under hostile input and bad arguments.

* parameters files and ``-p`` arguments: one short message naming the file or argument,
  the parameter and the fix (ROS-free checks of ros_args, plus the real console
  commands), never a traceback;
* frames lost before the node: stamp gaps, the output rate against ``expected_rate``;
* over real DDS: decompression bombs on ``image/compressed`` rejected from their headers
  and a good frame answered right after; re-activation without an input gap (the
  subscription lives from configure to cleanup); Ctrl-C while streaming exits 0 without
  "Failed to publish".

Models are small random ones (a U-Net at 90x120), as in test_ros_nodes.py.
"""
from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from factories import OutputReader, start_node

from fcn_perception.errors import ParameterError
from fcn_perception.ros.params import node_specs
from fcn_perception.ros.ros_args import check_ros_args
from fcn_perception.ros.stats import RATE_GRACE_S, FrameStats, HealthMonitor

SEG = node_specs(("segmentation",))
BOTH = node_specs(("segmentation", "detection"))
WAIT = 90.0


# ============================================================ parameters files and -p
def params_file(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SECTION = "segmentation_node:\n  ros__parameters:\n"
PARAM_CASES = [
    # (id, params-file text or None, extra ros args, expected substrings)
    ("missing file", None, ["--params-file", "{tmp}/nope.yaml"],
     ("nope.yaml", "does not exist", "existing YAML file")),
    ("folder", None, ["--params-file", "{tmp}"], ("is a folder",)),
    ("YAML syntax", "segmentation_node:\n  ros__parameters:\n    overlay_alpha: [0.5\n", [],
     ("params.yaml", "YAML syntax error at line", "fix the indentation")),
    ("not a mapping", "- overlay_alpha\n- 0.5\n", [],
     ("params.yaml", "holds a list, not a mapping", "ros__parameters")),
    ("empty file", "", [], ("params.yaml", "empty (null)", "ros__parameters")),
    ("section a scalar", "segmentation_node: 5\n", [],
     ("params.yaml", "segmentation_node is an integer", "ros__parameters")),
    ("ros__parameters a list", "segmentation_node:\n  ros__parameters: [1, 2]\n", [],
     ("params.yaml", "segmentation_node.ros__parameters", "not a mapping", "indent")),
    ("overlay_alpha: 1", SECTION + "    overlay_alpha: 1\n", [],
     ("params.yaml", "overlay_alpha must be a float", "write 1.0")),
    ("qos_depth: 5.5", SECTION + "    qos_depth: 5.5\n", [],
     ("params.yaml", "qos_depth must be an integer", "5.5")),
    ("autostart: 'yes'", SECTION + "    autostart: 'yes'\n", [],
     ("params.yaml", "autostart must be true or false", "unquoted")),
    ("a list for a string", SECTION + "    input_transport: [raw]\n", [],
     ("params.yaml", "input_transport must be a string", "got a list")),
    ("out of range", SECTION + "    overlay_alpha: 3.0\n", [],
     ("params.yaml", "overlay_alpha=3.0 is above the maximum 1.0", "[0.0, 1.0]")),
    ("not a choice", SECTION + "    backend: tensorflow\n", [],
     ("params.yaml", "backend='tensorflow' is not one of", "onnxruntime")),
    ("wildcard section", "/**:\n  ros__parameters:\n    qos_depth: many\n", [],
     ("params.yaml", "/**", "qos_depth must be an integer")),
    ("nested namespace", "/cam1:\n  segmentation_node:\n    ros__parameters:\n"
     "      max_input_pixels: 1.5e7\n", ["-r", "__ns:=/cam1"],
     ("params.yaml", "/cam1/segmentation_node", "max_input_pixels must be an integer")),
    ("-p overlay_alpha:=abc", None, ["-p", "overlay_alpha:=abc"],
     ("-p overlay_alpha:=abc", "overlay_alpha must be a float", "e.g. 0.5")),
    ("-p expected_rate:=30", None, ["-p", "expected_rate:=30"],
     ("expected_rate must be a float", "write 30.0")),
    ("-p without :=", None, ["-p", "overlay_alpha"], ("expected NAME:=VALUE",)),
    ("--params-file without a file", None, ["--params-file"], ("needs a file name",)),
    ("prefixed parameter", "perception_node:\n  ros__parameters:\n    detection:\n"
     "      max_detections: 10.0\n", [],
     ("params.yaml", "detection.max_detections must be an integer", "write 10")),
]


@pytest.mark.parametrize("case", PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
def test_bad_parameters_give_one_message(case, tmp_path):
    name, text, extra, expect = case
    args = []
    if text is not None:
        args += ["--params-file", str(params_file(tmp_path, text))]
    args += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    node = "perception_node" if "perception_node" in (text or "") else "segmentation_node"
    with pytest.raises(ParameterError) as err:
        check_ros_args(["prog", "--ros-args", *args], node, BOTH if node == "perception_node"
                       else SEG)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300, message
    for text_ in expect:
        assert text_ in message, f"{text_!r} not in {message!r}"


def test_good_parameters_pass_and_unknown_names_warn(tmp_path, repo_root):
    good = params_file(tmp_path, SECTION + "    overlay_alpha: 0.3\n    qos_depth: 3\n"
                       "    autostart: false\n    max_input_pixels: 1000000\n"
                       "    expected_rate: 15.0\n    qos_dept: 4\n"
                       "other_node:\n  ros__parameters:\n    overlay_alpha: wrong\n")
    warnings = check_ros_args(["prog", "--ros-args", "--params-file", str(good),
                               "-p", "overlay_alpha:=0.7", "-p", "other:qos_depth:=x",
                               "-r", "image:=/cam/image_raw"], "segmentation_node", SEG)
    assert len(warnings) == 1 and "qos_dept" in warnings[0] and "qos_depth" in warnings[0]
    # the shipped config files pass the same checks
    for config in sorted((repo_root / "config").glob("*.yaml")):
        for node, tasks in (("segmentation_node", ("segmentation",)),
                            ("detection_node", ("detection",)),
                            ("perception_node", ("segmentation", "detection"))):
            check_ros_args(["p", "--ros-args", "--params-file", str(config)], node,
                           node_specs(tasks))


@pytest.mark.parametrize("args,expect", [
    (["-p", "overlay_alpha:=abc"], "overlay_alpha must be a float"),
    (["--params-file", "{params}"], "qos_depth must be an integer"),
])
def test_node_command_stops_with_one_line(args, expect, tmp_path, ros_domain):
    """The console command itself: exit status 2, one error line, no traceback, before
    any model is loaded."""
    path = params_file(tmp_path, SECTION + "    qos_depth: 5.5\n")
    proc = start_node("segmentation_node", [a.replace("{params}", str(path)) for a in args])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], out


# ============================================================ counting what is lost
def test_health_warns_below_expected_rate_and_on_rejections():
    stats = FrameStats()
    now = time.monotonic()
    health = HealthMonitor(stats, 5.0, now=now - RATE_GRACE_S - 1, expected_rate=30.0,
                           upstream=lambda: "12 frame(s) lost before the node")
    for i in range(30):  # 10 fps over the last 3 s
        stats.count("received")
        stats.count("processed")
        stats.latency.add(5.0, now=now - 3.0 + i * 0.1)
    _, level, text = health.assess("/image", now=now)
    assert level == "warn" and "below expected_rate 30" in text and "12 frame(s) lost" in text
    early = HealthMonitor(stats, 5.0, now=now - 1.0, expected_rate=30.0)
    assert early.assess("/image", now=now)[1] == "ok"  # within the grace period
    enough = HealthMonitor(stats, 5.0, now=now - RATE_GRACE_S - 1, expected_rate=10.0)
    assert enough.assess("/image", now=now)[1] == "ok"  # 10 fps is enough for 10
    stats.count("rejected")
    stats.last_error = "JPEG image of 13300x13300 rejected"
    _, level, text = enough.assess("/image", now=now)
    assert level == "warn" and "1 bad frame(s)" in text and "13300" in text


# ============================================================ over real DDS
rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_harness import (  # noqa: E402
    CLASSES,
    compressed_msg,
    harness,  # noqa: F401  (the fixture)
    image_msg,
    make_node,
    make_weights,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from fcn_perception.imaging.encode import encode_compressed  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory) -> Path:
    """A random U-Net (width 4) whose card asks for a 90x120 network input."""
    return make_weights(tmp_path_factory.mktemp("weights"), "segmentation", size=(90, 120),
                        arch={"name": "unet", "num_classes": len(CLASSES), "width": 4})


FRAME = (np.arange(120 * 160 * 3) % 251).astype(np.uint8).reshape(120, 160, 3)


def raw_msg(stamp: int) -> Image:
    return image_msg(FRAME, "rgb8", stamp)


def compressed(stamp: int, data: bytes, fmt: str = "jpeg") -> CompressedImage:
    return compressed_msg(FRAME, fmt, stamp, data=data)


def test_decompression_bombs_over_dds_then_quiet_ctrl_c(harness, seg_weights, ros_domain):
    """A node process on image/compressed: 3 JPEG bombs (793 bytes declaring 13300x13300)
    and a valid 13000x13000 PNG (164 KB) are rejected from their headers (the log names
    the declared size; not decoding them is checked ROS-free in test_hardening_decode.py),
    counted in diagnostics (WARN), and the good frame sent right after them is answered.
    Then Ctrl-C while frames stream: exit 0, no "Failed to publish", no traceback."""
    from test_hardening_decode import jpeg_declaring, png_grey

    jpeg_bomb = jpeg_declaring(13300, 13300)
    png_bomb = png_grey(13000, 13000)
    good = encode_compressed(FRAME, "jpeg")
    proc = start_node("segmentation_node", [
        "-p", f"model:={seg_weights}", "-p", "backend:=torch-cpu",
        "-p", "input_transport:=compressed", "-p", "qos_reliability:=reliable"])
    out = OutputReader(proc, WAIT)

    def too_large(at_least: int):
        return harness.diagnostics(
            "segmentation", lambda s, v: int(v.get("frames_too_large", 0)) >= at_least)

    try:
        harness.subscribe("segmentation/labels", Image)
        harness.subscribe("/diagnostics", DiagnosticArray)
        pub = harness.publisher("image/compressed", CompressedImage, RELIABLE)
        out.wait_for("listening on /image/compressed", timeout=180)
        harness.wait(lambda: pub.get_subscription_count() > 0, what="the node's subscription")
        for stamp in range(1, 400):  # until the outputs are matched and answer
            pub.publish(compressed(stamp, good))
            with contextlib.suppress(AssertionError):
                harness.message_with_stamp("segmentation/labels", stamp, 1.0)
                break
        # in one burst behind a good frame that keeps the worker busy and before another
        # (6 frames; qos_depth 5 holds what the callbacks have not taken yet): each bomb is
        # refused on receipt, so none hides behind the newer frame the worker answers
        pub.publish(compressed(999, good))
        for i, data in enumerate([jpeg_bomb] * 3 + [png_bomb]):
            pub.publish(compressed(1000 + i, data, "png" if data is png_bomb else "jpeg"))
        pub.publish(compressed(2000, good))
        harness.message_with_stamp("segmentation/labels", 2000)
        status, values = too_large(4)
        print(f"\nbombs: diagnostics: too_large {values['frames_too_large']}, rejected "
              f"{values['frames_rejected']}")
        assert int(values["frames_too_large"]) == 4, values
        assert not set(range(1000, 1004)) & set(harness.stamps("segmentation/labels"))
        assert int(values["frames_rejected"]) >= 4

        def warned(s, v):
            return s.level == DiagnosticStatus.WARN and "rejected" in s.message
        harness.diagnostics("segmentation", warned, timeout=10)
        assert "13300x13300" in out.wait_for("skipping a frame from /image/compressed")
        # Ctrl-C while frames stream: each answer brings the next frame, so the worker is
        # busy (mid-frame or about to be) when the signal arrives
        streaming = threading.Event()
        first = 3000

        def stream():
            stamp = first
            pub.publish(compressed(stamp, good))
            while not streaming.is_set():
                with contextlib.suppress(AssertionError):
                    harness.message_with_stamp("segmentation/labels", stamp, 0.2)
                    stamp += 1
                    pub.publish(compressed(stamp, good))

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        harness.wait(lambda: first + 5 in harness.stamps("segmentation/labels"),
                     what="five answers while streaming")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        streaming.set()
        streamer.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.thread.join(5)
    assert code == 0, out.text
    for bad in ("Failed to publish", "context is invalid", "Traceback", "processing a frame "
                "failed"):
        assert bad not in out.text, out.text


def seg_node(harness, weights: Path, **params):
    from fcn_perception.ros import nodes

    return make_node(nodes.SegmentationNode, harness, {
        "model": str(weights), "backend": "torch-cpu", "qos_reliability": "reliable",
        **params})



def test_reactivation_keeps_the_subscription_and_answers_at_once(harness, seg_weights):
    """The subscription and publishers live from configure to cleanup: while the node is
    inactive the camera stays matched (no rediscovery after activate) and the outputs stay
    visible; frames taken while inactive are not answered, and the first frame sent after
    each activate is answered (a re-created subscription would have to be discovered
    again first)."""
    from ros_harness import watch_callback

    from fcn_perception.ros.nodes import TransitionCallbackReturn as R

    node = seg_node(harness, seg_weights)
    harness.subscribe("segmentation/labels", Image)
    pub = harness.publisher("image", Image, RELIABLE)
    harness.wait(lambda: pub.get_subscription_count() > 0, what="the node's subscription")
    harness.wait(lambda: node.heads[0].pubs["labels"].get_subscription_count() > 0,
                what="the client's subscription")
    taken = watch_callback(harness, node._input.sub)
    pub.publish(raw_msg(1))
    harness.message_with_stamp("segmentation/labels", 1)
    subscriptions = {id(sub) for sub in node.subscriptions}
    answered, ignored = [1], []
    for cycle in range(4):
        assert node.trigger_deactivate() == R.SUCCESS
        assert pub.get_subscription_count() == 1  # still matched while inactive
        assert harness.client.count_publishers("/segmentation/labels") >= 1
        stamp = 10 * (cycle + 1)
        pub.publish(raw_msg(stamp))  # inactive: taken, not answered
        harness.wait(lambda stamp=stamp: stamp in taken, what=f"the node to take {stamp}")
        ignored.append(stamp)
        assert node.trigger_activate() == R.SUCCESS
        pub.publish(raw_msg(stamp + 1))  # the first frame after activate
        harness.message_with_stamp("segmentation/labels", stamp + 1)
        answered.append(stamp + 1)
        assert {id(sub) for sub in node.subscriptions} == subscriptions  # not recreated
    # one worker, one publisher: an answer to an ignored frame would have come before the
    # answer to the frame after it
    assert harness.stamps("segmentation/labels") == answered, ignored


def test_diagnostics_count_upstream_losses_and_warn_below_expected_rate(harness, seg_weights):
    """Stamps with gaps but no frame lost (the publisher's sequence numbers have none:
    frames never sent are not lost; test_frames_arrive counts real losses) count 0; an
    unreachable expected_rate gives WARN; a raw Image above max_input_pixels is rejected
    unseen."""
    node = seg_node(harness, seg_weights, expected_rate=500.0, max_input_pixels=100_000)
    harness.subscribe("segmentation/labels", Image)
    harness.subscribe("/diagnostics", DiagnosticArray)
    pub = harness.publisher("image", Image, RELIABLE)
    harness.wait(lambda: pub.get_subscription_count() > 0, what="the node's subscription")
    harness.wait(lambda: node.heads[0].pubs["labels"].get_subscription_count() > 0,
                what="the client's subscription")
    big = Image(height=2000, width=2000, step=6000, encoding="rgb8")  # 4 Mpx, 12 bytes
    big.data = bytes(12)
    big.header.stamp.sec = 10**6
    # behind a frame that keeps the worker busy, at the head of the stream: refused on
    # receipt, before the next frame could replace it in the worker's slot (the node
    # answers the newest frame of each camera)
    pub.publish(raw_msg(0))
    pub.publish(big)
    skipped = {8, 9, 10, 17}  # 4 frames "lost on the way"
    t0 = time.monotonic()
    stamp = 0
    while time.monotonic() - t0 < RATE_GRACE_S + 2.5:
        stamp += 1
        if stamp not in skipped:
            msg = raw_msg(0)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp * 100_000_000, 10**9)
            pub.publish(msg)
        time.sleep(max(0.0, t0 + stamp * 0.1 - time.monotonic()))

    def rate_warning(s, v):
        return s.level == DiagnosticStatus.WARN and "below expected_rate 500" in s.message
    status, values = harness.diagnostics("segmentation", rate_warning, timeout=15)
    print(f"\ndiagnostics: {status.message!r}; lost upstream {values['frames_lost_upstream']}, "
          f"camera {values['camera_rate_hz']} Hz, input {values['input_rate_hz']} Hz")
    assert int(values["frames_lost_upstream"]) == 0  # skipped stamps were never sent
    assert int(values["frames_too_large"]) == 1
    assert float(values["camera_rate_hz"]) == pytest.approx(10.0, rel=0.05)
    assert "frame(s) lost before the node" in status.message
    assert 10**6 not in harness.stamps("segmentation/labels")
    assert json.loads(json.dumps(values))  # plain strings: a diagnostics aggregator reads them


def test_node_command_with_corrupt_weights_exits_with_one_line(seg_weights, tmp_path,
                                                               ros_domain):
    """Weights whose sha256 differs from their card: the console command (autostart)
    prints one error line naming the file and the fix and exits 2 (an in-process node
    stays unconfigured instead, for lifecycle managers)."""
    import shutil

    from fcn_perception.card import card_path_for

    bad = tmp_path / "corrupt.safetensors"
    shutil.copyfile(seg_weights, bad)
    shutil.copyfile(card_path_for(seg_weights), card_path_for(bad))
    data = bytearray(bad.read_bytes())
    data[-4096:] = bytes(4096)
    bad.write_bytes(bytes(data))
    proc = start_node("segmentation_node", ["-p", f"model:={bad}", "-p", "backend:=torch-cpu"])
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), out
    for text in ("corrupt.safetensors", "sha256", "allow_modified_weights"):
        assert text in errors[0], out


def test_bag_play_skips_and_counts_undeserialisable_payloads(harness, tmp_path):
    """Malformed payloads in a bag are not forwarded (subscribers' middleware would drop
    them unseen): bag play skips and counts them; the good ones arrive."""
    from rosbags.rosbag2 import Writer

    from fcn_perception.bag import typestore as T
    from fcn_perception.bag.play import play_bag

    store = T.get_typestore()
    bag = tmp_path / "mixed"
    with Writer(bag, version=Writer.VERSION_LATEST) as writer:
        conn = writer.add_connection("/camera/image_raw", T.IMAGE, typestore=store)
        good = bytes(store.serialize_cdr(T.image_msg(FRAME[:8, :8], 1, "camera"), T.IMAGE))
        for i, raw in enumerate([good, good[:40], good, b"\x00\x01\x00\x00" + b"\xff" * 64,
                                 good]):
            writer.write(conn, (i + 1) * 10_000_000, raw)
    harness.subscribe("/camera/image_raw", Image)
    logs = []
    stats = play_bag(bag, reliability="reliable", wait_for_subscribers=1, wait_timeout=60,
                     delay=0.5, log=logs.append)
    assert stats.published == {"/camera/image_raw": 3}
    assert stats.skipped_messages == {"/camera/image_raw": 2}
    assert any("skipping message 1 on /camera/image_raw" in line for line in logs), logs
    harness.wait(lambda: len(harness.received.get("/camera/image_raw", [])) == 3,
                timeout=20, what="the 3 good messages")
