"""The GPU check behind scripts/gpu_check.sh (run that; see its header for what it does).

Each step is a function that adds rows to a :class:`Report`; a step that fails is
recorded (with its error) and the others still run; steps left when the time budget is
spent are recorded as skipped.  The report is written to docs/bench_gpu.md.

Exit status: 0 every check passed; 1 a check failed or a step raised; 77 no CUDA GPU
(nothing measured; the automake/meson "skipped" status, non-zero so that a script or CI
job cannot mistake it for a pass).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "fcn_perception" / "data" / "camvid_sample" / "val"
SKIPPED = 77
HW = (360, 480)
DET_SCORE = 0.3  # boxes compared: score >= 0.3 (enough of them on the few demo frames)


@dataclass
class Report:
    started: float = field(default_factory=time.monotonic)
    budget_s: float = 420.0
    header: list[str] = field(default_factory=list)
    speed: list[tuple] = field(default_factory=list)  # task, backend, precision, batch, p50, p95
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    steps: list[tuple[str, str]] = field(default_factory=list)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, bool(ok), detail))
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

    def markdown(self) -> str:
        lines = ["# GPU check", "", "Written by `scripts/gpu_check.sh` "
                 f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).", ""]
        lines += [f"- {h}" for h in self.header] + [""]
        lines += ["## Speed (360x480)", "",
                  "| task | backend | precision | batch | ms p50 | ms p95 | frames/s |",
                  "|---|---|---|---|---|---|---|"]
        for task, backend, precision, batch, p50, p95 in self.speed:
            fps = "-" if "over DDS" in backend else f"{1000.0 * batch / p50:.1f}"  # latency
            lines.append(f"| {task} | {backend} | {precision} | {batch} | {p50:.2f} | "
                         f"{p95:.2f} | {fps} |")
        lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {n} | {'pass' if ok else '**FAIL**'} | {d} |" for n, ok, d in self.checks]
        lines += ["", "## Steps", "", "| step | outcome |", "|---|---|"]
        lines += [f"| {n} | {o} |" for n, o in self.steps]
        return "\n".join(lines) + "\n"


def frames() -> list[np.ndarray]:
    from fcn_perception.inference.agreement import read_frames

    out = read_frames(SAMPLE)
    assert out and all(f.shape[:2] == HW for f in out), "the bundled demo frames are 360x480"
    return out


def timed(fn, iterations: int, warmup: int = 5) -> tuple[float, float]:
    """``(p50, p95)`` milliseconds of ``fn()`` (which synchronises the GPU itself)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def sync():
    import torch

    torch.cuda.synchronize()


# --------------------------------------------------------------------------- steps
def step_torch_cuda(report: Report, iterations: int) -> None:
    """torch-cuda (fp16, channels_last) on the shipped models: parity with torch-cpu on the
    demo frames, fps at batch 1 (whole Predictor) and 8 (segmentation network), and
    whether a CUDA graph of the segmentation network helps."""
    import torch

    import fcn_perception
    from fcn_perception.inference.agreement import compare_frames

    demo = frames()
    for task in ("segmentation", "detection"):
        cpu = fcn_perception.load_predictor(task, "torch-cpu")
        gpu = fcn_perception.load_predictor(task, "torch-cuda")
        b = gpu.backend
        assert b.precision == "fp16" and b.channels_last, (b.precision, b.channels_last)
        r = compare_frames(cpu, gpu, demo, score_threshold=DET_SCORE)
        if task == "segmentation":
            report.check("torch-cuda fp16 vs torch-cpu labels", r["agreement"] >= 0.99,
                         f"{100 * r['agreement']:.2f}% identical on {r['frames']} demo frames "
                         "(bar 99%)")
        else:
            report.check("torch-cuda fp16 vs torch-cpu boxes",
                         r["boxes"] >= 5 and r["agreement"] >= 0.95,
                         f"{r['matched']} of {r['boxes']} boxes (score >= {DET_SCORE}) at IoU >= 0.9 "
                         f"on {r['frames']} demo frames (bar 95%, >= 5 boxes)")
        frame = demo[0]
        p50, p95 = timed(lambda p=gpu, f=frame: (p(f), sync()), iterations)
        report.speed.append((task, "torch-cuda (Predictor)", "fp16", 1, p50, p95))
        if task == "segmentation":
            x = torch.zeros(8, 3, *HW, device="cuda").contiguous(
                memory_format=torch.channels_last).half()
            with torch.inference_mode():
                p50, p95 = timed(lambda m=b.module, t=x: (m(t), sync()), iterations)
                report.speed.append((task, "torch-cuda (network)", "fp16", 8, p50, p95))
                x1 = x[:1].clone()
                p50, p95 = timed(lambda m=b.module, t=x1: (m(t), sync()), iterations)
                report.speed.append((task, "torch-cuda (network)", "fp16", 1, p50, p95))
                graph_ms = cuda_graph_ms(b.module, x1, iterations)
            report.speed.append((task, "torch-cuda (network, CUDA graph)", "fp16", 1,
                                 *graph_ms))
            report.header.append(f"CUDA graph of the segmentation network, batch 1: "
                                 f"{graph_ms[0]:.2f} ms vs eager {p50:.2f} ms "
                                 f"({'helps' if graph_ms[0] < 0.9 * p50 else 'no clear gain'})")


