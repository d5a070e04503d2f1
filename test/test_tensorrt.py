"""TensorRT: the engine cache key and rebuild decision and the calibration data run
everywhere; building and running engines needs TensorRT and a GPU (marked, skipped
cleanly elsewhere)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import test_inference as common

from fcn_perception.inference import engine_cache as ec
from fcn_perception.inference.backends.tensorrt_backend import tensorrt_unavailable

# shared session fixtures and helpers (one export per test session)
det_weights = common.det_weights
inference_cache = common.inference_cache
seg_weights = common.seg_weights
assert_detections_match = common.assert_detections_match
camvid_frames = common.camvid_frames


TRT_REASON = tensorrt_unavailable()
requires_trt = pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT: {TRT_REASON}")

BASE = dict(onnx_sha256="a" * 64, trt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3",
            compute_capability="9.0", precision="fp16", profile=ec.Profile())


def key(**changes):
    return ec.engine_key(**{**BASE, **changes})


# --------------------------------------------------------------------------- key
@pytest.mark.parametrize("field, value", [
    ("onnx_sha256", "b" * 64), ("trt_version", "10.4.0"), ("gpu_name", "NVIDIA L4"),
    ("compute_capability", "8.9"), ("precision", "fp32"),
    ("profile", ec.Profile((64, 64), (360, 480), (720, 960))),
])
def test_every_field_changes_the_key(field, value):
    assert ec.key_digest(key(**{field: value})) != ec.key_digest(key())


def test_key_is_stable_and_calibration_only_counts_for_int8():
    assert ec.key_digest(key()) == ec.key_digest(key())
    assert key(calibration="x")["calibration"] is None  # fp16 ignores calibration
    a, b = key(precision="int8", calibration="x"), key(precision="int8", calibration="y")
    assert ec.key_digest(a) != ec.key_digest(b)
    with pytest.raises(ValueError, match="precision"):
        key(precision="int4")


def test_engine_path_names_precision_and_key(tmp_path):
    path = ec.engine_path(tmp_path, "/x/fcn-abc.onnx", key())
    assert path.parent == tmp_path and path.name.startswith("fcn-abc-fp16-")
    assert path.suffix == ".engine"
    assert ec.engine_path(tmp_path, "/x/fcn-abc.onnx", key(precision="fp32")) != path


# --------------------------------------------------------------------------- rebuild decision
def test_rebuild_decision(tmp_path):
    fields = key()
    engine = ec.engine_path(tmp_path, "m.onnx", fields)
    assert "no engine" in ec.rebuild_reason(engine, fields)
    ec.write_engine(engine, b"engine-bytes", fields, card={"task": "segmentation"})
    assert ec.rebuild_reason(engine, fields) is None  # same key: reuse
    assert ec.read_sidecar(engine)["card"] == {"task": "segmentation"}
    # a TensorRT upgrade or another GPU changes the key, and the reason says what changed
    reason = ec.rebuild_reason(engine, key(trt_version="10.5.0"))
    assert "tensorrt" in reason and "10.3.0" in reason and "10.5.0" in reason
    assert "gpu" in ec.rebuild_reason(engine, key(gpu_name="Orin"))
    assert "profile" in ec.rebuild_reason(engine, key(profile=ec.Profile.parse("360x480")))
    # a torn or replaced engine file no longer matches its recorded sha256
    engine.write_bytes(b"engine-bytes-but-different")
    assert "sha256" in ec.rebuild_reason(engine, fields)
    ec.write_engine(engine, b"engine-bytes", fields)
    ec.sidecar_path(engine).write_text("{not json")
    assert "sidecar" in ec.rebuild_reason(engine, fields) or "key" in ec.rebuild_reason(
        engine, fields)
    ec.sidecar_path(engine).unlink()
    assert ec.rebuild_reason(engine, fields) is not None


def test_sidecar_is_json_with_the_key(tmp_path):
    fields = key()
    engine = ec.write_engine(tmp_path / "e.engine", b"123", fields)
    meta = json.loads(ec.sidecar_path(engine).read_text())
    assert meta["key"] == fields and meta["key_digest"] == ec.key_digest(fields)
    assert not list(tmp_path.glob(".*.tmp"))


def test_timing_cache_path_is_per_version_and_gpu(tmp_path):
    a = ec.timing_cache_path(tmp_path, "10.3.0", "NVIDIA H100 80GB HBM3")
    assert a != ec.timing_cache_path(tmp_path, "10.4.0", "NVIDIA H100 80GB HBM3")
    assert " " not in a.name


# --------------------------------------------------------------------------- profile
def test_profile_parse_and_contains():
    p = ec.Profile.parse("64x64:360x480:1088x1920")
    assert p.shapes() == ((1, 3, 64, 64), (1, 3, 360, 480), (1, 3, 1088, 1920))
    assert p.contains((720, 960)) and not p.contains((32, 480))
    assert ec.Profile.parse("360x480") == ec.Profile((360, 480), (360, 480), (360, 480))
    assert str(p) == "64x64:360x480:1088x1920"
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ec.Profile.parse("360x480:64x64:1088x1920")
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        ec.Profile.parse("big")
    assert ec.Profile.for_card({"input": {"size": [256, 512]}}).opt == (256, 512)
    assert ec.Profile.for_card({"input": {"size": None}}) == ec.Profile()


# --------------------------------------------------------------------------- calibration data
def test_calibration_batches_from_a_folder(tmp_path):
    from PIL import Image

    from fcn_perception.inference.calibration import CalibrationBatches, list_images
    from fcn_perception.inference.preprocess import InputSpec

    for i, frame in enumerate(camvid_frames(3)):
        Image.fromarray(frame).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = list_images(tmp_path)
    assert [p.name for p in images] == ["f0.png", "f1.png", "f2.png"]
    batches = CalibrationBatches(images, InputSpec(), (64, 96), batch_size=2)
    out = list(batches)
    assert len(out) == 1 and out[0].shape == (2, 3, 64, 96) and out[0].dtype == np.float32
    assert abs(float(out[0].mean())) < 3
    assert batches.fingerprint("entropy") != batches.fingerprint("minmax")
    assert len(list_images(tmp_path, limit=2)) == 2
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(_empty(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "missing")


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- with TensorRT
PROFILE = ec.Profile((64, 64), (360, 480), (720, 960))


def _engine(weights, task, tmp_path, precision, **kw):
    from fcn_perception.inference.backends.tensorrt_backend import get_engine
    from fcn_perception.inference.export import cached_onnx, check_onnx

    onnx_path = cached_onnx(weights)
    card = check_onnx(onnx_path, task)
    return get_engine(onnx_path, precision, PROFILE, card=card, task=task, cache_dir=tmp_path,
                      **kw)


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
@requires_trt
@pytest.mark.parametrize("precision, agree", [("fp32", 0.999), ("fp16", 0.99)])
def test_engine_segmentation_matches_torch_and_is_cached(seg_weights, tmp_path, precision,
                                                         agree):
    import fcn_perception

    path, built, why = _engine(seg_weights, "segmentation", tmp_path, precision)
    assert built and "no engine" in why
    again, built2, _ = _engine(seg_weights, "segmentation", tmp_path, precision)
    assert again == path and not built2  # same key: not rebuilt
    ref = fcn_perception.load_predictor("segmentation", "torch-cpu", seg_weights)
    trt_p = fcn_perception.load_predictor("segmentation", "tensorrt", path)
    assert trt_p.backend_name == "tensorrt"
    for frame in camvid_frames(2):
        assert (trt_p(frame).labels == ref(frame).labels).mean() >= agree
    assert trt_p(np.zeros((97, 131, 3), np.uint8)).labels.shape == (97, 131)
    with pytest.raises(ValueError, match="outside the TensorRT engine's profile"):
        trt_p(np.zeros((32, 32, 3), np.uint8))


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
@requires_trt
@pytest.mark.parametrize("calibrator", ["entropy", "minmax"])
def test_int8_engine_with_calibration(seg_weights, tmp_path, calibrator):
    from PIL import Image

    import fcn_perception

    folder = tmp_path / "calib"
    folder.mkdir()
    for i, frame in enumerate(camvid_frames(3)):
        Image.fromarray(frame).save(folder / f"{i}.png")
    path, built, _ = _engine(seg_weights, "segmentation", tmp_path, "int8",
                             calibration_images=folder, calibrator=calibrator)
    assert built and ec.read_sidecar(path)["key"]["calibration"]
    trt_p = fcn_perception.load_predictor("segmentation", "tensorrt", path)
    ref = fcn_perception.load_predictor("segmentation", "torch-cpu", seg_weights)
    frame = camvid_frames(1)[0]
    assert (trt_p(frame).labels == ref(frame).labels).mean() >= 0.8


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
@requires_trt
def test_detection_engine_matches_torch(det_weights, tmp_path):
    import fcn_perception

    path, _, _ = _engine(det_weights, "detection", tmp_path, "fp32")
    trt_p = fcn_perception.load_predictor("detection", "tensorrt", path)
    ref = fcn_perception.load_predictor("detection", "torch-cpu", det_weights)
    frame = camvid_frames(1)[0]
    assert_detections_match(ref(frame), trt_p(frame), iou=0.99, score_tol=1e-2)


@pytest.mark.tensorrt
@pytest.mark.gpu
@requires_trt
def test_auto_picks_tensorrt_and_bad_engines_are_explained(seg_weights, tmp_path):
    import fcn_perception
    from fcn_perception.errors import ModelFileError

    p = fcn_perception.load_predictor("segmentation", weights=seg_weights,
                                      profile="64x64:360x480:720x960")
    assert p.backend_name == "tensorrt"
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"not an engine")
    (tmp_path / "bad.engine.json").write_text(json.dumps({"card": p.card, "key": {}}))
    with pytest.raises(ModelFileError, match="could not load the engine"):
        fcn_perception.load_predictor("segmentation", "tensorrt", bad)
