"""Transport benchmark: camera frames over DDS into a node, with and without the package's
Fast DDS profile (config/fastdds.xml).

    python benchmarks/transport.py                 # the table -> docs/bench_transport.md
    python benchmarks/transport.py --quick         # fewer rows
    python benchmarks/transport.py camera --topics /cam1/image_raw --size 720x1280 \\
        --rate 2 --count 20 --qos best_effort      # only the camera process

A *camera* is a separate process (``camera`` below) that publishes real CamVid frames,
resized to the frame size, on ``/camK/image_raw`` (several cameras from one process at
the same instant, as one driver serving several cameras does), stamped with the wall
clock.  The *node* is one ``segmentation_node`` process on ``/cam1..3/image_raw``
(``image_topics``) with its default parameters (the shipped model, ``qos_reliability``
auto).  Each row sets frame size x rate x cameras x the camera's QoS x profile on/off
(the profile loaded by the camera and the node alike: ``FASTDDS_DEFAULT_PROFILES_FILE``)
and prints: frames sent, received by the node (its diagnostics), answered (labels
received here), lost before the node as the node's diagnostics count them, whether they
went WARN, latency from the stamp to the labels' receipt p50/p95, and the node's peak RSS.
This process (the listener) always loads the profile; it subscribes reliably, so the
outputs reach it either way.  A benchmark, not a test: it records the CPU and load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, camvid_frames, cpu_line, rss_mb  # noqa: E402

PROFILE = ROOT / "config" / "fastdds.xml"
TOPICS = [f"/cam{i}/image_raw" for i in (1, 2, 3)]
SIZES = {"360x480": (360, 480), "720x1280": (720, 1280), "1080x1920": (1080, 1920)}


# ---------------------------------------------------------------------------- camera
def resized_frames(size: tuple[int, int], count: int = 4) -> list[np.ndarray]:
    """Real CamVid frames resized to ``size`` (height, width)."""
    import cv2

    return [cv2.resize(f, size[::-1], interpolation=cv2.INTER_LINEAR)
            for f in camvid_frames(count)]


def camera_main(argv: list[str]) -> int:
    """One camera process: prints ``ready`` once every topic has a subscriber, waits for
    a line on stdin when ``--wait-go``, publishes ``--count`` frames per topic at
    ``--rate`` (all topics at the same instant) and prints ``{"sent": N, ...}``.
    ``--bracket``: also a 16x16 frame before and after them on each topic (a small frame
    always arrives, so a node can count every large one lost in between)."""
    ap = argparse.ArgumentParser(prog="transport.py camera")
    ap.add_argument("--topics", nargs="+", default=TOPICS[:1])
    ap.add_argument("--size", default="720x1280")
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--qos", choices=("best_effort", "reliable"), default="best_effort")
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--wait-go", action="store_true")
    ap.add_argument("--bracket", action="store_true")
    args = ap.parse_args(argv)
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    h, w = (int(v) for v in args.size.split("x"))
    rclpy.init()
    node = rclpy.create_node("transport_camera")
    profile = QoSProfile(depth=args.depth, reliability=ReliabilityPolicy.RELIABLE
                         if args.qos == "reliable" else ReliabilityPolicy.BEST_EFFORT)
    pubs = [node.create_publisher(Image, t, profile) for t in args.topics]

    def message(rgb: np.ndarray) -> Image:
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], step=3 * rgb.shape[1],
                    encoding="rgb8")
        msg.data = rgb.tobytes()
        msg.header.frame_id = "camera"
        return msg

    frames = [message(f) for f in resized_frames((h, w))]
    small = message(np.full((16, 16, 3), 128, np.uint8))
    while not all(p.get_subscription_count() > 0 for p in pubs):
        time.sleep(0.05)
    print("ready", flush=True)
    if args.wait_go:
        sys.stdin.readline()

    def publish(msg: Image) -> int:
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        for pub in pubs:
            pub.publish(msg)
        return stamp

    stamps = []
    if args.bracket:
        stamps.append(publish(small))
        time.sleep(1.0 / args.rate)
    t0 = time.monotonic()
    for i in range(args.count):
        stamps.append(publish(frames[i % len(frames)]))
        time.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
    if args.bracket:
        stamps.append(publish(small))
    time.sleep(1.0)  # reliable: give the last samples time to be acknowledged
    print(json.dumps({"sent": len(stamps), "large": args.count, "stamps": stamps}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def start_camera(topics, size: str, rate: float, count: int, qos: str, profile: bool,
                 bracket: bool = False) -> subprocess.Popen:
    """The camera as its own process (``--wait-go``: send a line on its stdin to start)."""
    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    cmd = [sys.executable, str(Path(__file__).resolve()), "camera", "--topics", *topics,
           "--size", size, "--rate", str(rate), "--count", str(count), "--qos", qos,
           "--wait-go"] + (["--bracket"] if bracket else [])
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


# ---------------------------------------------------------------------------- benchmark
class Listener:
    """Labels of every camera and the node's diagnostics, in this process."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        rclpy.init()
        self.node = rclpy.create_node("transport_listener")
        self.lock = threading.Lock()
        self.answers: dict[str, dict[int, float]] = {t: {} for t in TOPICS}
        self.diag: dict = {}
        self.levels: list[tuple[float, int, str]] = []
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for topic in TOPICS:
            out = topic.rsplit("/", 1)[0] + "/segmentation/labels"
            self.node.create_subscription(
                Image, out, lambda m, t=topic: self._answer(t, m), reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics,
                                      QoSProfile(depth=20))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _answer(self, topic: str, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.answers[topic][stamp] = time.time()

    def _diagnostics(self, arr) -> None:
        for status in arr.status:
            if "segmentation" in status.name:
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in status.values}
                    self.levels.append((time.monotonic(), int.from_bytes(status.level, "little")
                                        if isinstance(status.level, bytes) else int(status.level),
                                        status.message))

    def counters(self, cam: int) -> dict[str, int]:
        with self.lock:
            d = dict(self.diag)
        return {k: int(float(d.get(f"cam{cam}/{k}", 0) or 0))
                for k in ("frames_received", "frames_lost_upstream")}


