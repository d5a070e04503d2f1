"""The in-process ROS 2 test harness shared by the node tests: small random-initialised
models with cards (made by factories.make_weights), message builders, a client node spinning in a thread, and fixtures
(``weights``, ``frames``, ``harness``). Import what a test module uses, fixtures included."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

rclpy = pytest.importorskip("rclpy")

from factories import DET_CLASSES, VENV_BIN, make_weights  # noqa: E402, F401  (re-exported)
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from fcn_perception.evaluation.camvid import CLASSES as _CLASSES  # noqa: E402
from fcn_perception.evaluation.camvid import PALETTE as _PALETTE  # noqa: E402
from fcn_perception.imaging.encode import encode, encode_compressed  # noqa: E402

CLASSES = list(_CLASSES)
PALETTE = [list(p) for p in _PALETTE]

WAIT = 60.0  # generous: the test machine may be busy


# ----------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    return {task: make_weights(folder, task) for task in ("segmentation", "detection")}


@pytest.fixture(scope="module")
def frames(camvid_dir: Path) -> list[np.ndarray]:
    paths = sorted((camvid_dir / "val").glob("*.png"))[:3]
    return [np.asarray(PILImage.open(p).convert("RGB")) for p in paths]


def seg_params(weights, **extra) -> dict:
    return {"model": str(weights["segmentation"]), "backend": "torch-cpu", **extra}


def det_params(weights, **extra) -> dict:
    return {"model": str(weights["detection"]), "backend": "torch-cpu", **extra}


# ----------------------------------------------------------------------------- messages
def image_msg(rgb: np.ndarray, encoding: str, stamp: int, frame_id: str = "camera",
              pad: int = 0, bigendian: bool = False) -> Image:
    h, w, step, data = encode(rgb, encoding, is_bigendian=bigendian, pad=pad)
    msg = Image(height=h, width=w, step=step, encoding=encoding, is_bigendian=int(bigendian))
    msg.data = data
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 1000 * stamp
    return msg


def compressed_msg(rgb: np.ndarray, fmt: str, stamp: int, frame_id: str = "camera",
                   data: bytes | None = None) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = encode_compressed(rgb, fmt) if data is None else data
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 1000 * stamp
    return msg


def as_array(msg: Image) -> np.ndarray:
    channels = {"mono8": 1, "rgb8": 3}[msg.encoding]
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels).squeeze(2) \
        if channels == 1 else rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3)


# ----------------------------------------------------------------------------- harness
class Harness:
    """A client node spun with the node(s) under test in a background executor."""

    def __init__(self, context, namespace: str = "/") -> None:
        self.context = context
        self.client = rclpy.create_node("test_client", namespace=namespace, context=context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=context)
        self.executor.add_node(self.client)
        self.nodes: list = []
        self.received: dict[str, list] = {}
        self.arrivals: dict[str, list[float]] = {}  # time.monotonic() of each received
        self.cond = threading.Condition()
        self.subs: dict[str, object] = {}
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def subscribe(self, topic: str, msg_type, profile=None) -> None:
        def callback(msg, topic=topic):
            with self.cond:
                self.received.setdefault(topic, []).append(msg)
                self.arrivals.setdefault(topic, []).append(time.monotonic())
                self.cond.notify_all()

        self.subs[topic] = self.client.create_subscription(
            msg_type, topic, callback, profile or QoSProfile(depth=50))

    def unsubscribe(self, topic: str) -> None:
        self.client.destroy_subscription(self.subs.pop(topic))

    def publisher(self, topic: str, msg_type, profile=None):
        return self.client.create_publisher(msg_type, topic, profile or QoSProfile(depth=10))

    def wait(self, predicate, timeout: float = WAIT, what: str = "condition"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self.cond.wait(min(left, 0.1))

    def message_with_stamp(self, topic: str, stamp: int, timeout: float = WAIT):
        def find():
            for m in self.received.get(topic, []):
                if m.header.stamp.sec == stamp:
                    return m
            return None
        return self.wait(find, timeout, f"{topic} with stamp {stamp}")

    def stamps(self, topic: str) -> list[int]:
        return [m.header.stamp.sec for m in self.received.get(topic, [])]

    def diagnostics(self, name_part: str, predicate, timeout: float = WAIT):
        """The newest ``/diagnostics`` status whose name holds ``name_part`` and for which
        ``predicate(status, {key: value})`` holds -> ``(status, values)``."""
        def find():
            for arr in reversed(self.received.get("/diagnostics", [])):
                for status in arr.status:
                    if name_part in status.name:
                        values = {kv.key: kv.value for kv in status.values}
                        if predicate(status, values):
                            return status, values
            return None
        return self.wait(find, timeout, f"diagnostics of {name_part}")

    def wait_matched(self, pub, count: int = 1) -> None:
        self.wait(lambda: pub.get_subscription_count() >= count, what="the node's subscription")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self.executor.shutdown(timeout_sec=5)
        self.thread.join(10)
        for node in self.nodes:
            node.destroy_node()
        self.client.destroy_node()


@pytest.fixture
def harness(rclpy_context):
    h = Harness(rclpy_context)
    try:
        yield h
    finally:
        h.close()


def make_node(cls, harness, params: dict, cli_args: list[str] | None = None, **kwargs):
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    node = cls(context=harness.context, parameter_overrides=overrides, cli_args=cli_args,
               **kwargs)
    return harness.add(node)


def wait_outputs_matched(harness, node, keys=None) -> None:
    for head in node.heads:
        for key, pub in head.pubs.items():
            if keys is None or key in keys:
                harness.wait(lambda pub=pub: pub.get_subscription_count() > 0,
                             what=f"a subscriber on {pub.topic_name}")


def watch_callback(harness, subscription) -> list[int]:
    """The header stamps (seconds) of the messages ``subscription``'s own callback has
    finished with, in order: the node's callback still runs, unchanged; the list grows
    (and ``harness.wait`` wakes) after it returns.  Lets a test wait until a node has
    taken a frame it must ignore (an inactive lifecycle node) instead of sleeping."""
    import inspect

    taken: list[int] = []
    inner = subscription.callback
    try:
        inspect.signature(inner).bind(object())
        with_info = False
    except TypeError:
        with_info = True

    def done(msg) -> None:
        with harness.cond:
            taken.append(msg.header.stamp.sec)
            harness.cond.notify_all()

    if with_info:
        def callback(msg, info):
            try:
                inner(msg, info)
            finally:
                done(msg)
    else:
        def callback(msg):
            try:
                inner(msg)
            finally:
                done(msg)
    subscription.callback = callback
    return taken


def header_of(msg) -> tuple:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
