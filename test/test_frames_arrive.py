"""Frames that arrive (issue 21): real camera resolutions over DDS, losses told
truthfully, memory bounded for any accepted frame.

The DDS cases run a real camera as a separate process (benchmarks/transport.py camera:
CamVid frames at 720x1280 rgb8, 2 Hz, its true count printed) and a node process, with
and without config/fastdds.xml, at the node's default parameters (small models so that
the node keeps up on a busy CPU)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import ros_harness
from factories import ROOT, OutputReader, rss_mb, start_node
from PIL import Image as PILImage
from ros_harness import WAIT, compressed_msg, image_msg, make_node

from fcn_perception.inference.geometry import MAX_NETWORK_PIXELS, Geometry
from fcn_perception.ros.input_gaps import (
    LOSS_WARN_FRACTION,
    SEQUENCE_UNSUPPORTED,
    StampGaps,
    loss_hint,
)
from fcn_perception.ros.params import roi_problem

PROFILE = ROOT / "config" / "fastdds.xml"
CAMERA = ROOT / "benchmarks" / "transport.py"
HD = "720x1280"

# the shared fixtures of test/ros_harness.py
weights, frames, harness = ros_harness.weights, ros_harness.frames, ros_harness.harness


# ============================================================ ROS-free parts
def test_sequence_numbers_count_every_lost_frame_whatever_the_gap():
    """5 of 675 frames arriving (the issue's 720x1280 case): 670 lost, however long the
    gaps between them; a new publisher or a sequence going backwards is a restart."""
    clock = [0.0]
    gaps = StampGaps(now=lambda: clock[0])
    arrived = [1, 130, 300, 520, 675]
    for seq in arrived:
        clock[0] = seq / 15.0  # 15 Hz: gaps of 9 to 15 s
        gaps.add(int(seq / 15.0 * 1e9), seq, b"camera")
    assert gaps.lost == 675 - len(arrived) and gaps.gaps == 4
    gaps.add(int(clock[0] * 1e9) + 1, 1, b"camera")  # the camera restarted
    assert gaps.resets == 1 and gaps.lost == 670
    assert gaps.add(int(clock[0] * 1e9) + 2, 3, b"camera") == 1
    assert gaps.add(10**18, 7, b"stray") == 0  # another participant: not the camera's gap
    assert gaps.publisher_changes == 1 and gaps.lost == 671
    assert gaps.add(int(clock[0] * 1e9) + 3, 4, b"camera") == 0  # 3 -> 4 after the stray


def test_a_frame_delivered_twice_or_late_is_counted_once_and_not_lost():
    """While ``auto`` QoS replaces a subscription, the old and the new one deliver the
    same frames, in either order: a frame seen is recognised, a late one is not lost."""
    gaps = StampGaps(now=lambda: 0.0)
    for seq in (1, 2, 3):
        gaps.add(None, seq, b"c")
    assert gaps.add(None, 5, b"c") == 1 and gaps.lost == 1  # the new one's first, before 4
    assert gaps.seen(5, b"c") and gaps.seen(3, b"c") and not gaps.seen(4, b"c")
    assert gaps.add(None, 4, b"c") == 0  # the old one's 4, late
    assert gaps.lost == 0 and gaps.resets == 0 and gaps.out_of_order == 1
    assert gaps.seen(4, b"c") and not gaps.seen(4, b"other")
    assert gaps.add(None, 6, b"c") == 0 and gaps.lost == 0
    assert not gaps.seen(None, b"c") and not gaps.seen(SEQUENCE_UNSUPPORTED, b"c")


def test_stamps_count_long_gaps_and_a_stamp_going_backwards_restarts():
    """Without sequence numbers (other RMWs): the period from the stamps; a 10 s gap at
    30 Hz is 299 lost frames (not a restart); a stamp going back restarts the count."""
    gaps = StampGaps(now=lambda: 0.0)
    period = 33_333_333
    for i in range(10):
        gaps.add(i * period, SEQUENCE_UNSUPPORTED)
    assert gaps.add(309 * period) == 299 and gaps.lost == 299
    assert gaps.camera_rate() == pytest.approx(30.0, rel=1e-3)
    assert gaps.add(5 * period) == 0 and gaps.resets == 1  # a bag played again
    for i in range(6, 12):
        gaps.add(i * period)
    assert gaps.lost == 299
    assert gaps.add(14 * period) == 2 and gaps.lost == 301


def test_loss_fraction_over_the_window_and_the_hint():
    clock = [0.0]
    gaps = StampGaps(now=lambda: clock[0])
    for seq in range(1, 21):  # 20 frames, none lost
        clock[0] += 0.5
        gaps.add(None, seq, b"c")
    assert gaps.loss_fraction() == 0.0
    clock[0] += 0.5
    gaps.add(None, 23, b"c")  # 2 lost of the window's 23
    assert gaps.window() == (21, 2)
    assert gaps.loss_fraction() > LOSS_WARN_FRACTION
    clock[0] += 60.0
    gaps.add(None, 24, b"c")
    assert gaps.loss_fraction() == 0.0  # the loss left the window
    big = 720 * 1280 * 3
    assert "512 KiB" in loss_hint(big, "best_effort", ["best_effort"])
    assert "fastdds.xml" in loss_hint(big, "best_effort", ["best_effort"])
    assert "qos_reliability:=auto" in loss_hint(big, "best_effort", ["reliable"])
    assert "qos_depth" in loss_hint(big, "reliable", ["reliable"])
    assert "2.76 MB" in loss_hint(big, "best_effort", ["best_effort"])
    assert "2.76 MB" not in loss_hint(16 * 16 * 3, "best_effort", ["best_effort"])
    assert "at the same instant" in loss_hint(16 * 16 * 3, "best_effort", [])


def test_native_size_networks_are_capped_and_map_back():
    g = Geometry()
    p = g.place((4000, 4000))
    h, w = p.net_hw
    assert h * w <= MAX_NETWORK_PIXELS and abs(h - w) <= 1 and p.prescale
    assert p.whole_frame  # the outputs map back to the whole frame
    frame = np.zeros((4000, 4000, 3), np.uint8)
    frame[:2000] = 200  # top half bright
    img, net_hw = p.network_image(frame)
    assert img.shape[:2] == net_hw == (h, w) and img.dtype == np.uint8
    assert img[: h // 2 - 2].min() == 200 and img[h // 2 + 2:].max() == 0
    box = p.boxes_to_input(np.array([[0, 0, w, h]], np.float32))
    np.testing.assert_allclose(box[0], [0, 0, 4000, 4000], atol=1e-3)
    assert not Geometry().place((1080, 1920)).prescale  # 1080p runs at its own size
    small = Geometry(max_pixels=100 * 100).place((400, 800))
    assert small.net_hw == (70, 141) and small.prescale


def test_roi_outside_the_last_frame_is_refused():
    values = {"roi_x": 0, "roi_y": 0, "roi_width": 0, "roi_height": 0}
    reason = roi_problem(values.get, "roi_x", 60000, [(360, 480)])
    assert reason and "480x360" in reason and "roi_x=60000" in reason
    assert roi_problem(values.get, "roi_x", 100, [(360, 480)]) is None
    assert roi_problem(values.get, "roi_x", 60000, []) is None  # no frame seen yet


# ============================================================ in-process node
def test_runtime_roi_outside_the_frame_is_rejected_when_set(harness, weights, frames):
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from fcn_perception.ros import nodes

    node = make_node(nodes.SegmentationNode, harness,
                     {"model": str(weights["segmentation"]), "backend": "torch-cpu"})
    harness.subscribe("segmentation/labels", Image)
    pub = harness.publisher("image", Image, QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE))
    harness.wait_matched(pub)
    harness.wait(lambda: node.heads[0].pubs["labels"].get_subscription_count() > 0)
    for stamp in range(1, 200):
        pub.publish(image_msg(frames[0], "rgb8", stamp))
        try:
            harness.message_with_stamp("segmentation/labels", stamp, 1.0)
            break
        except AssertionError:
            continue
    result = node.set_parameters([Parameter("roi_x", value=60000)])[0]
    assert not result.successful and "480x360" in result.reason, result.reason
    assert node.get_parameter("roi_x").value == 0
    assert node.set_parameters([Parameter("roi_x", value=100)])[0].successful
    pub.publish(image_msg(frames[1], "rgb8", 500))
    labels = harness.message_with_stamp("segmentation/labels", 500)
    assert (labels.height, labels.width) == (360, 480)


def test_auto_reliability_follows_the_publishers(harness, weights):
    from builtin_interfaces.msg import Time
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from fcn_perception.ros import nodes

    node = make_node(nodes.SegmentationNode, harness,
                     {"model": str(weights["segmentation"]), "backend": "torch-cpu"})
    camera = node._input.cameras[0]
    assert node.get_parameter("qos_reliability").value == "auto"
    reliable = harness.publisher("image", Image, QoSProfile(
        depth=5, reliability=ReliabilityPolicy.RELIABLE))
    harness.wait(lambda: camera.reliability == "reliable", what="a reliable subscription")
    assert "reliable" in node._input.description
    # re-created from a timer: no QoS event handlers, which rclpy's multi-threaded
    # executor would touch after their destruction (InvalidHandle in its spin thread)
    assert camera.sub.event_handlers == []
    harness.client.destroy_publisher(reliable)
    best_effort = harness.publisher("image", Image, qos_profile_sensor_data)
    harness.wait(lambda: camera.reliability == "best_effort" and
                 best_effort.get_subscription_count() > 0, what="a best-effort subscription")
    harness.client.destroy_publisher(best_effort)
    # make before break: streaming while the subscription turns reliable, every frame
    # is taken once (the old subscription stays until the new one has matched, and the
    # frames both deliver meanwhile are recognised by their sequence numbers). In one
    # process the new subscription matches at once; the gap the old order left (destroy,
    # then subscribe) shows across processes, where discovery takes time.
    harness.wait(lambda: camera.retiring is None, what="the replaced subscription destroyed")
    stats = node._input.stats
    pub = harness.publisher("image", Image, QoSProfile(
        depth=100, reliability=ReliabilityPolicy.RELIABLE))
    stamp = [0]

    def send():
        stamp[0] += 1
        pub.publish(Image(height=2, width=2, step=6, encoding="rgb8", data=bytes(12),
                          header=Header(stamp=Time(nanosec=stamp[0] * 1000))))

    harness.wait(lambda: pub.get_subscription_count() > 0 and camera.retiring is None
                 and camera.sub.get_publisher_count() > 0,
                 what="the best-effort subscription and the publisher matched, both ways")
    assert camera.reliability == "best_effort"
    base, lost, sent, switched = stats.counts["received"], camera.gaps.lost, 0, None
    while switched is None or sent < switched + 50:
        send()
        sent += 1
        if switched is None and camera.reliability == "reliable" and camera.retiring is None:
            switched = sent  # the old subscription is gone
        threading.Event().wait(0.005)  # pacing the stream (200 Hz), not waiting for a result
        assert sent < 5000, "the subscription did not turn reliable"
    harness.wait(lambda: stats.counts["received"] - base >= sent,
                 what=f"all {sent} frames sent across the switch")
    assert stats.counts["received"] - base == sent and camera.gaps.lost == lost
    fixed = make_node(nodes.SegmentationNode, harness, {
        "model": str(weights["segmentation"]), "backend": "torch-cpu",
        "qos_reliability": "reliable"}, cli_args=["--ros-args", "-r", "__node:=fixed"])
    assert fixed._input.cameras[0].reliability == "reliable" and fixed._input._qos_timer is None
    assert fixed._input.cameras[0].sub.event_handlers  # warns about incompatible publishers


# ============================================================ camera and node processes
def camera(topic: str, qos: str, profile: bool, count: int = 20, size: str = HD,
           bracket: bool = True) -> subprocess.Popen:
    """The camera process (separate DDS participant), waiting for a line to start."""
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTDDS_DEFAULT_PROFILES_FILE", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    cmd = [sys.executable, str(CAMERA), "camera", "--topics", topic, "--size", size,
           "--rate", "2", "--count", str(count), "--qos", qos, "--wait-go"]
    return subprocess.Popen(cmd + (["--bracket"] if bracket else []), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def run_camera(harness, proc: subprocess.Popen, qos: str) -> list[int]:
    """Start the camera once the node's subscription has the reliability it offers (a
    diagnostics report sent after the camera matched says so); the stamps it sent."""
    assert proc.stdout.readline().strip() == "ready"
    seen = len(harness.received.get("/diagnostics", []))

    def node_follows():
        for arr in harness.received.get("/diagnostics", [])[seen:]:
            for status in arr.status:
                values = {kv.key: kv.value for kv in status.values}
                if f"auto: {qos}" in values.get("input", ""):
                    return True
        return False
    harness.wait(node_follows, what=f"the node's subscription to follow a {qos} camera")
    proc.stdin.write("go\n")
    proc.stdin.flush()
    sent = json.loads(proc.stdout.readline())
    proc.wait(30)
    return sent["stamps"]


def ns_stamps(harness, topic: str) -> set[int]:
    return {m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
            for m in harness.received.get(topic, [])}


def node_process(harness, weights, profile: bool, monkeypatch):
    """segmentation_node as a process (with config/fastdds.xml when ``profile``), once it
    listens, and the harness subscribed to its labels and diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)} if profile else None
    proc = start_node("segmentation_node", [
        "-p", f"model:={weights['segmentation']}", "-p", "backend:=torch-cpu"], env)
    out = OutputReader(proc, WAIT)
    try:
        harness.subscribe("segmentation/labels", Image)
        harness.subscribe("/diagnostics", DiagnosticArray)
        out.wait_for("listening on /image", timeout=180)
    except BaseException:
        stop(proc)
        raise
    return proc, out


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def answered(harness, stamps: list[int], at_least: float, what: str) -> int:
    """Wait until ``at_least`` of the camera's frames were answered."""
    want = int(np.ceil(at_least * len(stamps)))

    def enough():
        return len(ns_stamps(harness, "segmentation/labels") & set(stamps)) >= want
    try:
        harness.wait(enough, what=what)
    except AssertionError:
        pass
    return len(ns_stamps(harness, "segmentation/labels") & set(stamps))


