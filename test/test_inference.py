"""Predictor API, backends (torch vs ONNX Runtime parity on CamVid), auto-selection,
odd sizes and bad input.  The weights and predictor fixtures are in conftest.py."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import SEG_ARCH, box_iou, camvid_frames, model_card

import fcn_perception
from fcn_perception.errors import BackendUnavailable, ImageError, ModelFileError, WeightsError
from fcn_perception.inference import backends as backends_mod
from fcn_perception.inference import predictor as predictor_mod


def assert_detections_match(ref, other, iou: float = 0.99, score_tol: float = 1e-3):
    """Every detection of ``ref`` has one in ``other`` of the same class with IoU >= iou."""
    assert len(ref) > 0, "the reference found nothing: the test would prove nothing"
    assert abs(len(ref) - len(other)) <= max(1, len(ref) // 50), (len(ref), len(other))
    ious = box_iou(ref.boxes, other.boxes) if len(other) else np.zeros((len(ref), 0))
    unmatched = []
    for i in range(len(ref)):
        same = (other.class_ids == ref.class_ids[i]) & (ious[i] >= iou) & (
            np.abs(other.scores - ref.scores[i]) <= score_tol)
        if not same.any():
            unmatched.append(i)
    # near-ties at the NMS/score thresholds may flip a rare low-score box, nothing else
    assert len(unmatched) <= max(1, len(ref) // 50), (
        f"{len(unmatched)} of {len(ref)} detections unmatched, e.g. "
        f"{ref.boxes[unmatched[:3]]} {ref.scores[unmatched[:3]]}")


# --------------------------------------------------------------------------- parity
def test_segmentation_onnxruntime_matches_torch_on_camvid(seg_pair):
    torch_p, ort_p = seg_pair
    assert torch_p.backend_name == "torch-cpu" and ort_p.backend_name == "onnxruntime-cpu"
    for frame in camvid_frames(3):
        a, b = torch_p(frame), ort_p(frame)
        assert a.labels.shape == frame.shape[:2] and a.labels.dtype == np.uint8
        assert b.labels.shape == frame.shape[:2] and b.labels.dtype == np.uint8
        assert len(np.unique(a.labels)) >= 3, "degenerate label map: parity would be trivial"
        assert (a.labels == b.labels).mean() >= 0.999


def test_detection_onnxruntime_matches_torch_on_camvid(det_pair):
    torch_p, ort_p = det_pair
    for frame in camvid_frames(2):
        a, b = torch_p(frame), ort_p(frame)
        for r in (a, b):
            assert r.boxes.dtype == np.float32 and r.boxes.shape == (len(r), 4)
            assert r.class_ids.dtype == np.int64 and r.scores.dtype == np.float32
            assert np.all(np.diff(r.scores) <= 0), "scores must be sorted descending"
            assert np.all(r.boxes[:, 2] <= frame.shape[1]) and np.all(r.boxes[:, 3] <= frame.shape[0])
        assert_detections_match(a, b)


# --------------------------------------------------------------------------- sizes
def odd_image(hw) -> np.ndarray:
    from fcn_perception.inference.geometry import resize_image

    return resize_image(camvid_frames(1)[0], hw)


@pytest.mark.parametrize("hw", [(97, 131), (361, 479), (33, 65), (1, 1), (240, 17)])
def test_odd_sizes_round_trip_segmentation(seg_pair, hw):
    img = odd_image(hw)
    for p in seg_pair:
        labels = p(img).labels
        assert labels.shape == hw and labels.dtype == np.uint8


@pytest.mark.parametrize("hw", [(97, 131), (361, 479)])
def test_odd_sizes_detection_boxes_inside_image(det_pair, hw):
    img = odd_image(hw)
    for p in det_pair:
        r = p(img)
        assert r.boxes.shape == (len(r), 4) and len(r) > 0, "no box: nothing checked"
        assert r.boxes[:, [0, 2]].max() <= hw[1] and r.boxes[:, [1, 3]].max() <= hw[0]
        assert (r.boxes >= 0).all()


def test_fixed_input_size_maps_back_to_input_resolution(tmp_path, seg_weights):
    weights = tmp_path / "fixed.safetensors"  # same weights (cached ONNX reused), new card
    weights.write_bytes(seg_weights.read_bytes())
    card = json.loads(seg_weights.with_suffix(".json").read_text())
    card["input"]["size"] = [64, 96]
    weights.with_suffix(".json").write_text(json.dumps(card))
    for backend in ("torch-cpu", "onnxruntime-cpu"):
        p = fcn_perception.load_predictor("segmentation", backend, weights)
        for hw in ((360, 480), (97, 131)):
            assert p(np.zeros((*hw, 3), np.uint8)).labels.shape == hw


def test_reduced_size_network_upsamples_scores_like_training(seg_weights, tmp_path):
    """A card with input.size: resize (bilinear, antialias), run, upsample the scores
    bilinearly to the frame and argmax there (training/train_segmentation.confusion_on)."""
    import torch.nn.functional as F

    from fcn_perception.inference.export import load_model
    from fcn_perception.inference.preprocess import InputSpec, normalize_torch

    weights = tmp_path / "small.safetensors"
    weights.write_bytes(seg_weights.read_bytes())
    card = json.loads(seg_weights.with_suffix(".json").read_text())
    card["input"]["size"] = [180, 240]
    weights.with_suffix(".json").write_text(json.dumps(card))
    model, _ = load_model(weights)
    spec = InputSpec.from_card(card)
    preds = [fcn_perception.load_predictor("segmentation", b, weights)
             for b in ("torch-cpu", "onnxruntime-cpu")]
    for frame in camvid_frames(2):
        with torch.no_grad():
            x = normalize_torch(torch.from_numpy(frame.copy())[None], spec.mean, spec.std)
            x = F.interpolate(x, size=(180, 240), mode="bilinear", antialias=True)
            logits = F.interpolate(model(x), size=frame.shape[:2], mode="bilinear")
            ref = logits.argmax(1)[0].numpy()
        for p in preds:
            labels = p(frame).labels
            assert labels.shape == frame.shape[:2]
            assert (labels == ref).mean() >= 0.999, p.backend_name


def test_detection_boxes_scale_back_with_a_fixed_size():
    from fcn_perception.inference.postprocess import detection_result

    out = {"boxes": np.array([[10, 20, 30, 40], [0, 0, 0, 0]], np.float32),
           "scores": np.array([0.9, 0.0], np.float32), "labels": np.array([2, -1]),
           "num_detections": np.array(1)}
    r = detection_result(out, input_hw=(200, 300), net_hw=(100, 100))
    assert len(r) == 1 and r.class_ids.tolist() == [2]
    np.testing.assert_allclose(r.boxes[0], [30, 40, 90, 80])
    assert len(detection_result(out, (100, 100), (100, 100), score_threshold=0.95)) == 0


# --------------------------------------------------------------------------- selection
def pretend_available(monkeypatch, available: set[str]) -> None:
    """Only the backends in ``available`` can run (the others report why not)."""
    real = backends_mod.unavailable_reason

    def reason(name):
        return real(name) if name in available else "pretend missing"

    monkeypatch.setattr(backends_mod, "unavailable_reason", reason)
    monkeypatch.setattr(predictor_mod, "unavailable_reason", reason)


def test_auto_takes_the_first_available_in_order_and_logs_why(seg_weights, monkeypatch,
                                                              caplog):
    pretend_available(monkeypatch, {"onnxruntime-cpu", "torch-cpu"})
    with caplog.at_level(logging.INFO, logger="fcn_perception.inference"):
        p = fcn_perception.load_predictor("segmentation", weights=seg_weights)
    assert p.backend_name == "onnxruntime-cpu"
    (msg,) = [r.getMessage() for r in caplog.records if "backend auto ->" in r.getMessage()]
    assert "onnxruntime-cpu" in msg
    for skipped in ("tensorrt", "onnxruntime-cuda", "torch-cuda"):
        assert f"skipped {skipped}: pretend missing" in msg


def test_auto_falls_back_to_torch_without_onnxruntime(seg_weights, monkeypatch):
    pretend_available(monkeypatch, {"torch-cpu"})
    p = fcn_perception.load_predictor("segmentation", weights=seg_weights)
    assert p.backend_name == "torch-cpu"


def test_device_narrows_the_choice(seg_weights, monkeypatch):
    pretend_available(monkeypatch, {"onnxruntime-cpu", "torch-cpu"})
    p = fcn_perception.load_predictor("segmentation", "torch", seg_weights, device="cpu")
    assert p.backend_name == "torch-cpu"
    with pytest.raises(BackendUnavailable, match="torch-cuda: pretend missing"):
        fcn_perception.load_predictor("segmentation", "torch", seg_weights, device="cuda")
    with pytest.raises(ValueError, match="runs on cuda, not on device cpu"):
        fcn_perception.load_predictor("segmentation", "tensorrt", seg_weights, device="cpu")


def test_auto_order_prefers_the_gpu_then_onnxruntime():
    order = backends_mod.AUTO_ORDER
    kinds = [backends_mod.RUNS_ON[n] for n in order]
    assert kinds == sorted(kinds, key=lambda kind: kind != "cuda")  # every GPU one first
    assert order[0] == "tensorrt"
    for device in ("cuda", "cpu"):  # ONNX Runtime before torch on each device
        assert order.index(f"onnxruntime-{device}") < order.index(f"torch-{device}")
    assert set(order) == set(backends_mod.CONCRETE) - {"onnxruntime-tensorrt"}


def test_unknown_backend_and_unavailable_backend(seg_weights, monkeypatch):
    with pytest.raises(ValueError, match="unknown backend"):
        fcn_perception.load_predictor("segmentation", "openvino", seg_weights)
    pretend_available(monkeypatch, {"onnxruntime-cpu", "torch-cpu"})
    with pytest.raises(BackendUnavailable, match="^tensorrt: pretend missing$"):
        fcn_perception.load_predictor("segmentation", "tensorrt", seg_weights)


def test_onnx_file_as_weights_uses_embedded_card(seg_weights, seg_pair, tmp_path):
    from fcn_perception.inference.export import cached_onnx

    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(cached_onnx(seg_weights).read_bytes())  # no .json beside it
    p = fcn_perception.load_predictor("segmentation", weights=onnx_path)
    assert p.backend_name.startswith("onnxruntime") and p.classes[:2] == ["c0", "c1"]
    frame = camvid_frames(1)[0]
    assert (p(frame).labels == seg_pair[1](frame).labels).all()
    with pytest.raises(BackendUnavailable, match="weights file"):
        fcn_perception.load_predictor("segmentation", "torch-cpu", onnx_path)


def test_default_weights_are_used_when_none_given(seg_weights, monkeypatch, tmp_path):
    from fcn_perception import card

    absent = tmp_path / "absent.safetensors"
    monkeypatch.setitem(card.MODELS["segmentation"], "fast", absent)
    with pytest.raises(WeightsError, match=f"model 'fast' \\(segmentation\\) is {absent}, "
                                           "which is not installed"):
        fcn_perception.load_predictor("segmentation")
    monkeypatch.setitem(card.MODELS["segmentation"], "fast", seg_weights)
    p = fcn_perception.load_predictor("segmentation", "torch-cpu")
    assert p.source == seg_weights


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8, 3), np.float32), "dtype uint8"),
    (np.zeros((8, 8), np.uint8), r"\(H, W, 3\).*grey"),
    (np.zeros((8, 8, 4), np.uint8), "RGBA"),
    (np.zeros((3, 8, 8), np.uint8), "channels first"),
    (np.zeros((0, 8, 3), np.uint8), "non-empty"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_images_say_what_was_expected(seg_pair, bad, match):
    for p in seg_pair:
        with pytest.raises(ImageError, match=match):
            p(bad)


def test_non_contiguous_and_readonly_images_work(seg_pair):
    frame = camvid_frames(1)[0][::2, ::2]
    frame.flags.writeable = False
    for p in seg_pair:
        assert p(frame).labels.shape == frame.shape[:2]


def test_missing_and_corrupt_model_files(tmp_path, seg_weights):
    with pytest.raises(ModelFileError, match="does not exist"):
        fcn_perception.load_predictor("segmentation", weights=tmp_path / "nope.onnx")
    with pytest.raises(WeightsError, match="does not exist"):
        fcn_perception.load_predictor("segmentation", weights=tmp_path / "nope.safetensors")
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"this is not a protobuf at all" * 10)
    with pytest.raises(ModelFileError, match="corrupt.onnx"):
        fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", bad)
    with pytest.raises(WeightsError, match="do not know how to load"):
        fcn_perception.load_predictor("segmentation", weights=tmp_path / "model.bin")
    with pytest.raises(WeightsError, match="segmentation model"):
        fcn_perception.load_predictor("detection", "torch-cpu", seg_weights)


def _tiny_onnx(path: Path, input_name: str, output_name: str, argmax: bool) -> Path:
    class Net(torch.nn.Module):
        def forward(self, x):
            y = torch.nn.functional.conv2d(x, torch.ones(4, 3, 1, 1))
            return y.argmax(1).to(torch.uint8) if argmax else y

    torch.onnx.export(Net(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=[input_name], output_names=[output_name], opset_version=17)
    card = model_card("segmentation", SEG_ARCH)
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def test_mismatched_onnx_names_what_was_expected(tmp_path):
    wrong_input = _tiny_onnx(tmp_path / "a.onnx", "input", "labels", True)
    with pytest.raises(ModelFileError, match=r"'input'.*expected exactly one named 'image'"):
        fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", wrong_input)
    logits = _tiny_onnx(tmp_path / "b.onnx", "image", "labels", False)
    with pytest.raises(ModelFileError, match="integer type"):
        fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", logits)
    named = _tiny_onnx(tmp_path / "c.onnx", "image", "out", True)
    with pytest.raises(ModelFileError, match=r"missing \['labels'\].*Expected input 'image'"):
        fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", named)
    ok = _tiny_onnx(tmp_path / "d.onnx", "image", "labels", True)
    with pytest.raises(ModelFileError, match="detection contract"):
        fcn_perception.load_predictor("detection", "onnxruntime-cpu", ok)


# --------------------------------------------------------------------------- torch backend
def test_batchnorm_fusion_is_exact(seg_weights):
    from fcn_perception.inference.backends.torch_backend import fuse_batchnorm
    from fcn_perception.inference.export import load_model

    model, _ = load_model(seg_weights)
    fused, _ = load_model(seg_weights)
    assert fuse_batchnorm(fused) == 20  # ResNet-18: stem 1 + 8 blocks x 2 + 3 downsamples
    x = torch.randn(1, 3, 67, 91)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["torch-cuda", "onnxruntime-cuda"])
def test_cuda_backends_agree_with_cpu(seg_weights, seg_pair, backend):
    """Each CUDA backend agrees with torch-cpu, or the case skips saying why it cannot run
    here (never a pass that compared nothing)."""
    reason = backends_mod.unavailable_reason(backend)
    if reason:
        pytest.skip(f"{backend}: {reason}")
    frame = camvid_frames(1)[0]
    ref = seg_pair[0](frame).labels
    p = fcn_perception.load_predictor("segmentation", backend, seg_weights)
    assert p.backend.name == backend
    agree = (p(frame).labels == ref).mean()
    assert agree >= (0.99 if p.backend.precision == "fp16" else 0.999), (backend, agree)
