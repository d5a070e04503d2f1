"""Per-pixel confidence (the top class's softmax probability): in the exported graphs
(FCN's phase-map form and the generic one), in ONNX Runtime, and through the Predictor
for labels and logits graphs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import camvid_frames, make_segmentation_weights

from fcn_perception.inference.export import export_module, export_onnx, load_model


def _reference(model, x):
    with torch.no_grad():
        scores = model(x)
    return scores.argmax(1).to(torch.uint8), scores.softmax(1).amax(1)


@pytest.fixture(scope="module")
def fcn(tmp_path_factory):
    path = make_segmentation_weights(tmp_path_factory.mktemp("conf"))
    model, card = load_model(path, "segmentation")
    return path, model, card


def _input(h=64, w=96, seed=0):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_fcn_labels_graph_confidence_is_exact(fcn):
    _, model, _ = fcn
    module = export_module(model, "segmentation")
    x = _input()
    with torch.no_grad():
        plain = module(x)
        labels, conf = module(x, confidence=True)
    ref_labels, ref_conf = _reference(model, x)
    assert torch.equal(plain, labels)
    assert (labels == ref_labels).float().mean() > 0.999  # phase form vs transposed conv
    torch.testing.assert_close(conf, ref_conf, rtol=1e-4, atol=1e-5)
    assert conf.shape == labels.shape and conf.dtype == torch.float32


def test_generic_segmentation_export_confidence():
    from fcn_perception.models import build_model

    torch.manual_seed(0)
    unet = build_model({"name": "unet", "num_classes": 5, "width": 4}).eval()
    module = export_module(unet, "segmentation", confidence=True)
    x = _input(32, 48)
    with torch.no_grad():
        labels, conf = module(x)
        assert torch.equal(module(x, confidence=False), labels)
    ref_labels, ref_conf = _reference(unet, x)
    assert torch.equal(labels, ref_labels)
    torch.testing.assert_close(conf, ref_conf, rtol=1e-5, atol=1e-6)


def test_onnx_confidence_variant_runs_in_onnxruntime(fcn, tmp_path):
    import onnxruntime as ort

    from fcn_perception.inference.export import check_onnx, onnx_io_specs

    _, model, card = fcn
    path = export_onnx(model, "segmentation", tmp_path / "c.onnx", card=card, confidence=True)
    check_onnx(path, "segmentation")
    import onnx

    _, outs = onnx_io_specs(onnx.load(str(path), load_external_data=False))
    assert [o.name for o in outs] == ["labels", "confidence"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _input(72, 100, seed=1)  # another size than traced: dynamic axes
    labels, conf = session.run(["labels", "confidence"], {"image": x.numpy()})
    with torch.no_grad():
        t_labels, t_conf = export_module(model, "segmentation")(x, confidence=True)
    assert (labels == t_labels.numpy()).mean() > 0.999
    np.testing.assert_allclose(conf, t_conf.numpy(), rtol=1e-4, atol=1e-5)
@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime-cpu"])
@pytest.mark.parametrize("size", [None, [90, 120]])
def test_predictor_confidence_on_request(fcn, backend, size, tmp_path, monkeypatch):
    """Native (labels graph) and reduced size (logits): confidence at the input resolution,
    in [0, 1], consistent with the labels; labels unchanged; nothing without asking."""
    import fcn_perception
    from fcn_perception.card import read_card, write_card

    monkeypatch.setenv("FCN_PERCEPTION_CACHE", str(tmp_path / "cache"))
    path, _, _ = fcn
    weights = path
    if size is not None:
        weights = tmp_path / "sized.safetensors"
        weights.write_bytes(path.read_bytes())
        card = read_card(path)
        card["input"]["size"] = size
        write_card(card, weights)
    predictor = fcn_perception.load_predictor("segmentation", backend, weights)
    frame = camvid_frames(1)[0][:180, :240]
    plain = predictor(frame)
    assert plain.confidence is None
    result = predictor(frame, confidence=True)
    np.testing.assert_array_equal(result.labels, plain.labels)
    conf = result.confidence
    assert conf.shape == frame.shape[:2] and conf.dtype == np.float32
    assert conf.min() >= 1.0 / 11 - 1e-5 and conf.max() <= 1.0 + 1e-6
    assert conf.std() > 0  # not a constant
    again = predictor(frame)
    assert again.confidence is None


def test_export_cli_confidence_flag(fcn, tmp_path):
    import onnx

    from fcn_perception.cli import main
    from fcn_perception.inference.export import onnx_io_specs

    path, _, _ = fcn
    out = tmp_path / "c.onnx"
    assert main(["export", "--weights", str(path), "--confidence", "-o", str(out)]) == 0
    _, outs = onnx_io_specs(onnx.load(str(out), load_external_data=False))
    assert [o.name for o in outs] == ["labels", "confidence"]
