"""Inference: Predictor = preprocess -> backend -> postprocess.

Backends: torch (CPU/CUDA), ONNX Runtime (CPU/CUDA/TensorRT EP) and TensorRT engines;
see :func:`fcn_perception.inference.predictor.load_predictor`.
"""
from __future__ import annotations

from fcn_perception.inference.results import DetectionResult, SegmentationResult

__all__ = ["DetectionResult", "SegmentationResult", "load_predictor", "Predictor"]


def __getattr__(name):  # lazy: importing results must not pull in torch/onnxruntime
    if name in ("load_predictor", "Predictor"):
        from fcn_perception.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(name)
