"""``fcn-perception bench`` with tiny settings: it runs and writes the Markdown table.
(The bench is a command, not a timed test: nothing here checks speed.)"""
from __future__ import annotations

from fcn_perception.card import read_card
from fcn_perception.cli import main
from fcn_perception.inference.bench import PEER_NAME, model_title


def test_bench_writes_the_table(tmp_path, seg_weights, capsys):
    out = tmp_path / "bench.md"
    code = main(["bench", "--tasks", "segmentation", "--backends", "torch-cpu",
                 "onnxruntime-cpu", "--sizes", "32x48", "--iterations", "1", "--warmup", "0",
                 "--segmentation-weights", str(seg_weights), "--output", str(out)])
    assert code == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    header = "| model | backend | input HxW | GFLOP | p50 ms | p95 ms | fps | limit ms | p50 / limit |"
    assert header in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "32x48" in line]
    backends = {line.split("|")[2].strip() for line in rows}
    assert {"torch-cpu", "onnxruntime-cpu", "torch-cpu eager"} <= backends
    models = {line.split("|")[1].strip() for line in rows}
    title = model_title(read_card(seg_weights))
    assert title.startswith("FCN-8s ")
    assert {title, "fcn_resnet50", "deeplabv3_mobilenet_v3_large",
            "lraspp_mobilenet_v3_large"} <= models
    assert "GEMM" in text and "vs fcn_resnet50" not in text  # summary is for 360x480 only


def test_summary_against_targets():
    from fcn_perception.inference.bench import Row, summary

    rows = [Row("FCN-8s X", "onnxruntime-cpu", (360, 480), [80.0], 12.9, 70.0,
                task="segmentation", ours=True),
            Row("fcn_resnet50", "torch-cpu eager", (360, 480), [1000.0], 140.0, 900.0),
            Row("deeplabv3_mobilenet_v3_large", "torch-cpu eager", (360, 480), [100.0], 5.0, 40.0),
            Row("lraspp_mobilenet_v3_large", "torch-cpu eager", (360, 480), [60.0], 2.0, 20.0),
            Row("R-FCN X", "onnxruntime-cpu", (360, 480), [50.0], 9.0, 40.0,
                task="detection", ours=True),
            Row(PEER_NAME, "torch-cpu eager", (360, 480), [200.0], 30.0, 150.0)]
    lines = "\n".join(summary(rows))
    assert "12.5x faster" in lines and "1.14x the FLOP limit" in lines
    assert "vs lraspp_mobilenet_v3_large: 0.75x faster" in lines
    assert f"vs the {PEER_NAME} peer: 0.25 of its time" in lines


def test_model_title_from_the_card():
    assert model_title({"architecture": {"name": "rfcn", "backbone": "efficientnet_lite0"}}) \
        == "R-FCN EfficientNet-Lite0"
    assert model_title({"architecture": {"name": "unet"}}) == "U-Net"
