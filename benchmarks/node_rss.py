"""Resident memory of a ``segmentation_node`` on ONNX Runtime, as it runs now (torch never
imported: cards, ONNX files and the cached export are read without it) and as it ran
before the card/weights split (the same node with torch and torchvision imported first,
which is what importing ``weights_io`` did).

    .venv/bin/python benchmarks/node_rss.py [--out docs/node_rss.json]

Each node loads the shipped FCN-8s (onnxruntime-cpu, its cached ONNX export: run the node
or ``load_predictor("segmentation", backend="onnxruntime-cpu")`` once before), warms up
on a 360x480 frame and says ``listening on``; then its VmRSS is read, and whether
libtorch is mapped into it.  Prints the CPU line and load average with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cpu_line, load_average  # noqa: E402

BIN = Path(sys.executable).parent
PRELOAD = ("import sys, torch, torchvision; from fcn_perception.ros.nodes import "
           "segmentation_main; sys.exit(segmentation_main())")


def measure(cmd: list[str], timeout: float = 300.0) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    lines = []
    try:
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "listening on" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise SystemExit("the node exited:\n" + "\n".join(lines[-20:]))
        time.sleep(2.0)  # let the warm-up's allocations settle
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss = int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        return {"rss_mb": round(rss / 1024.0, 1), "libtorch_mapped": "libtorch" in maps}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "node_rss.json")
    args = ap.parse_args(argv)
    ros_args = ["--ros-args", "-p", "backend:=onnxruntime-cpu", "-r",
                "__node:=rss_probe", "-r", "image:=/rss_probe/image_raw"]
    load_before = load_average()
    now = measure([str(BIN / "segmentation_node"), *ros_args])
    before = measure([sys.executable, "-c", PRELOAD, *ros_args])
    result = {
        "what": "segmentation_node, shipped FCN-8s on onnxruntime-cpu, after its warm-up "
                "frame: VmRSS",
        "now_torch_free": now, "before_torch_imported": before,
        "saved_mb": round(before["rss_mb"] - now["rss_mb"], 1),
        "cpu": cpu_line(), "load_average_before_after": f"{load_before} / {load_average()}",
        "written_by": "benchmarks/node_rss.py",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
