"""Class balancing for the segmentation cross-entropy.

Median-frequency balancing (Eigen & Fergus 2015): ``w_c = median(f) / f_c`` with
``f_c`` the pixel frequency of class ``c`` over the images that contain it.  ``power``
softens it (``w_c ** power``; 1 = plain median-frequency, 0 = unweighted).
"""
from __future__ import annotations

import numpy as np
import torch


def class_frequencies(labels, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Median-frequency statistics: ``f_c = pixels of c / pixels of images containing c``."""
    pixels = np.zeros(num_classes, np.float64)
    image_pixels = np.zeros(num_classes, np.float64)
    for lab in labels:
        lab = np.asarray(lab).ravel()
        if ignore_index is not None:
            lab = lab[lab != ignore_index]
        counts = np.bincount(lab, minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels += (counts > 0) * lab.size
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(image_pixels > 0, pixels / image_pixels, 0.0)


def median_frequency_weights(freq: np.ndarray, power: float = 1.0) -> torch.Tensor:
    """Weights ``(median(f) / f_c) ** power``; classes never seen get weight 0."""
    seen = freq > 0
    w = np.zeros_like(freq)
    w[seen] = (np.median(freq[seen]) / freq[seen]) ** power
    return torch.tensor(w, dtype=torch.float32)
