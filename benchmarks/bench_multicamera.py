"""Benchmark: N cameras on one node (one model, batched) against N separate nodes.

For each camera count (default 1, 2, 4) and each layout it starts the node processes
(``segmentation_node``), publishes real CamVid frames on ``/camK/image_raw`` at a fixed
rate per camera from this process, subscribes to every ``/camK/segmentation/labels``
and measures, after a warm-up:

* throughput: labels messages per second, all cameras together and per camera;
* latency per camera: publish time (the header stamp, wall clock) to receipt, p50/p95;
* the resident memory of the node processes (one model in memory vs N copies).

``one node`` is one ``segmentation_node`` with ``image_topics:=[/cam1/image_raw, ...]``;
``separate`` is N ``segmentation_node`` processes, each in namespace ``/camK`` on its
camera.  Each layout's processes start once, for the largest count; a smaller count
publishes on its first N cameras only (the other topics, or nodes, stay idle), and the
memory column counts the processes serving those N cameras.

    .venv/bin/python benchmarks/bench_multicamera.py [--cameras 1 2 4] [--stagger]

writes ``docs/bench_multicamera.md`` (or call :func:`run_benchmark`).  It is a benchmark,
not a test: read the load average it records beside the numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import camvid_frames, cpu_line  # noqa: E402


@dataclass
class CameraStats:
    received: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class RunResult:
    layout: str  # "one node" or "separate"
    cameras: int
    seconds: float
    published: int
    per_camera: list[CameraStats]
    rss_mb: float

    @property
    def throughput(self) -> float:
        return sum(c.received for c in self.per_camera) / self.seconds

    def camera_fps(self) -> list[float]:
        return [c.received / self.seconds for c in self.per_camera]

    def latency(self, q: float) -> list[float]:
        return [float(np.percentile(c.latencies_ms, q)) if c.latencies_ms else float("nan")
                for c in self.per_camera]


def _executable(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed (pip install -e .)")
    return found


def _params_file(folder: Path, name: str, params: dict) -> Path:
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def _start_nodes(layout: str, cameras: int, params: dict, folder: Path, log) -> list:
    exe = _executable("segmentation_node")
    topics = [f"/cam{k + 1}/image_raw" for k in range(cameras)]
    procs = []
    if layout == "one node":
        pf = _params_file(folder, "one", {**params, "image_topics": topics})
        cmds = [[exe, "--ros-args", "--params-file", str(pf), "-r", "__node:=bench_node"]]
    else:
        pf = _params_file(folder, "separate", params)
        cmds = [[exe, "--ros-args", "--params-file", str(pf), "-r", f"__ns:=/cam{k + 1}",
                 "-r", f"image:={topics[k]}"] for k in range(cameras)]
    for i, cmd in enumerate(cmds):
        out = open(folder / f"{layout.replace(' ', '_')}_{cameras}_{i}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True), out))
    log(f"  started {len(procs)} node process(es)")
    return procs


def _stop(procs) -> None:
    import signal

    for proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc, out in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        out.close()


def _rss_mb(procs) -> float:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return float("nan")
    total = 0
    for proc, _ in procs:
        try:
            total += psutil.Process(proc.pid).memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def measure_layout(layout: str, counts: tuple[int, ...], params: dict, rate: float,
                   warmup_s: float, duration_s: float, folder: Path, log=print,
                   startup_timeout: float = 180.0, stagger: bool = False) -> list[RunResult]:
    """One layout: start its node process(es) once for the largest camera count, then for
    each count publish on the first N cameras only (the other nodes or topics stay idle),
    wait until each of them has answered, warm up and measure."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    most = max(counts)
    frames = camvid_frames(4)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_multicamera", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stats = [CameraStats() for _ in range(most)]
    counting = threading.Event()
    seen = [0] * most
    lock = threading.Lock()

    def on_labels(msg, k):
        now = time.time()
        with lock:
            seen[k] += 1
            if counting.is_set():
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                stats[k].received += 1
                stats[k].latencies_ms.append((now - stamp) * 1e3)

    out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    subs = [node.create_subscription(Image, f"/cam{k + 1}/segmentation/labels",
                                     lambda m, k=k: on_labels(m, k), out_qos)
            for k in range(most)]
    pubs = [node.create_publisher(Image, f"/cam{k + 1}/image_raw", QoSProfile(depth=1))
            for k in range(most)]
    msgs = []
    for k in range(most):
        rgb = frames[k % len(frames)]
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                    step=rgb.shape[1] * 3, is_bigendian=0)
        msg.data = rgb.tobytes()
        msg.header.frame_id = f"cam{k + 1}"
        msgs.append(msg)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    procs = _start_nodes(layout, most, params, folder, log)
    active = [1]  # cameras publishing now
    published = [0]
    stop = threading.Event()

    def publish_loop():
        period = 1.0 / rate
        next_t = time.monotonic()
        while not stop.is_set():
            n = active[0]
            for k in range(n):  # each active camera at `rate`: together, or spread out
                if stagger and k:
                    time.sleep(max(0.0, next_t + k * period / n - time.monotonic()))
                t = time.time()
                msg = msgs[k]
                msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
                pubs[k].publish(msg)
                if counting.is_set():
                    published[0] += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))

    publisher = threading.Thread(target=publish_loop, daemon=True)
    publisher.start()
    results = []
    try:
        for n in sorted(counts):
            active[0] = n
            with lock:
                seen[:] = [0] * most
            deadline = time.monotonic() + startup_timeout
            while min(seen[:n]) == 0:  # every active camera answered: models loaded
                if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
                    raise RuntimeError(f"{layout} x{n}: no output from every camera within "
                                       f"{startup_timeout:.0f} s (logs in {folder})")
                time.sleep(0.1)
            time.sleep(warmup_s)
            with lock:
                for c in stats:
                    c.received, c.latencies_ms = 0, []
                published[0] = 0
                counting.set()
            t0 = time.monotonic()
            time.sleep(duration_s)
            counting.clear()
            seconds = time.monotonic() - t0
            serving = procs if layout == "one node" else procs[:n]
            results.append(RunResult(layout, n, seconds, published[0],
                                     [CameraStats(c.received, list(c.latencies_ms))
                                      for c in stats[:n]], _rss_mb(serving)))
            r = results[-1]
            log(f"  {n} camera(s): {r.throughput:.2f} fps total, latency p50 "
                f"{np.nanmedian(r.latency(50)):.0f} ms, {r.rss_mb:.0f} MB")
    finally:
        stop.set()
        publisher.join(5)
        _stop(procs)
        for s in subs:
            node.destroy_subscription(s)
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        context.try_shutdown()
    return results


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


