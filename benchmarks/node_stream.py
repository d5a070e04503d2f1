"""Node stream benchmark: a camera at 30 Hz into one ``segmentation_node`` process for 20 s,
the figures the tests do not assert (they depend on the machine): frames answered,
processed and dropped, the node's fps and latency p50/p95 (its diagnostics), and its RSS
over the stream.

    .venv/bin/python benchmarks/node_stream.py [--rate 30] [--seconds 20]
        [--backend torch-cpu] [--weights PATH]

The camera is this process (rclpy, sensor-data QoS, real CamVid frames at 360x480); the
node runs the shipped segmentation model (or ``--weights``) with its default parameters.
Prints the CPU (model, AVX2/AVX-512/VNNI/AMX) and the load average with the numbers.
test/test_ros_nodes.py checks the behaviour (the newest frame answered, every frame
accounted, memory flat against a warm-up) without timing.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import camvid_frames, cpu_line, load_average, rss_mb  # noqa: E402

NODE = "segmentation_node: segmentation"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="stream length")
    parser.add_argument("--backend", default="torch-cpu")
    parser.add_argument("--weights", type=Path, default=None,
                        help="default: the shipped segmentation weights")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(120, 220)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from fcn_perception.card import DEFAULT_WEIGHTS
    from fcn_perception.imaging.encode import encode

    weights = args.weights or DEFAULT_WEIGHTS["segmentation"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    node = subprocess.Popen(
        [str(Path(sys.executable).parent / "segmentation_node"), "--ros-args",
         "-p", f"model:={weights}", "-p", f"backend:={args.backend}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(node.stdout.readline, "")),
                     daemon=True).start()

    rclpy.init()
    client = rclpy.create_node("node_stream_bench")
    answers: list[tuple[int, float]] = []
    diags: list[dict] = []
    client.create_subscription(Image, "segmentation/labels",
                               lambda m: answers.append((m.header.stamp.sec, time.monotonic())),
                               QoSProfile(depth=50))

    def on_diag(arr) -> None:
        for status in arr.status:
            if status.name == NODE:
                diags.append({kv.key: kv.value for kv in status.values})

    client.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=10))
    pub = client.create_publisher(Image, "image", qos_profile_sensor_data)
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while pub.get_subscription_count() < 1:  # the node's subscription has matched
            if node.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the node did not start:\n" + "".join(lines[-30:]))
            time.sleep(0.1)
        msgs = []
        for rgb in camvid_frames(3):
            msg = Image(encoding="rgb8")
            msg.height, msg.width, msg.step, msg.data = encode(rgb, "rgb8")
            msg.header.frame_id = "camera"
            msgs.append(msg)
        stamp = 0
        while not answers:  # warm-up: until the first answer (model loaded, first run done)
            stamp += 1
            msgs[stamp % len(msgs)].header.stamp.sec = stamp
            pub.publish(msgs[stamp % len(msgs)])
            time.sleep(0.2)
        first, period, sent, rss = 100_000, 1.0 / args.rate, 0, []
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            msg = msgs[sent % len(msgs)]
            msg.header.stamp.sec = first + sent
            pub.publish(msg)
            sent += 1
            if sent % max(1, int(args.rate)) == 0:
                rss.append(rss_mb(node.pid))
            time.sleep(max(0.0, t0 + sent * period - time.monotonic()))
        time.sleep(3.0)  # a benchmark may wait: the last answers and a diagnostics message
        got = [s for s, _ in answers if s >= first]
        diag = diags[-1] if diags else {}
    finally:
        node.send_signal(2)
        node.wait(timeout=30)
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
    print(f"cpu: {cpu_line()}; load average {load_average()}")
    print(f"node: segmentation_node, {weights.name}, backend {args.backend}")
    print(f"stream: {sent} frames at {args.rate:g} Hz for {args.seconds:g} s; answered "
          f"{len(got)} ({len(got) / args.seconds:.1f} fps)")
    for key in ("frames_received", "frames_processed", "frames_dropped", "fps",
                "latency_p50_ms", "latency_p95_ms", "inference_p50_ms"):
        print(f"  {key}: {diag.get(key, '?')}")
    if rss:
        print(f"RSS: {rss[0]:.0f} MB after 1 s, {rss[-1]:.0f} MB at the end "
              f"(min {min(rss):.0f}, max {max(rss):.0f}; {len(rss)} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