def cuda_graph_ms(module, x, iterations: int) -> tuple[float, float]:
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            module(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(x)
    return timed(lambda: (graph.replay(), sync()), iterations)


def step_tensorrt(report: Report, iterations: int, work: Path) -> None:
    """Build fp16 engines of both shipped models (and int8 for segmentation), check them
    against torch-cpu on the demo frames, time them."""
    import torch

    import fcn_perception
    from fcn_perception.card import DEFAULT_WEIGHTS
    from fcn_perception.inference.agreement import compare_frames
    from fcn_perception.inference.backends.tensorrt_backend import (
        get_engine,
        tensorrt_unavailable,
    )
    from fcn_perception.inference.engine_cache import Profile, read_sidecar
    from fcn_perception.inference.export import cached_onnx, check_onnx

    reason = tensorrt_unavailable()
    if reason:
        report.steps.append(("tensorrt", f"skipped: {reason}"))
        return
    import tensorrt as trt

    report.header.append(f"TensorRT {trt.__version__}")
    demo = frames()
    train = ROOT.parent / "shared" / "camvid" / "train"
    calibration = train if train.is_dir() else SAMPLE  # the demo frames when nothing else
    jobs = [("segmentation", "fp16"), ("detection", "fp16"), ("segmentation", "int8")]
    for task, precision in jobs:
        if report.left() < 90:
            report.steps.append((f"tensorrt {task} {precision}", "skipped: time budget"))
            continue
        onnx_path = cached_onnx(DEFAULT_WEIGHTS[task], task, directory=work)
        card = check_onnx(onnx_path, task)
        batch = 8 if task == "segmentation" else 1
        profile = Profile.for_card(card, batch)
        t0 = time.monotonic()
        path, _, _ = get_engine(onnx_path, precision, profile, card=card, task=task,
                                cache_dir=work / "engines",
                                calibration_images=calibration if precision == "int8" else None)
        plan = read_sidecar(path).get("plan", "")
        report.steps.append((f"tensorrt {task} {precision}",
                             f"built in {time.monotonic() - t0:.0f} s: {plan}"))
        trt_p = fcn_perception.load_predictor(task, "tensorrt", path)
        cpu = fcn_perception.load_predictor(task, "torch-cpu")
        r = compare_frames(cpu, trt_p, demo, score_threshold=DET_SCORE)
        if task == "segmentation":
            bar = 0.99 if precision == "fp16" else 0.95
            report.check(f"tensorrt {precision} vs torch-cpu labels", r["agreement"] >= bar,
                         f"{100 * r['agreement']:.2f}% identical (bar {100 * bar:.0f}%)")
        else:
            report.check(f"tensorrt {precision} vs torch-cpu boxes",
                         r["boxes"] >= 5 and r["agreement"] >= 0.95,
                         f"{r['matched']} of {r['boxes']} boxes at IoU >= 0.9 (bar 95%)")
        frame = demo[0]
        p50, p95 = timed(lambda p=trt_p, f=frame: p(f), iterations)
        report.speed.append((task, "tensorrt (Predictor)", precision, 1, p50, p95))
        if task == "segmentation":
            size = tuple(card["input"].get("size") or HW)
            x = torch.zeros(batch, 3, *size, device="cuda")
            p50, p95 = timed(lambda p=trt_p, t=x: p.backend.run(t), iterations)
            report.speed.append((task, "tensorrt (engine)", precision, batch, p50, p95))


def step_node_latency(report: Report, frames_to_send: int = 60, rate_hz: float = 10.0,
                      backend: str = "torch-cuda", device: str = "cuda:0") -> None:
    """segmentation_node over Fast DDS: camera stamp -> labels received."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from fcn_perception.ros import messages, qos

    exe = Path(sys.executable).with_name("segmentation_node")
    log = open(ROOT / "out" / "gpu_check_node.log", "w")
    proc = subprocess.Popen(
        [str(exe), "--ros-args", "-r", "image:=/gpu_check/image", "-r", "__ns:=/gpu_check",
         "-p", f"backend:={backend}", "-p", f"device:={device}"], stdout=log, stderr=log)
    rclpy.init()
    node = Node("gpu_check_probe")
    latencies: list[float] = []

    def on_labels(msg: Image) -> None:
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        now = node.get_clock().now().nanoseconds * 1e-9
        latencies.append((now - sent) * 1000.0)

    try:
        pub = node.create_publisher(Image, "/gpu_check/image", qos.input_qos())
        node.create_subscription(Image, "/gpu_check/segmentation/labels", on_labels,
                                 qos.output_qos())
        demo = frames()
        deadline = time.monotonic() + 120
        while pub.get_subscription_count() == 0 or not node.count_publishers(
                "/gpu_check/segmentation/labels"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"segmentation_node did not come up (exit {proc.poll()}); "
                                   f"see {log.name}")
            rclpy.spin_once(node, timeout_sec=0.1)
        warm = time.monotonic() + 3  # first frames pay for CUDA kernels' selection
        i = 0
        while time.monotonic() < warm:
            pub.publish(messages.rgb_msg(Header(stamp=node.get_clock().now().to_msg()),
                                         demo[i % len(demo)]))
            i += 1
            rclpy.spin_once(node, timeout_sec=1.0 / rate_hz)
        latencies.clear()
        for i in range(frames_to_send):
            header = Header(stamp=node.get_clock().now().to_msg(), frame_id="camera")
            pub.publish(messages.rgb_msg(header, demo[i % len(demo)]))
            end = time.monotonic() + 1.0 / rate_hz
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=max(0.0, end - time.monotonic()))
        end = time.monotonic() + 2
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    got = len(latencies)
    report.check("node over DDS: labels for every frame", got >= 0.95 * frames_to_send,
                 f"{got} of {frames_to_send} frames at {rate_hz:g} Hz")
    if latencies:
        lat = sorted(latencies)
        p50, p95 = statistics.median(lat), lat[min(got - 1, int(0.95 * got))]
        report.speed.append(("segmentation", f"segmentation_node ({backend}) over DDS, "
                             "stamp -> labels", "auto", 1, p50, p95))


def step_gpu_tests(report: Report) -> None:
    """The GPU-marked pytest tests (test/test_tensorrt.py and others)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "-p",
           "no:cacheprovider", "test/test_tensorrt.py", "test/test_inference.py"]
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                             timeout=max(30, int(report.left())))
    except subprocess.TimeoutExpired:
        report.steps.append(("GPU-marked tests (detail)", "stopped at the time budget: run "
                             "`pytest -m 'gpu or tensorrt'` alone for the result"))
        return
    tail = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
    report.check("pytest -m 'gpu or tensorrt'", out.returncode in (0, 5), tail)
    if out.returncode not in (0, 5):
        print(out.stdout[-4000:], out.stderr[-2000:])