def _model(weights: str) -> str:
    """The model the nodes run, named from its card (``weights``: "" = the shipped one)."""
    from fcn_perception.card import DEFAULT_WEIGHTS, model_title, read_card

    path = weights or DEFAULT_WEIGHTS["segmentation"]
    return f"{model_title(read_card(path))} ({Path(path).name})"


def markdown(results: list[RunResult], meta: dict) -> str:
    lines = ["# Multi-camera benchmark: one node vs separate nodes", "",
             "Written by `.venv/bin/python benchmarks/bench_multicamera.py`.", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| cameras | layout | throughput (fps, all) | per camera (fps) | "
              "latency p50 per camera (ms) | latency p95 per camera (ms) | node memory (MB) |",
              "|---|---|---|---|---|---|---|"]

    def fmt(values):
        return " / ".join(f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in values)

    for r in results:
        lines.append(f"| {r.cameras} | {r.layout} | {r.throughput:.2f} | {fmt(r.camera_fps())} "
                     f"| {fmt(r.latency(50))} | {fmt(r.latency(95))} | {r.rss_mb:.0f} |")
    lines.append("")
    return "\n".join(lines)


def run_benchmark(cameras=(1, 2, 4), backend: str = "onnxruntime-cpu", weights: str = "",
                  rate: float = 10.0, warmup_s: float = 3.0, duration_s: float = 10.0,
                  output: Path | None = Path("docs/bench_multicamera.md"), log=print,
                  stagger: bool = False) -> str:
    """Measure every camera count in both layouts; print and (optionally) write the
    Markdown table.  Returns the Markdown."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    params = {"backend": backend, "model": weights or "fast", "no_frame_warning_s": 0.0}
    load_before = load_average()
    started = time.strftime("%Y-%m-%d %H:%M")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_multicamera_") as tmp:
        for layout in ("one node", "separate"):
            log(f"{layout}: {', '.join(map(str, cameras))} camera(s) ...")
            results += measure_layout(layout, tuple(cameras), params, rate, warmup_s,
                                      duration_s, Path(tmp), log, stagger=stagger)
    results.sort(key=lambda r: (r.cameras, r.layout != "one node"))
    frame = camvid_frames(1)[0]
    meta = {
        "date": started,
        "machine": f"{cpu_line()}; {platform.system()}",
        "load average (1, 5, 15 min) before / after": f"{load_before} / {load_average()}",
        "model": _model(weights),
        "backend": backend,
        "frames": f"CamVid val {frame.shape[1]}x{frame.shape[0]} rgb8, published at "
                  f"{rate:g} Hz per camera, "
                  + ("spread over the period" if stagger else "all cameras at the same instant"),
        "measured": f"{duration_s:g} s per row after a {warmup_s:g} s warm-up; outputs: "
                    "segmentation/labels only",
        "latency": "header stamp (publish time) to receipt of the labels",
    }
    text = markdown(results, meta)
    print(text)
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        log(f"wrote {output}")
    return text


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4],
                   help="camera counts to measure (default 1 2 4)")
    p.add_argument("--backend", default="onnxruntime-cpu", help="node backend parameter")
    p.add_argument("--weights", default="", help="segmentation weights (default: packaged)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second per camera")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per row")
    p.add_argument("--stagger", action="store_true",
                   help="spread the cameras' frames over the period (unsynchronised cameras) "
                   "instead of publishing them at the same instant")
    p.add_argument("--output", "-o", type=Path, default=Path("docs/bench_multicamera.md"),
                   help="Markdown file to write (default docs/bench_multicamera.md)")


def main_args(args) -> int:
    run_benchmark(tuple(args.cameras), args.backend, args.weights, args.rate, args.warmup,
                  args.duration, args.output, stagger=args.stagger)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_args(parser)
    return main_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
