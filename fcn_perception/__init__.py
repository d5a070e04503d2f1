"""fcn_perception: FCN-8s segmentation and R-FCN detection for ROS 2 robots.

    >>> import fcn_perception
    >>> seg = fcn_perception.load_predictor("segmentation")
    >>> labels = seg(rgb).labels          # (H, W) uint8 class ids
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_predictor", "__version__"]


def load_predictor(task: str, backend: str = "auto", weights=None, **kwargs):
    """Build a Predictor for ``"segmentation"`` or ``"detection"``.

    See :func:`fcn_perception.inference.predictor.load_predictor`.
    """
    from fcn_perception.inference.predictor import load_predictor as _load

    return _load(task, backend=backend, weights=weights, **kwargs)