# --------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description="fcn_perception GPU check")
    parser.add_argument("--iterations", type=int, default=100, help="timed runs per row")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="stop starting new steps after this long (default 7 min)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "bench_gpu.md")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["torch", "tensorrt", "node", "tests"])
    args = parser.parse_args()
    try:
        import torch
    except ImportError as exc:
        print(f"gpu_check: FAILED: torch does not import ({exc}); run make setup", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print(f"gpu_check: SKIPPED: no CUDA GPU is visible to torch {torch.__version__} "
              f"(CUDA build {torch.version.cuda}); nothing was measured, "
              f"{args.output.relative_to(ROOT)} left as it is", file=sys.stderr)
        return SKIPPED
    report = Report(budget_s=args.budget_s)
    props = torch.cuda.get_device_properties(0)
    report.header += [f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB, compute "
                      f"capability {props.major}.{props.minor})",
                      f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
                      f"{torch.backends.cudnn.version()}",
                      f"frames: the {len(frames())} bundled demo frames "
                      f"({SAMPLE.relative_to(ROOT)}), 360x480"]
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: no TensorRT
        report.header.append(f"TensorRT: not importable ({type(exc).__name__}: {exc})")
    (ROOT / "out").mkdir(exist_ok=True)
    work = ROOT / "out" / "gpu_check"
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FCN_PERCEPTION_CACHE", str(work / "cache"))
    steps = [("torch", "torch-cuda backend", lambda: step_torch_cuda(report, args.iterations)),
             ("tensorrt", "TensorRT engines",
              lambda: step_tensorrt(report, args.iterations, work)),
             ("node", "node latency over DDS", lambda: step_node_latency(report)),
             ("tests", "GPU-marked tests", lambda: step_gpu_tests(report))]
    for key, name, fn in steps:
        if key in args.skip:
            report.steps.append((name, "skipped (--skip)"))
            continue
        if report.left() < 30:
            report.steps.append((name, "skipped: time budget spent"))
            continue
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            fn()
            report.steps.append((name, f"done in {time.monotonic() - t0:.0f} s"))
        except Exception as exc:  # noqa: BLE001 - record it, run the other steps
            traceback.print_exc()
            report.steps.append((name, f"**error**: {type(exc).__name__}: {exc}"))
            report.checks.append((name, False, f"raised {type(exc).__name__}"))
    args.output.write_text(report.markdown())
    (work / "report.json").write_text(json.dumps(
        {"speed": report.speed, "checks": report.checks, "steps": report.steps}, indent=2))
    failed = [n for n, ok, _ in report.checks if not ok]
    print(f"gpu_check: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}; "
          f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
