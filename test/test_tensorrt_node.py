"""The node parameters TensorRT users expect: ``device: cuda:N`` (parsed, validated, and
passed to the predictor as the GPU index) and ``force_engine_rebuild``."""
from __future__ import annotations

import pytest

from fcn_perception.ros import params


@pytest.mark.parametrize("text, parsed", [
    ("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cuda", ("cuda", None)),
    ("cuda:0", ("cuda", 0)), ("cuda:3", ("cuda", 3)), ("cuda:12", ("cuda", 12)),
])
def test_parse_device(text, parsed):
    assert params.parse_device(text) == parsed


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA:0", "cuda0",
                                  "cpu:0", " cuda:0"])
def test_bad_devices_are_refused_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
        params.parse_device(text)
    spec = next(s for s in params.PREDICTOR_PARAMS if s.name == "device")
    assert spec.validate(text) is not None


def test_cuda_n_selects_the_cuda_backends():
    assert params.backend_candidates("auto", "cuda:1") == ["tensorrt", "onnxruntime-cuda",
                                                           "torch-cuda"]
    assert params.backend_candidates("torch", "cuda:0") == ["torch-cuda"]
    with pytest.raises(ValueError, match="runs on cpu, not on device cuda"):
        params.backend_candidates("onnxruntime-cpu", "cuda:0")


class RecordingPredictor:
    classes = ["a", "b"]
    palette = None
    backend_name = "tensorrt"
    precision = "fp16"
    score_threshold = 0.0


def _node(rclpy_context, cli: list[str], calls: list):
    from fcn_perception.ros import nodes

    def factory(task, **kwargs):
        calls.append((task, kwargs))
        return RecordingPredictor()

    return nodes.SegmentationNode(context=rclpy_context, cli_args=["--ros-args", *cli],
                                  predictor_factory=factory)


def test_node_with_cuda_n_and_force_engine_rebuild_configures(rclpy_context):
    calls: list = []
    node = _node(rclpy_context, ["-p", "device:=cuda:1", "-p", "backend:=tensorrt",
                                 "-p", "force_engine_rebuild:=true"], calls)
    try:
        assert node._state_machine.current_state[1] == "active"
        ((task, kwargs),) = calls
        assert task == "segmentation" and kwargs["backend"] == "tensorrt"
        assert kwargs["gpu"] == 1 and kwargs["rebuild"] is True
        assert node.heads[0].describe_backend()["device"] == "cuda:1"
    finally:
        node.close()
        node.destroy_node()


def test_node_defaults_pass_no_gpu_and_no_rebuild(rclpy_context):
    calls: list = []
    node = _node(rclpy_context, ["-p", "backend:=torch-cpu"], calls)
    try:
        ((_, kwargs),) = calls
        assert "gpu" not in kwargs and "rebuild" not in kwargs
    finally:
        node.close()
        node.destroy_node()


def test_node_refuses_a_malformed_device(rclpy_context):
    from rclpy.exceptions import InvalidParameterValueException

    with pytest.raises(InvalidParameterValueException, match="device"):
        _node(rclpy_context, ["-p", "device:=gpu0"], [])
