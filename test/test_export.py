"""ONNX export: the CLI, dynamic axes, opset, embedded card, checker; the export cache."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import test_inference as common

from fcn_perception.cli import main

# shared session fixtures and helpers (one export per test session)
inference_cache = common.inference_cache
seg_weights = common.seg_weights
camvid_frames = common.camvid_frames



def test_export_cli_writes_a_checked_onnx_with_dynamic_axes(seg_weights, tmp_path, capsys):
    out = tmp_path / "fcn.onnx"
    assert main(["export", "--weights", str(seg_weights), "-o", str(out), "--opset", "18"]) == 0
    assert "wrote" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    (inp,) = [i for i in proto.graph.input]
    assert inp.name == "image"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in proto.graph.output] == ["labels"]
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = {p.key: p.value for p in proto.metadata_props}
    assert '"fcn8s"' in meta["fcn_perception.card"]
    assert not list(tmp_path.glob("*.data")), "the export must be one self-contained file"


def test_export_rejects_old_opsets_and_wrong_task(seg_weights, tmp_path, capsys):
    assert main(["export", "--weights", str(seg_weights), "-o", str(tmp_path / "x.onnx"),
                 "--opset", "13"]) == 2
    assert "opset 13" in capsys.readouterr().err
    assert main(["export", "--task", "detection", "--weights", str(seg_weights),
                 "-o", str(tmp_path / "y.onnx")]) == 2
    assert "segmentation model" in capsys.readouterr().err


def test_cached_onnx_is_reused_and_replaced_when_corrupt(seg_weights):
    from fcn_perception.inference.export import SHA_KEY, cached_onnx, read_onnx_metadata

    first = cached_onnx(seg_weights)
    stamp = first.stat().st_mtime_ns
    assert cached_onnx(seg_weights) == first and first.stat().st_mtime_ns == stamp
    assert read_onnx_metadata(first)[SHA_KEY]
    first.write_bytes(b"garbage")
    again = cached_onnx(seg_weights)
    assert again == first and read_onnx_metadata(again)[SHA_KEY]


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from fcn_perception.inference.export import cache_dir

    monkeypatch.setenv("FCN_PERCEPTION_CACHE", str(tmp_path / "c"))
    assert cache_dir("onnx") == tmp_path / "c" / "onnx" and (tmp_path / "c" / "onnx").is_dir()


def test_exported_graph_runs_any_size_in_onnxruntime(seg_weights):
    import onnxruntime as ort

    from fcn_perception.inference.export import cached_onnx

    sess = ort.InferenceSession(str(cached_onnx(seg_weights)), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 45, 77), (2, 3, 64, 64)):
        (labels,) = sess.run(None, {"image": np.zeros(shape, np.float32)})
        assert labels.shape == (shape[0], *shape[2:]) and labels.dtype == np.uint8


def test_build_engine_without_tensorrt_is_a_clear_error(seg_weights, capsys):
    from fcn_perception.inference.backends.tensorrt_backend import tensorrt_unavailable

    if tensorrt_unavailable() is None:
        pytest.skip("TensorRT is available here")
    assert main(["build-engine", "--weights", str(seg_weights)]) == 2
    err = capsys.readouterr().err
    assert "TensorRT" in err and "tensorrt" in err


def test_cli_registers_inference_commands():
    from fcn_perception.cli import build_parser

    parser = build_parser()
    for cmd in ("export", "build-engine", "bench"):
        assert parser.parse_args([cmd]).command == cmd


def test_int8_export_with_accuracy_check(seg_weights, tmp_path, capsys):
    import json

    from PIL import Image

    import fcn_perception

    frames, labels = tmp_path / "val", tmp_path / "valannot"
    frames.mkdir()
    labels.mkdir()
    for i, frame in enumerate(camvid_frames(2)):
        Image.fromarray(frame).save(frames / f"{i}.png")
        Image.fromarray((frame[:, :, 0] // 24).astype(np.uint8)).save(labels / f"{i}.png")
    weights = tmp_path / "small.safetensors"  # a reduced-size card: logits + upsampling
    weights.write_bytes(seg_weights.read_bytes())
    card = json.loads(seg_weights.with_suffix(".json").read_text())
    card["input"]["size"] = [90, 120]
    weights.with_suffix(".json").write_text(json.dumps(card))
    out = tmp_path / "q.onnx"
    assert main(["export", "--weights", str(weights), "-o", str(out), "--precision", "int8",
                 "--calibration-images", str(frames), "--check-images", str(frames)]) == 0
    text = capsys.readouterr().out
    assert "identical labels" in text and "mean IoU fp32" in text
    p = fcn_perception.load_predictor("segmentation", weights=out)
    assert p.backend.precision == "int8"
    assert p(camvid_frames(1)[0]).labels.shape == (360, 480)
    assert main(["export", "--weights", str(weights), "-o", str(out), "--precision",
                 "int8"]) == 2
