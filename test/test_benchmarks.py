"""The benchmarks in benchmarks/ (run from the repository, not installed) with tiny
settings: they run end to end and write their tables.  Not measurements: nothing here
checks a speed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from factories import make_weights

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def test_no_benchmark_ships_in_the_package():
    package = ROOT / "fcn_perception"
    assert not [p for p in package.rglob("*.py") if "bench" in p.name]
    assert not (package / "models" / "fasterrcnn_peer.py").exists()


@pytest.mark.slow
def test_bench_cpu_times_ours_and_a_peer_in_onnx_runtime(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_cpu.py"), "--peers",
         "lraspp_mobilenet_v3_large", "--rounds", "1", "--warmup", "0", "--threads", "1",
         "--output", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["model"], r["runtime"]) for r in data["rows"]}
    assert {("FCN-8s EfficientNet-Lite0", "onnxruntime-cpu"),
            ("R-FCN EfficientNet-Lite0", "onnxruntime-cpu"),
            ("lraspp_mobilenet_v3_large", "onnxruntime-cpu")} <= rows
    assert all(r["p50_ms"] > 0 and r["runs"] == 1 for r in data["rows"])
    peers = {p["peer"] for p in data["ratios"]}
    assert "lraspp_mobilenet_v3_large" in peers
    text = out.read_text()
    assert data["meta"]["cpu"] in text and "load average" in text
    for p in data["ratios"]:
        assert f"{p['peer_ms_over_ours_ms']:.2f}" in text


def test_bench_cpu_ratios_pair_each_peer_with_ours_in_the_same_runtime():
    sys.path.insert(0, str(BENCHMARKS))
    from bench_cpu import Row, ratios

    rows = [Row("ours", "segmentation", "onnxruntime-cpu", True, None, times_ms=[20, 22, 24]),
            Row("ours", "segmentation", "torch eager", True, None, times_ms=[40.0]),
            Row("peer", "segmentation", "onnxruntime-cpu", False, None, times_ms=[33.0]),
            Row("peer", "segmentation", "torch eager", False, None, times_ms=[60.0]),
            Row("det peer", "detection", "onnxruntime-cpu", False, None, times_ms=[9.0])]
    assert ratios(rows) == [
        {"ours": "ours", "peer": "peer", "runtime": "onnxruntime-cpu",
         "peer_ms_over_ours_ms": 1.5},
        {"ours": "ours", "peer": "peer", "runtime": "torch eager",
         "peer_ms_over_ours_ms": 1.5}]


@pytest.mark.slow
def test_bench_multicamera_writes_the_table(ros_domain, tmp_path):
    """The multi-camera benchmark's machinery end to end on a tiny model, 1 and 2 cameras
    for 1.5 s (not a measurement: docs/bench_multicamera.md comes from the real run)."""
    pytest.importorskip("rclpy")
    sys.path.insert(0, str(BENCHMARKS))
    import bench_multicamera

    weights = make_weights(tmp_path / "w", "segmentation")
    out = tmp_path / "bench.md"
    assert bench_multicamera.main(
        ["--cameras", "1", "2", "--backend", "torch-cpu", "--weights", str(weights),
         "--warmup", "0.5", "--duration", "1.5", "--rate", "5", "-o", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 2 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["one node", "separate"], text
    for row in rows:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert float(cells[2]) > 0 and len(cells[3].split(" / ")) == 2, row
    assert "load average" in text and "U-Net" in text  # the model named from its card
