"""What a caller may rely on from a predictor: typed interfaces (no torch import here).

:class:`~fcn_perception.inference.predictor.Predictor` implements both protocols (one
per task); the ROS nodes and the bag tools are written against these, so a test or an
integrator can hand them any object with the same members.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from fcn_perception.inference.results import DetectionResult, SegmentationResult


class LoadedModel(Protocol):
    """The members both tasks share."""

    #: class names, index = class id
    classes: list[str]
    #: RGB colour per class (or None: the default palette)
    palette: list[list[int]] | None

    @property
    def backend_name(self) -> str:
        """The concrete backend running it (a name of ``backends.CONCRETE``)."""

    @property
    def precision(self) -> str:
        """``fp32``, ``fp16`` or ``int8``: what the backend runs."""


class SegmentationPredictor(LoadedModel, Protocol):
    def __call__(self, rgb: np.ndarray, *, confidence: bool = False) -> SegmentationResult:
        """Labels of an ``(H, W, 3)`` uint8 RGB frame at its resolution (with
        ``confidence``: and the top class's probability per pixel)."""

    # optional: predict_batch(images, *, confidence=False) -> list[SegmentationResult]
    # (several cameras in one inference; the nodes call __call__ per frame without it)


class DetectionPredictor(LoadedModel, Protocol):
    @property
    def nms_threshold(self) -> float:
        """The IoU threshold of the model's own per-class NMS."""

    def __call__(self, rgb: np.ndarray, *, score_threshold: float | None = None,
                 max_detections: int | None = None) -> DetectionResult:
        """Detections of an ``(H, W, 3)`` uint8 RGB frame in its pixels, scoring at least
        ``score_threshold``, at most ``max_detections`` of them (None: the defaults the
        predictor was loaded with)."""

    # optional: predict_batch(images, *, score_threshold=None, max_detections=None)
    # -> list[DetectionResult] (several cameras in one inference)
