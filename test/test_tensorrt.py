"""TensorRT: the engine cache key and rebuild decision, profiles and calibration data run
everywhere; building and running engines needs TensorRT and a GPU (marked ``tensorrt``
and ``gpu``: skipped elsewhere, run by scripts/gpu_check.sh on a GPU machine).  The
build plan has its own tests (test_tensorrt_plan.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fcn_perception.card import DEFAULT_WEIGHTS
from fcn_perception.inference import engine_cache as ec

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(onnx_sha256="a" * 64, trt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3",
            compute_capability="9.0", precision="fp16", profile=ec.Profile(),
            onnx_variant="fp16", plan={"typing": "strong", "network_flags": ["STRONGLY_TYPED"]})


def key(**changes):
    return ec.engine_key(**{**BASE, **changes})


def val_folder() -> Path:
    for folder in (ROOT.parent / "shared" / "camvid" / "val",
                   ROOT / "fcn_perception" / "data" / "camvid_sample" / "val"):
        if any(folder.glob("*.png")):
            return folder
    pytest.skip("no CamVid frames found (../shared/camvid or the packaged sample)")


# --------------------------------------------------------------------------- key
@pytest.mark.parametrize("field, value", [
    ("onnx_sha256", "b" * 64), ("trt_version", "10.4.0"), ("gpu_name", "NVIDIA L4"),
    ("compute_capability", "8.9"), ("precision", "fp32"), ("onnx_variant", "fp32"),
    ("plan", {"typing": "strong", "network_flags": []}),
    ("profile", ec.Profile((64, 64), (360, 480), (720, 960))),
    ("profile", ec.Profile(max_batch=8)),
])
def test_every_field_changes_the_key(field, value):
    assert ec.key_digest(key(**{field: value})) != ec.key_digest(key())


def test_key_is_stable_and_checked():
    assert ec.key_digest(key()) == ec.key_digest(key())
    assert key()["onnx_variant"] == "fp16"
    with pytest.raises(ValueError, match="precision"):
        key(precision="int4")
    with pytest.raises(ValueError, match="onnx_variant"):
        key(onnx_variant="int8")


def test_engine_path_names_precision_and_key(tmp_path):
    path = ec.engine_path(tmp_path, "/x/fcn-abc.onnx", key())
    assert path.parent == tmp_path and path.name.startswith("fcn-abc-fp16-")
    assert path.suffix == ".engine"
    assert ec.engine_path(tmp_path, "/x/fcn-abc.onnx", key(onnx_variant="fp32")) != path


# --------------------------------------------------------------------------- rebuild decision
def test_rebuild_decision(tmp_path):
    fields = key()
    engine = ec.engine_path(tmp_path, "m.onnx", fields)
    assert "no engine" in ec.rebuild_reason(engine, fields)
    ec.write_engine(engine, b"engine-bytes", fields, card={"task": "segmentation"})
    assert ec.rebuild_reason(engine, fields) is None  # same key: reuse
    assert ec.read_sidecar(engine)["card"] == {"task": "segmentation"}
    # a TensorRT upgrade or another GPU changes the key, and the reason says what changed
    reason = ec.rebuild_reason(engine, key(trt_version="11.4.0.106"))
    assert "tensorrt" in reason and "10.3.0" in reason and "11.4.0.106" in reason
    assert "gpu" in ec.rebuild_reason(engine, key(gpu_name="Orin"))
    assert "onnx_variant" in ec.rebuild_reason(engine, key(onnx_variant="int8-qdq"))
    assert "profile" in ec.rebuild_reason(engine, key(profile=ec.Profile.parse("360x480")))
    # a torn or replaced engine file no longer matches its recorded sha256
    engine.write_bytes(b"engine-bytes-but-different")
    assert "sha256" in ec.rebuild_reason(engine, fields)
    ec.write_engine(engine, b"engine-bytes", fields)
    ec.sidecar_path(engine).write_text("{not json")
    assert "missing or unreadable" in ec.rebuild_reason(engine, fields)
    ec.sidecar_path(engine).unlink()
    assert "missing or unreadable" in ec.rebuild_reason(engine, fields)


def test_sidecar_is_json_with_the_key(tmp_path):
    fields = key()
    engine = ec.write_engine(tmp_path / "e.engine", b"123", fields, extra={"plan": "p"})
    meta = json.loads(ec.sidecar_path(engine).read_text())
    assert meta["key"] == fields and meta["key_digest"] == ec.key_digest(fields)
    assert meta["plan"] == "p"
    assert not list(tmp_path.glob(".*.tmp"))


def test_timing_cache_path_is_per_version_and_gpu(tmp_path):
    a = ec.timing_cache_path(tmp_path, "10.3.0", "NVIDIA H100 80GB HBM3")
    assert a != ec.timing_cache_path(tmp_path, "10.4.0", "NVIDIA H100 80GB HBM3")
    assert " " not in a.name


# --------------------------------------------------------------------------- profile
def test_profile_parse_batch_and_contains():
    p = ec.Profile.parse("64x64:360x480:1088x1920")
    assert p.shapes() == ((1, 3, 64, 64), (1, 3, 360, 480), (1, 3, 1088, 1920))
    assert ec.Profile.parse("360x480", max_batch=8).shapes()[2] == (8, 3, 360, 480)
    assert p.contains((720, 960)) and not p.contains((32, 480))
    assert ec.Profile.parse("360x480") == ec.Profile((360, 480), (360, 480), (360, 480))
    assert str(p) == "64x64:360x480:1088x1920"
    assert str(ec.Profile(max_batch=8)).endswith("(batch 1-8)")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ec.Profile.parse("360x480:64x64:1088x1920")
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        ec.Profile.parse("big")
    with pytest.raises(ValueError, match="max_batch"):
        ec.Profile(max_batch=0)
    assert ec.Profile.for_card({"input": {"size": [256, 512]}}).opt == (256, 512)
    assert ec.Profile.for_card({"input": {"size": None}}) == ec.Profile()


# --------------------------------------------------------------------------- calibration data
def test_calibration_batches_from_a_folder(tmp_path):
    from PIL import Image

    from fcn_perception.inference.calibration import CalibrationBatches, list_images
    from fcn_perception.inference.preprocess import InputSpec

    for i, src in enumerate(sorted(val_folder().glob("*.png"))[:3]):
        Image.open(src).convert("RGB").save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = list_images(tmp_path)
    assert [p.name for p in images] == ["f0.png", "f1.png", "f2.png"]
    batches = CalibrationBatches(images, InputSpec(), (64, 96), batch_size=2)
    out = list(batches)
    assert len(out) == 1 and out[0].shape == (2, 3, 64, 96) and out[0].dtype == np.float32
    assert abs(float(out[0].mean())) < 3 and float(out[0].std()) > 0.1
    assert batches.fingerprint("entropy") != batches.fingerprint("minmax")
    assert len(list_images(tmp_path, limit=2)) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "missing")


# --------------------------------------------------------------------------- ONNX for a plan
def test_plan_onnx_refuses_what_tensorrt_cannot_build(tmp_path):
    """The ONNX a plan builds: an int8 ONNX in ONNX Runtime's Q/DQ format, or an fp16 ONNX
    for an int8 plan, are refused with the fix; an fp32 ONNX is converted."""
    from fcn_perception.errors import ModelFileError
    from fcn_perception.inference.backends.tensorrt_backend import plan_onnx
    from fcn_perception.inference.export import cached_onnx, fp16_onnx, read_onnx_card
    from fcn_perception.inference.preprocess import InputSpec
    from fcn_perception.inference.quantize import quantized_onnx
    from fcn_perception.inference.tensorrt_plan import TensorRTApi, build_plan

    data = json.loads((ROOT / "test" / "data" / "tensorrt_api" / "tensorrt-11.4.0.106.json")
                      .read_text())
    api = TensorRTApi.from_names(data["tensorrt"], data["names"])
    fp32 = cached_onnx(DEFAULT_WEIGHTS["segmentation"], directory=tmp_path)
    card = read_onnx_card(fp32)
    int8, fp16 = build_plan(api, "int8", ec.Profile()), build_plan(api, "fp16", ec.Profile())
    assert plan_onnx(fp32, build_plan(api, "fp32", ec.Profile()), card) == fp32
    half = fp16_onnx(fp32, directory=tmp_path)
    assert plan_onnx(half, fp16, card) == half
    with pytest.raises(ModelFileError, match="is a fp16 ONNX, but a int8 engine"):
        plan_onnx(half, int8, card)
    with pytest.raises(ValueError, match="calibration_images"):
        plan_onnx(fp32, int8, card)
    ort_q = quantized_onnx(fp32, val_folder(), InputSpec.from_card(card), limit=2,
                           fmt="onnxruntime", directory=tmp_path)
    with pytest.raises(ModelFileError, match="--int8-format tensorrt"):
        plan_onnx(ort_q, int8, card)


# --------------------------------------------------------------------------- gpu_check.sh
def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_77(tmp_path):
    import os
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: scripts/gpu_check.sh runs for real here")
    script = ROOT / "scripts" / "gpu_check.sh"
    assert os.access(script, os.X_OK), "scripts/gpu_check.sh must be executable"
    report = ROOT / "docs" / "bench_gpu.md"
    before = report.read_bytes() if report.is_file() else None
    out = subprocess.run([str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 77, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: SKIPPED: no CUDA GPU"), lines
    assert (report.read_bytes() if report.is_file() else None) == before


# --------------------------------------------------------------------------- with TensorRT
PROFILE = ec.Profile((64, 64), (360, 480), (720, 960))


def _frames(count: int = 2):
    from fcn_perception.inference.agreement import read_frames

    return read_frames(val_folder(), count)


def _engine(task, tmp_path, precision, **kw):
    from fcn_perception.inference.backends.tensorrt_backend import get_engine
    from fcn_perception.inference.export import cached_onnx, check_onnx

    onnx_path = cached_onnx(DEFAULT_WEIGHTS[task], directory=tmp_path)
    card = check_onnx(onnx_path, task)
    return get_engine(onnx_path, precision, PROFILE if not card["input"].get("size") else None,
                      card=card, task=task, cache_dir=tmp_path, **kw)


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision, agree", [("fp32", 0.999), ("fp16", 0.99)])
def test_engine_segmentation_matches_torch_and_is_cached(tmp_path, precision, agree):
    import fcn_perception

    path, built, why = _engine("segmentation", tmp_path, precision)
    assert built and "no engine" in why
    assert ec.read_sidecar(path)["key"]["onnx_variant"] == precision
    again, built2, _ = _engine("segmentation", tmp_path, precision)
    assert again == path and not built2  # same key: not rebuilt
    ref = fcn_perception.load_predictor("segmentation", "torch-cpu")
    trt_p = fcn_perception.load_predictor("segmentation", "tensorrt", path)
    assert trt_p.backend_name == "tensorrt"
    for frame in _frames(2):
        assert (trt_p(frame).labels == ref(frame).labels).mean() >= agree


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
def test_int8_engine_from_the_qdq_onnx(tmp_path):
    import fcn_perception

    path, built, _ = _engine("segmentation", tmp_path, "int8",
                             calibration_images=val_folder(), calibration_limit=4)
    assert built and ec.read_sidecar(path)["key"]["onnx_variant"] == "int8-qdq"
    trt_p = fcn_perception.load_predictor("segmentation", "tensorrt", path)
    ref = fcn_perception.load_predictor("segmentation", "torch-cpu")
    frame = _frames(1)[0]
    assert (trt_p(frame).labels == ref(frame).labels).mean() >= 0.95


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_detection_engine_matches_torch(tmp_path, precision):
    import fcn_perception
    from fcn_perception.inference.agreement import compare_frames

    path, _, _ = _engine("detection", tmp_path, precision)
    trt_p = fcn_perception.load_predictor("detection", "tensorrt", path)
    ref = fcn_perception.load_predictor("detection", "torch-cpu")
    report = compare_frames(ref, trt_p, _frames(6))
    assert report["boxes"] >= 10 and report["agreement"] >= 0.95, report


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_auto_picks_tensorrt_and_bad_engines_are_explained(tmp_path, monkeypatch):
    import fcn_perception
    from fcn_perception.errors import ModelFileError

    monkeypatch.setenv("FCN_PERCEPTION_CACHE", str(tmp_path / "cache"))
    p = fcn_perception.load_predictor("segmentation", profile="64x64:360x480:720x960")
    assert p.backend_name == "tensorrt"
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"not an engine")
    (tmp_path / "bad.engine.json").write_text(json.dumps({"card": p.card, "key": {}}))
    with pytest.raises(ModelFileError, match="could not load the engine"):
        fcn_perception.load_predictor("segmentation", "tensorrt", bad)
