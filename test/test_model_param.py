"""The ``model`` parameter: ``fast`` (the default), ``accurate`` or a model file, resolved
by the torch-free card module; a named model that is not installed is one clear line."""
from __future__ import annotations

import pytest

import fcn_perception
from fcn_perception import card
from fcn_perception.errors import WeightsError

ACCURATE = "fcn8s_efficientnet_lite0_540x720_camvid.safetensors"


def test_names_resolve_to_the_shipped_files(tmp_path):
    assert card.model_file("segmentation", "fast") == card.DEFAULT_WEIGHTS["segmentation"]
    assert card.model_file("segmentation", None) == card.model_file("segmentation", "")
    assert card.model_file("detection", "fast").name == "rfcn_efficientnet_lite0_camvid.safetensors"
    assert card.read_card(card.model_file("segmentation", "fast"))["architecture"]["backbone"] \
        == "efficientnet_lite0"
    assert card.MODELS["segmentation"]["accurate"].name == ACCURATE
    own = tmp_path / "mine.onnx"
    assert card.model_file("segmentation", str(own)) == own  # a file is taken as given
    with pytest.raises(WeightsError, match=r"model 'accurate' is not a detection model name "
                                           r"\(fast\) nor a file"):
        card.model_file("detection", "accurate")
    with pytest.raises(WeightsError, match="model 'quick' is not a segmentation model name"):
        card.model_file("segmentation", "quick")


def test_accurate_loads_the_fast_network_at_540x720(tmp_path, monkeypatch):
    """``accurate`` is the fast model's network at 1.5x the CamVid frame; a named model
    whose file is missing is one clear line."""
    import numpy as np

    p = fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", "accurate")
    assert p.source == card.MODELS["segmentation"]["accurate"]
    assert p.card["architecture"] == card.read_card(card.DEFAULT_WEIGHTS["segmentation"])[
        "architecture"] and p.card["input"]["size"] == [540, 720]
    assert p(np.zeros((360, 480, 3), np.uint8)).labels.shape == (360, 480)
    absent = tmp_path / ACCURATE
    monkeypatch.setitem(card.MODELS["segmentation"], "accurate", absent)
    with pytest.raises(WeightsError) as info:
        fcn_perception.load_predictor("segmentation", "torch-cpu", "accurate")
    assert str(info.value) == (f"model 'accurate' (segmentation) is {absent}, which is not "
                               "installed; use fast or a weights file path")


def test_node_with_a_missing_named_model_stays_unconfigured(rclpy_context, monkeypatch,
                                                            tmp_path):
    """The node says which file is missing, in one line, and does not crash."""
    from ros_harness import Harness, make_node

    from fcn_perception.ros import nodes

    absent = tmp_path / "weights" / ACCURATE
    monkeypatch.setitem(card.MODELS["segmentation"], "accurate", absent)
    harness = Harness(rclpy_context)
    try:
        node = make_node(nodes.SegmentationNode, harness,
                         {"model": "accurate", "backend": "torch-cpu"})
        assert node._state_machine.current_state[1] == "unconfigured"
        assert node.configure_error == (
            f"could not load the segmentation predictor: model 'accurate' (segmentation) is "
            f"{absent}, which is not installed; use fast or a weights file path")
        assert node.get_parameter("model").value == "accurate"
    finally:
        harness.close()


LAUNCH_MODEL_ARGS = {
    "segmentation.launch.xml": {"model": "model"},
    "detection.launch.xml": {"model": "model"},
    "perception.launch.xml": {"segmentation.model": "segmentation_model",
                              "detection.model": "detection_model"},
}


def test_launch_files_pass_the_model_argument():
    """``model:=...`` at launch reaches the node's parameter (default: fast)."""
    from test_launch_files import LAUNCH_FILES, parse, resolve

    assert {p.name for p in LAUNCH_FILES} == set(LAUNCH_MODEL_ARGS)
    for path in LAUNCH_FILES:
        for param, arg in LAUNCH_MODEL_ARGS[path.name].items():
            assert parse(path)[1][arg] == "fast", (path.name, arg)
            root, args = parse(path, {arg: "/robot/mine.onnx"})
            values = {p.get("name"): resolve(p.get("value"), args)
                      for p in root.iter("param") if p.get("name")}
            assert values[param] == "/robot/mine.onnx", (path.name, values)
