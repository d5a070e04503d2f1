"""Multi-camera scheduling without ROS: latest frame per camera, fair round-robin batches,
the worker thread, output namespaces."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from factories import wait_until

from fcn_perception.ros.multi_camera import (
    BatchWorker,
    CameraSlots,
    join_topic,
    output_namespaces,
    topic_namespace,
)


def test_latest_frame_per_camera_and_drops_counted():
    slots = CameraSlots(3)
    assert not slots.put(0, "a0")
    assert slots.put(0, "a1")  # replaced a0
    assert not slots.put(2, "c0")
    batch = slots.take_batch()
    assert [(f.camera, f.item) for f in batch] == [(0, "a1"), (2, "c0")]
    assert slots.dropped == [1, 0, 0] and slots.served == [1, 0, 1]
    assert slots.take_batch(timeout=0.01) == []


def test_round_robin_continues_after_the_last_camera_served():
    slots = CameraSlots(4)
    for cam in range(4):
        slots.put(cam, cam)
    assert [f.camera for f in slots.take_batch(2)] == [0, 1]
    for cam in range(4):
        slots.put(cam, cam)
    assert [f.camera for f in slots.take_batch(2)] == [2, 3]
    assert [f.camera for f in slots.take_batch(2)] == [0, 1]


@pytest.mark.parametrize("cameras,max_batch", [(2, 1), (3, 1), (4, 2), (5, 2), (8, 3)])
def test_no_camera_starves_whatever_the_rates(cameras, max_batch):
    """Random arrival patterns with one camera flooding: a camera with a waiting frame is
    served within ceil(cameras / max_batch) batches."""
    rng = np.random.default_rng(cameras * 10 + max_batch)
    slots = CameraSlots(cameras)
    bound = math.ceil(cameras / max_batch)
    waiting_since: dict[int, int] = {}
    for step in range(2000):
        slots.put(0, step)  # camera 0 publishes before every batch
        waiting_since.setdefault(0, step)
        for cam in range(1, cameras):
            if rng.random() < 0.3:
                slots.put(cam, step)
                waiting_since.setdefault(cam, step)
        for frame in slots.take_batch(max_batch):
            assert step - waiting_since.pop(frame.camera) < bound, (frame.camera, step)
        assert all(step - s < bound for s in waiting_since.values())


def test_batch_worker_processes_every_camera_and_survives_errors():
    seen, errors = [], []
    done = threading.Event()

    def process(batch):
        if any(f.item == "bad" for f in batch):
            raise RuntimeError("bad frame")
        seen.extend((f.camera, f.item) for f in batch)
        if len(seen) >= 3:
            done.set()

    worker = BatchWorker(3, process, errors.append).start()
    worker.submit(1, "bad")
    wait_until(lambda: errors, what="the bad frame's error")  # processed, not replaced
    for cam in range(3):
        worker.submit(cam, f"f{cam}")
    assert done.wait(60.0)
    assert sorted(seen) == [(0, "f0"), (1, "f1"), (2, "f2")]
    assert len(errors) == 1 and "bad frame" in str(errors[0])
    assert worker.stop(2.0)


def test_single_camera_takes_no_extra_latency():
    """The worker does not wait for a batch to fill: one camera's frame goes alone, while
    the other three cameras have sent nothing."""
    batches = []
    got = threading.Event()

    def process(batch):
        batches.append([(f.camera, f.item) for f in batch])
        got.set()

    worker = BatchWorker(4, process).start()
    worker.submit(2, "x")
    assert got.wait(60.0)
    assert batches == [[(2, "x")]]
    worker.stop()


def test_output_namespaces():
    assert topic_namespace("/cam1/image_raw") == "/cam1"
    assert topic_namespace("/image") == "/"
    assert topic_namespace("/robot/front/image_raw") == "/robot/front"
    assert output_namespaces(["/cam1/image_raw", "/cam2/image_raw", "/cam3/image"]) == [
        "/cam1", "/cam2", "/cam3"]
    assert join_topic("/cam1", "segmentation/labels") == "/cam1/segmentation/labels"
    assert join_topic("/", "detections") == "/detections"
    with pytest.raises(ValueError, match="same namespace /cam"):
        output_namespaces(["/cam/left", "/cam/right"])
    with pytest.raises(ValueError, match="twice"):
        output_namespaces(["/a/image", "/a/image"])
