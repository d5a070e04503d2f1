"""ByteTrack's (and DeepSORT's) constant-velocity Kalman filter on image boxes, batched.

State ``(x, y, a, h, vx, vy, va, vh)``: box centre, aspect ratio ``w / h``, height and
their velocities per frame; measurement ``(x, y, a, h)``.  The noise scales with the box
height (``1/20`` of it for positions, ``1/160`` for velocities), as in ByteTrack.
Arrays: ``mean (T, 8)``, ``cov (T, 8, 8)``, measurements ``(T, 4)``.
"""
from __future__ import annotations

import numpy as np

STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # x += vx, ... per frame
_H = np.eye(4, 8)


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` corners -> ``(N, 4)`` centre x, centre y, aspect w / h, height."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0]
    h = np.maximum(b[:, 3] - b[:, 1], 1e-6)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, w / h, h], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """``(N, 4)`` (or the first four columns of a state) -> ``(N, 4)`` corners."""
    s = np.asarray(xyah, np.float64).reshape(-1, xyah.shape[-1])[:, :4]
    w = s[:, 2] * s[:, 3]
    return np.stack([s[:, 0] - w / 2, s[:, 1] - s[:, 3] / 2,
                     s[:, 0] + w / 2, s[:, 1] + s[:, 3] / 2], axis=1)


def _diag(std: np.ndarray) -> np.ndarray:
    """``(T, k)`` standard deviations -> ``(T, k, k)`` diagonal covariances."""
    out = np.zeros((*std.shape, std.shape[-1]))
    idx = np.arange(std.shape[-1])
    out[:, idx, idx] = std ** 2
    return out


def initiate(measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from ``(T, 4)`` xyah measurements: zero velocity, wide velocity prior."""
    z = np.asarray(measurement, np.float64).reshape(-1, 4)
    h = z[:, 3]
    mean = np.concatenate([z, np.zeros_like(z)], axis=1)
    p, v = 2 * STD_POSITION * h, 10 * STD_VELOCITY * h
    std = np.stack([p, p, np.full_like(h, 1e-2), p, v, v, np.full_like(h, 1e-5), v], axis=1)
    return mean, _diag(std)


def predict(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead for every track."""
    h = mean[:, 3]
    p, v = STD_POSITION * h, STD_VELOCITY * h
    std = np.stack([p, p, np.full_like(h, 1e-2), p, v, v, np.full_like(h, 1e-5), v], axis=1)
    return mean @ _F.T, _F @ cov @ _F.T + _diag(std)


def update(mean: np.ndarray, cov: np.ndarray,
           measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct every track with its ``(T, 4)`` xyah measurement."""
    h = mean[:, 3]
    p = STD_POSITION * h
    r = _diag(np.stack([p, p, np.full_like(h, 1e-1), p], axis=1))
    projected = mean @ _H.T
    s = _H @ cov @ _H.T + r  # (T, 4, 4)
    gain = np.linalg.solve(s, (cov @ _H.T).transpose(0, 2, 1)).transpose(0, 2, 1)  # (T, 8, 4)
    innovation = np.asarray(measurement, np.float64).reshape(-1, 4) - projected
    new_mean = mean + np.einsum("tij,tj->ti", gain, innovation)
    new_cov = cov - gain @ s @ gain.transpose(0, 2, 1)
    return new_mean, new_cov
