"""Live: bag play -> (segmentation_node, detection_node) -> bag record -> bag eval
--predictions, over DDS on a private ROS domain; and play/record without nodes."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from fcn_perception.bag import typestore as T  # noqa: E402
from fcn_perception.bag.eval import evaluate_bag  # noqa: E402
from fcn_perception.bag.make import make_bag  # noqa: E402
from fcn_perception.bag.play import play_bag  # noqa: E402
from fcn_perception.bag.read import Bag  # noqa: E402
from fcn_perception.bag.record import (  # noqa: E402
    RecordStats,
    StopRules,
    record,
    subscription_qos,
)
from fcn_perception.errors import BagError  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"
BIN = Path(sys.executable).parent


def _split(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"first{n}.txt"
    path.write_text("\n".join((SAMPLE / "val.txt").read_text().splitlines()[:n]) + "\n")
    return path


def _record_in_thread(out, topics, **kwargs):
    stop = threading.Event()
    box = {}

    def run():
        try:
            box["stats"] = record(out, topics, stop=stop, log=lambda s: None, **kwargs)
        except BaseException as exc:  # surfaced by the caller
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, stop, box


def _wait_file(path: Path, timeout: float, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for name, p, log in procs:
            if p.poll() is not None:
                pytest.fail(f"{name} exited with {p.returncode}:\n{Path(log).read_text()[-3000:]}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{Path(lg).read_text()[-2000:]}" for n, _, lg in procs)
            pytest.fail(f"{path.name} did not appear in {timeout:.0f} s\n{logs}")
        time.sleep(0.2)


@pytest.mark.parametrize("src_storage,rec_storage", [("sqlite3", "mcap"), ("mcap", "sqlite3")])
def test_play_and_record_copy_messages_byte_for_byte(ros_domain, tmp_path, src_storage,
                                                     rec_storage):
    src = make_bag(SAMPLE, _split(tmp_path, 3), tmp_path / "src", rate=20.0, compressed=True,
                   storage=src_storage).path
    topics = ["/camera/image_raw", "/camera/image_raw/compressed", "/camera/labels"]
    ready = tmp_path / "ready"
    thread, stop, box = _record_in_thread(tmp_path / "rec", topics, storage=rec_storage,
                                          ready_file=ready, max_messages=6, wait_timeout=60)

    def log(line: str) -> None:  # the player's publisher has matched: wait for the recorder's
        if "subscriber(s)" in line:  # subscriptions to have matched the player's publishers
            _wait_file(ready, 60)

    stats = play_bag(src, loop=True, max_loops=2, wait_for_subscribers=1, log=log)
    assert stats.loops == 2 and stats.published == dict.fromkeys(topics, 6)
    thread.join(30)
    stop.set()
    assert "error" not in box, box.get("error")
    assert box["stats"].stopped_by == "count" and box["stats"].counts == dict.fromkeys(topics, 6)
    assert box["stats"].qos["/camera/labels"] == "reliable"
    with Bag(src) as a, Bag(tmp_path / "rec") as b:
        assert {t: v[0] for t, v in b.topics.items()} == {t: v[0] for t, v in a.topics.items()}
        for topic in topics:
            sent = [bytes(raw) for *_, raw in a.raw_messages([topic])]
            got = [bytes(raw) for *_, raw in b.raw_messages([topic])]
            assert got == sent + sent, topic  # two passes, unchanged bytes and stamps


def test_record_names_missing_publishers(ros_domain, tmp_path):
    with pytest.raises(BagError, match=r"no publisher on \['/nobody'\] after 1 s"):
        record(tmp_path / "rec", ["/nobody"], wait_timeout=1.0, log=lambda s: None)
    assert not (tmp_path / "rec").exists()


def test_record_qos_matches_every_publisher():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.topic_endpoint_info import TopicEndpointInfo

    def pub(reliability, durability):
        return TopicEndpointInfo(qos_profile=QoSProfile(depth=1, reliability=reliability,
                                                        durability=durability))

    reliable_latched = pub(ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)
    best_effort = pub(ReliabilityPolicy.BEST_EFFORT, DurabilityPolicy.VOLATILE)
    assert subscription_qos([reliable_latched]) == ("reliable", True)
    assert subscription_qos([reliable_latched, best_effort]) == ("best_effort", False)
    assert subscription_qos([reliable_latched], "best_effort") == ("best_effort", False)
    assert subscription_qos([best_effort], "reliable") == ("reliable", False)


def test_record_stop_rules():
    stats = RecordStats(Path("x"), counts={"/a": 2, "/b": 5})
    assert StopRules().reason(stats, now=100.0, ready_at=1.0) == ""
    assert StopRules(duration=10).reason(stats, now=100.0, ready_at=None) == ""  # not ready
    assert StopRules(duration=10).reason(stats, now=100.0, ready_at=90.0) == "duration"
    assert StopRules(idle_timeout=3).reason(stats, now=100.0, ready_at=1.0) == ""  # no message
    stats.last_message_at = 98.0
    assert StopRules(idle_timeout=3).reason(stats, now=100.0, ready_at=1.0) == ""
    assert StopRules(idle_timeout=3).reason(stats, now=101.5, ready_at=1.0) == "idle"
    assert StopRules(max_messages=3).reason(stats, now=100.0, ready_at=1.0) == ""
    stats.counts["/a"] = 3
    assert StopRules(max_messages=3).reason(stats, now=100.0, ready_at=1.0) == "count"


def test_play_waits_for_subscribers_then_says_why(ros_domain, tmp_path):
    src = make_bag(SAMPLE, _split(tmp_path, 1), tmp_path / "src").path
    with pytest.raises(BagError, match="0 subscriber"):
        play_bag(src, wait_for_subscribers=1, wait_timeout=1.0, log=lambda s: None)


def _play_once_matched(bag: Path, ready: Path, procs, subscribers: int):
    """``play_bag`` that publishes its first frame only once both sides have matched: the
    player's publisher counts ``subscribers`` matched subscriptions (play_bag waits for
    that) and then -- at the player's "N subscriber(s)" log line -- the recorder has
    written ``ready``, which it does once its own subscription to the camera topic has
    matched the player's publisher (``--wait-for`` names the camera topic).  No sleep:
    a reliable publisher that has matched a reliable subscription delivers every frame
    it publishes afterwards, even to a subscriber whose side of discovery is still
    finishing."""

    def log(line: str) -> None:
        if "subscriber(s)" in line:
            _wait_file(ready, 300, procs)

    return play_bag(bag, topics=["/camera/image_raw"], wait_for_subscribers=subscribers,
                    wait_timeout=300, log=log)


@pytest.mark.slow
def test_live_round_trip_through_the_nodes(ros_domain, tmp_path):
    """play -> segmentation_node + detection_node -> record -> eval --predictions: every
    frame is answered by both nodes and recorded with its input (so every answer has a
    latency), and the recorded answers agree with the same model run offline."""
    from factories import write_random_weights

    from fcn_perception import load_predictor

    frames = 3
    weights = write_random_weights(tmp_path / "w")
    bag = make_bag(SAMPLE, _split(tmp_path, frames), tmp_path / "in", rate=1.0).path
    # reliable input (the player is reliable): no frame lost in transit, and no switch of
    # the subscription's QoS while the player starts (qos_reliability auto would make one)
    common = ["--ros-args", "-r", "image:=/camera/image_raw", "-p", "backend:=torch-cpu",
              "-p", "no_frame_warning_s:=0.0", "-p", "qos_reliability:=reliable"]
    ready = tmp_path / "ready"
    procs = []
    try:
        for name, extra in (("segmentation_node", []),
                            ("detection_node", ["-p", "score_threshold:=0.0"])):
            task = name.split("_")[0]
            log = tmp_path / f"{name}.log"
            cmd = [str(BIN / name), *common, "-p", f"model:={weights[task]}", *extra]
            procs.append((name, subprocess.Popen(cmd, stdout=open(log, "w"),
                                                 stderr=subprocess.STDOUT), log))
        rec_log = tmp_path / "record.log"
        recorder = subprocess.Popen(
            [str(BIN / "fcn-perception"), "bag", "record", "/segmentation/labels", "/detections",
             "/camera/image_raw", "/diagnostics", "--wait-for", "/segmentation/labels", "/detections",
             "/camera/image_raw", "--out", str(tmp_path / "rec"), "--ready-file", str(ready),
             "--wait-timeout", "300", "--idle-timeout", "15"],
            stdout=open(rec_log, "w"), stderr=subprocess.STDOUT)
        procs.append(("bag record", recorder, rec_log))
        # three subscriptions on the camera topic: both nodes and the recorder
        stats = _play_once_matched(bag, ready, procs, subscribers=3)
        assert stats.published == {"/camera/image_raw": frames}
        recorder.wait(timeout=180)
        assert recorder.returncode == 0, rec_log.read_text()
    finally:
        for _, p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for _, p, _ in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    seg = load_predictor("segmentation", backend="torch-cpu", weights=weights["segmentation"])
    det = load_predictor("detection", backend="torch-cpu", weights=weights["detection"])
    result = evaluate_bag(bag, tmp_path / "m.json", tmp_path / "report",
                          predictions=tmp_path / "rec", seg_card=seg.card, det_card=det.card,
                          progress=False, log=lambda s: None)
    fr = result["frames"]
    assert fr["scored"] == frames
    logs = "\n".join(f"--- {n}\n{Path(lg).read_text()[-2000:]}" for n, _, lg in procs)
    for task in ("segmentation", "detection"):
        # a busy node drops a frame that waited while a newer one arrived (newest-frame
        # policy); every answer has its input recorded, hence a latency
        assert fr[f"{task}_answered"] + fr[f"{task}_dropped"] == frames, (task, fr, logs)
        assert result["latency_ms"][task]["frames"] == fr[f"{task}_answered"], (
            task, result["latency_ms"], fr)
    assert result["unmatched_predictions"] == 0
    assert Path(result["report"]).is_file()
    # the nodes' diagnostics, recorded with the outputs, name where each model ran
    for task in ("segmentation", "detection"):
        assert {k: result["models"][task][k] for k in ("backend", "device")} == {
            "backend": "torch-cpu", "device": "cpu"}, result["models"]
    assert "torch-cpu (cpu, fp32)" in Path(result["report"]).read_text()

    with Bag(bag) as src, Bag(tmp_path / "rec") as rec:
        assert rec.topics["/camera/image_raw"][1] == frames
        images = {m.stamp_ns: src.decode_image(m) for m in src.messages(["/camera/image_raw"])}
        first, last = min(images), max(images)
        for topic in ("/segmentation/labels", "/detections"):
            # the first frame finds the node idle and the newest is never dropped: both are
            # answered by each node whatever the machine's speed
            stamps = {m.stamp_ns for m in rec.messages([topic])}
            assert {first, last} <= stamps, (topic, sorted(stamps), sorted(images), logs)
        answered = 0
        for m in rec.messages(["/segmentation/labels"]):
            expected = seg(images[m.stamp_ns]).labels
            agree = float((rec.decode_label(m) == expected).mean())
            assert agree > 0.99, agree  # same model; only float noise may differ
            answered += 1
        assert answered == fr["segmentation_answered"]
        for m in rec.messages(["/detections"]):
            assert m.stamp_ns in images
            boxes, scores, ids = T.detections_from_msg(m.msg)
            assert len(boxes) == len(det(images[m.stamp_ns]))
            assert np.all((ids >= 0) & (ids < 3)) and np.all(scores >= 0)
    env_domain = os.environ["ROS_DOMAIN_ID"]
    assert env_domain == str(ros_domain)
