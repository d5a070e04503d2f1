"""Results of a Predictor call: plain dataclasses of numpy arrays at input resolution."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SegmentationResult:
    """``labels``: ``(H, W)`` uint8 class ids at the input image's resolution (255 where
    the network did not look: outside the region of interest or the centre crop).

    ``confidence``: ``(H, W)`` float32 in ``[0, 1]``, the top class's softmax probability
    per pixel (0 where the network did not look), when asked for
    (``predictor(rgb, confidence=True)``), else None.
    """

    labels: np.ndarray
    latency_ms: float = 0.0
    confidence: np.ndarray | None = None


@dataclass
class DetectionResult:
    """Detections in input-image pixels.

    ``boxes``: ``(N, 4)`` float32 ``x1, y1, x2, y2``; ``scores``: ``(N,)`` float32 in
    ``[0, 1]``, sorted descending; ``class_ids``: ``(N,)`` int64 indices into the
    model card's ``classes``; ``class_scores``: ``(N, C)`` float32, each detection's
    class distribution (softmax probability of every class; ``scores`` is the entry of
    its ``class_ids``), or None when the model does not give it.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    class_scores: np.ndarray | None = None
    latency_ms: float = 0.0

    def __len__(self) -> int:
        return len(self.scores)