def test_720p_without_profile_reliable_arrives_best_effort_warns(harness, weights,
                                                                  monkeypatch):
    """No profile anywhere: a reliable 720x1280 camera at 2 Hz gets >= 95% answered with
    the default parameters (qos_reliability auto takes reliable); a best-effort one loses
    its large frames in the 512 KiB shared-memory segment, and the node counts every one
    of them (the camera's true count) and goes WARN with the cause."""
    from diagnostic_msgs.msg import DiagnosticStatus

    node, out = node_process(harness, weights, False, monkeypatch)
    try:
        stamps = run_camera(harness, camera("/image", "reliable", False), "reliable")
        got = answered(harness, stamps, 0.95, "answers to the reliable camera")
        print(f"\nreliable 720x1280, no profile: {got} of {len(stamps)} answered")
        assert got >= 0.95 * len(stamps)

        before = harness.diagnostics("segmentation", lambda s, v: True)[1]
        stamps = run_camera(harness, camera("/image", "best_effort", False), "best_effort")
        received = int(before["frames_received"])
        lost_before = int(before["frames_lost_upstream"])

        def counted(status, values):  # every frame sent is received or counted lost
            return (int(values["frames_received"]) - received
                    + int(values["frames_lost_upstream"]) - lost_before) >= len(stamps)
        status, values = harness.diagnostics("segmentation", counted)
        got_be = int(values["frames_received"]) - received
        lost = int(values["frames_lost_upstream"]) - lost_before
        print(f"best effort 720x1280, no profile: {len(stamps)} sent, {got_be} received, "
              f"{lost} counted lost")
        assert got_be + lost == len(stamps)  # the true count, no more
        assert lost > LOSS_WARN_FRACTION * len(stamps)

        def warns(s, v):
            return s.level == DiagnosticStatus.WARN and "lost before the node" in s.message
        status, _ = harness.diagnostics("segmentation", warns)
        assert "512 KiB" in status.message and "fastdds.xml" in status.message
        assert "512 KiB" in out.wait_for("lost before the node on /image")
    finally:
        stop(node)


