"""Predictor.predict_batch (several cameras, one inference) and the input geometry
through load_predictor: results equal frame-by-frame runs, at the input resolution."""
from __future__ import annotations

import numpy as np
import pytest
from factories import camvid_frames, make_segmentation_weights

import fcn_perception
from fcn_perception.errors import ModelFileError
from fcn_perception.inference.geometry import UNSEEN_LABEL


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FCN_PERCEPTION_CACHE", str(folder / "cache"))
        yield make_segmentation_weights(folder)


@pytest.fixture(scope="module")
def frames():
    return [f[:180, :240] for f in camvid_frames(3)]


@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime-cpu"])
def test_batch_equals_one_by_one(weights, frames, backend):
    predictor = fcn_perception.load_predictor("segmentation", backend, weights)
    odd = frames[0][:150, :200]  # another size: its own group
    batch = predictor.predict_batch([*frames, odd], confidence=True)
    for frame, result in zip([*frames, odd], batch):
        single = predictor(frame, confidence=True)
        assert result.labels.shape == frame.shape[:2]
        assert (result.labels == single.labels).mean() > 0.999
        np.testing.assert_allclose(result.confidence, single.confidence, atol=1e-4)
    assert len({r.latency_ms for r in batch}) == 1


def test_batch_runs_one_forward_pass(weights, frames):
    """The ONNX Runtime backend runs the three same-size frames as one (3, 3, H, W) input:
    each frame's outputs are slices of one (3, H, W) array."""
    predictor = fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", weights)
    outputs = predictor.backend.infer_batch(frames, None, confidence=True)
    assert len(outputs) == 3
    for out in outputs:
        assert out["labels"].shape == (1, 180, 240)
        assert out["labels"].base is not None and out["labels"].base.shape[0] == 3
        assert out["confidence"].base.shape[0] == 3


def test_geometry_through_load_predictor(weights, frames):
    """A 16:9 crop of a frame, letterboxed into 96x96 with a ROI: labels at the input
    resolution, 255 outside the ROI, the network input padded (not squashed)."""
    frame = np.ascontiguousarray(frames[0][:135, :240])
    predictor = fcn_perception.load_predictor(
        "segmentation", "torch-cpu", weights, input_size=(96, 96), aspect="letterbox",
        roi=(20, 10, 200, 0))
    assert predictor.backend.seg_output == "logits"  # reduced size: scores upsampled
    placement = predictor.geometry.place(frame.shape[:2])
    assert placement.region.hw == (125, 200) and placement.padded
    result = predictor(frame, confidence=True)
    assert result.labels.shape == frame.shape[:2]
    assert (result.labels[:10] == UNSEEN_LABEL).all()
    assert (result.labels[:, :20] == UNSEEN_LABEL).all()
    assert (result.labels[:, 220:] == UNSEEN_LABEL).all()
    inside = result.labels[10:, 20:220]
    assert (inside < 11).all()
    assert (result.confidence[:10] == 0).all() and (result.confidence[10:, 20:220] > 0).all()
    # changing the geometry at runtime: the whole frame again
    predictor.set_geometry(size=(96, 96), policy="resize")
    assert (predictor(frame).labels < 11).all()


def test_onnx_file_without_confidence_says_how_to_get_it(weights, tmp_path):
    from fcn_perception.inference.export import export_onnx, load_model

    model, card = load_model(weights, "segmentation")
    plain = export_onnx(model, "segmentation", tmp_path / "plain.onnx", card=card)
    predictor = fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", plain)
    frame = np.zeros((64, 96, 3), np.uint8)
    assert predictor(frame).confidence is None
    with pytest.raises(ModelFileError, match="export --confidence"):
        predictor(frame, confidence=True)
    with_conf = export_onnx(model, "segmentation", tmp_path / "conf.onnx", card=card,
                            confidence=True)
    result = fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", with_conf)(
        frame, confidence=True)
    assert result.confidence.shape == (64, 96)