def run_row(listener: Listener, node_pid: int, size: str, rate: float, cameras: int,
            qos: str, profile: bool, seconds: float) -> dict:
    count = max(2, int(round(rate * seconds)))
    before = [listener.counters(c + 1) for c in range(cameras)]
    cam = start_camera(TOPICS[:cameras], size, rate, count, qos, profile, bracket=True)
    assert cam.stdout.readline().strip() == "ready"
    time.sleep(2.5)  # the node's auto QoS follows the camera's (rechecked every second)
    peak = [rss_mb(node_pid)]
    cam.stdin.write("go\n")
    cam.stdin.flush()
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(node_pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = json.loads(cam.stdout.readline())
    t_end = time.monotonic()  # from here the 10 s loss window holds this row's frames only
    cam.wait(30)
    time.sleep(3.0)  # the last answers and one more diagnostics report
    done.set()
    sampler.join()
    stamps = set(result["stamps"])
    after = [listener.counters(c + 1) for c in range(cameras)]
    with listener.lock:
        answered = [{s: t for s, t in listener.answers[TOPICS[c]].items() if s in stamps}
                    for c in range(cameras)]
        warned = any(level == 1 and t >= t_end and "lost before the node" in text
                     for t, level, text in listener.levels)
    latencies = [1e3 * (t - s / 1e9) for a in answered for s, t in a.items()]
    p50, p95 = (np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2)
    return {"size": size, "rate": rate, "cameras": cameras, "qos": qos,
            "profile": "on" if profile else "off", "sent": len(stamps) * cameras,
            "received": sum(a["frames_received"] - b["frames_received"]
                            for a, b in zip(after, before)),
            "answered": sum(len(a) for a in answered),
            "lost_diag": sum(a["frames_lost_upstream"] - b["frames_lost_upstream"]
                             for a, b in zip(after, before)),
            "warn": warned, "p50_ms": float(p50), "p95_ms": float(p95),
            "rss_mb": float(peak[0])}


def start_node(profile: bool) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    exe = Path(sys.executable).parent / "segmentation_node"
    return subprocess.Popen([str(exe), "--ros-args", "-p",
                             f"image_topics:=[{', '.join(TOPICS)}]"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_line(proc: subprocess.Popen, text: str, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line.rstrip())
        if text in line:
            threading.Thread(target=lambda: [lines.append(x.rstrip()) for x in proc.stdout],
                             daemon=True).start()
            return
    raise SystemExit("the node exited:\n" + "\n".join(lines[-20:]))


def rows(quick: bool) -> list[tuple]:
    """(size, rate, cameras, qos) of each row; every row runs with the profile off and on."""
    out = [(size, 2.0, 1, qos) for size in SIZES for qos in ("best_effort", "reliable")]
    if not quick:
        out += [("720x1280", 15.0, 1, qos) for qos in ("best_effort", "reliable")]
        out += [("360x480", 5.0, 3, qos) for qos in ("best_effort", "reliable")]
    return out


def markdown(results: list[dict], header: dict) -> str:
    lines = ["# Transport benchmark (benchmarks/transport.py)", "",
             f"- CPU: {header['cpu']}; load average "
             f"{header['load_before']} before, {header['load_after']} after (the machine is "
             "shared with a training run and other jobs: latencies are the loaded machine's)",
             "- node: segmentation_node, default parameters (shipped FCN-8s Lite0 at each "
             "frame's own size, backend auto -> onnxruntime-cpu, qos_reliability auto), "
             "`image_topics` /cam1..3/image_raw; cameras: one separate process publishing "
             "CamVid frames resized to the frame size, all its cameras at the same instant",
             f"- {header['seconds']:g} s of frames per row; profile = config/fastdds.xml loaded "
             "by the camera and the node (FASTDDS_DEFAULT_PROFILES_FILE); the listener "
             "(labels, diagnostics) always loads it and subscribes reliably",
             "- sent: the camera's frames, each row bracketed by a 16x16 frame per camera "
             "(a small frame always arrives, so the node can count every large one lost "
             "between); received: the node's frames_received; answered: labels received; "
             "lost (diag): the node's frames_lost_upstream; WARN: diagnostics WARN naming "
             "frames lost before the node at the end of the row (its last 10 s)",
             "", "| frame | rate (Hz) | cameras | camera QoS | profile | sent | received | "
             "answered | lost (diag) | WARN | latency p50 (ms) | latency p95 (ms) | node RSS "
             "peak (MB) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['size']} | {r['rate']:g} | {r['cameras']} | {r['qos']} | "
                     f"{r['profile']} | {r['sent']} | {r['received']} | {r['answered']} | "
                     f"{r['lost_diag']} | {'yes' if r['warn'] else 'no'} | {r['p50_ms']:.0f} | "
                     f"{r['p95_ms']:.0f} | {r['rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["camera"]:
        return camera_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_transport.md")
    args = ap.parse_args(argv)
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)  # the listener
    header = {"cpu": cpu_line(), "cores": os.cpu_count(), "seconds": args.seconds,
              "load_before": " / ".join(f"{v:.2f}" for v in os.getloadavg())}
    listener = Listener()
    results = []
    for profile in (False, True):
        node = start_node(profile)
        lines: list[str] = []
        with listener.lock:
            listener.diag = {}  # the counters of this node only
        try:
            wait_line(node, "listening on", lines)
            while not listener.diag:  # its first diagnostics report
                time.sleep(0.1)
            for size, rate, cameras, qos in rows(args.quick):
                row = run_row(listener, node.pid, size, rate, cameras, qos, profile,
                              args.seconds)
                print(json.dumps(row), flush=True)
                results.append(row)
        finally:
            node.terminate()
            node.wait(30)
    header["load_after"] = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    text = markdown(results, header)
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