def test_720p_best_effort_with_the_profile_arrives(harness, weights, monkeypatch):
    """config/fastdds.xml loaded by the camera and the node: a best-effort 720x1280
    camera at 2 Hz gets >= 95% answered, nothing counted lost."""
    node, out = node_process(harness, weights, True, monkeypatch)
    try:
        stamps = run_camera(harness, camera("/image", "best_effort", True), "best_effort")
        got = answered(harness, stamps, 0.95, "answers to the best-effort camera")
        _, values = harness.diagnostics(
            "segmentation", lambda s, v: int(v["frames_received"]) >= got)
        print(f"\nbest effort 720x1280, profile: {got} of {len(stamps)} answered, "
              f"{values['frames_lost_upstream']} lost upstream")
        assert got >= 0.95 * len(stamps)
        assert int(values["frames_lost_upstream"]) == 0
    finally:
        stop(node)


def test_4000x4000_png_costs_under_500_mb_and_the_next_frame_is_answered(
        harness, frames, monkeypatch):
    """The shipped model at the node's defaults (native size, capped by
    max_network_pixels): a 4000x4000 PNG raises the node's RSS by < 500 MB over its
    warm baseline, is answered at its resolution, and so is the next frame."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    # reliable from the start: with auto, a frame sent while the subscription is still
    # best effort (its first second) goes through UDP fragments without the profile
    proc = start_node("segmentation_node", ["-p", "input_transport:=compressed",
                                            "-p", "qos_reliability:=reliable"])
    out = OutputReader(proc, WAIT)
    big = np.asarray(PILImage.fromarray(frames[0]).resize((4000, 4000), PILImage.NEAREST))
    buf = io.BytesIO()
    PILImage.fromarray(big).save(buf, "PNG")
    samples: list[float] = []
    stop_sampling = threading.Event()
    try:
        harness.subscribe("segmentation/labels", Image)
        pub = harness.publisher("image/compressed", CompressedImage,
                                QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        out.wait_for("listening on /image/compressed", timeout=300)
        harness.wait_matched(pub)
        for stamp in range(1, 400):  # warm up until answered (discovery, first runs)
            pub.publish(compressed_msg(frames[stamp % 3], "jpeg", stamp))
            try:
                harness.message_with_stamp("segmentation/labels", stamp, 2.0)
                if stamp >= 3:
                    break
            except AssertionError:
                continue
        base = rss_mb(proc.pid)

        def sample():
            while not stop_sampling.is_set():
                samples.append(rss_mb(proc.pid))
                stop_sampling.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        pub.publish(compressed_msg(big, "png", 1000, data=buf.getvalue()))
        labels = harness.message_with_stamp("segmentation/labels", 1000, timeout=120)
        pub.publish(compressed_msg(frames[1], "jpeg", 1001))
        harness.message_with_stamp("segmentation/labels", 1001)
        stop_sampling.set()
        sampler.join()
        growth = max(samples) - base
        print(f"\n4000x4000 PNG ({len(buf.getvalue())} bytes): node RSS {base:.0f} MB warm, "
              f"peak {max(samples):.0f} MB (+{growth:.0f} MB)")
        assert (labels.height, labels.width) == (4000, 4000)
        assert growth < 500, samples
    finally:
        stop_sampling.set()
        stop(proc)


def test_readme_transport_table_is_the_benchmarks():
    """The README's transport table is docs/bench_transport.md's, as benchmarks/
    transport.py wrote it (no number typed by hand)."""
    doc = (ROOT / "docs" / "bench_transport.md").read_text().splitlines()
    rows = [line for line in doc if line.startswith("|")]
    assert len(rows) >= 14 and any("720x1280" in r for r in rows)
    readme = (ROOT / "README.md").read_text()
    assert "\n".join(rows) in readme
