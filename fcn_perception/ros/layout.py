"""How results are laid out in ``vision_msgs`` messages, for either message library.

The nodes build messages from rclpy's generated classes, the bag tools from rosbags'
typestore (no ROS installation needed).  Both take their classes from a ``types``
callable, ``types("vision_msgs/msg/Detection2D")`` -> class, and pass every field by
keyword (rosbags' classes have no defaults), so the two publish the same layout.
Nothing here imports ROS.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np


def ros_message_class(typename: str):
    """The rclpy message class of ``pkg/msg/Name`` (None if the package is not installed)."""
    pkg, _, name = typename.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


def hypotheses(class_id: int, score: float,
               class_scores: np.ndarray | None = None) -> list[tuple[int, float]]:
    """``(class id, score)`` of one detection: the detected class first, then (with its
    class distribution) every other class by descending probability."""
    first = (int(class_id), float(score))
    if class_scores is None:
        return [first]
    dist = np.asarray(class_scores, np.float64)
    return [first, *((int(c), float(dist[c])) for c in np.argsort(-dist, kind="stable")
                     if c != class_id)]


def detection_array(types: Callable[[str], type], header, boxes: np.ndarray,
                    scores: np.ndarray, class_ids: np.ndarray,
                    class_scores: np.ndarray | None = None):
    """A ``vision_msgs/Detection2DArray``: one Detection2D per box (centre and size in
    input pixels, ``header`` shared) with its :func:`hypotheses` (``class_id`` = the
    class index as a string, resolved to a name by ``label_info``).  The hypotheses'
    poses are left at identity: a 2D detector has no 3D pose."""
    t = {name: types(f"{pkg}/msg/{name}") for pkg, name in (
        ("vision_msgs", "Detection2DArray"), ("vision_msgs", "Detection2D"),
        ("vision_msgs", "ObjectHypothesisWithPose"), ("vision_msgs", "ObjectHypothesis"),
        ("vision_msgs", "BoundingBox2D"), ("vision_msgs", "Pose2D"),
        ("vision_msgs", "Point2D"), ("geometry_msgs", "PoseWithCovariance"),
        ("geometry_msgs", "Pose"), ("geometry_msgs", "Point"), ("geometry_msgs", "Quaternion"))}
    missing = [name for name, cls in t.items() if cls is None]
    if missing:
        raise ImportError(f"message types {missing} are not installed (vision_msgs?)")

    def no_pose():
        return t["PoseWithCovariance"](
            pose=t["Pose"](position=t["Point"](x=0.0, y=0.0, z=0.0),
                           orientation=t["Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36, np.float64))

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    detections = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        results = [t["ObjectHypothesisWithPose"](
            hypothesis=t["ObjectHypothesis"](class_id=str(cid), score=score), pose=no_pose())
            for cid, score in hypotheses(class_ids[i], scores[i],
                                         None if class_scores is None else class_scores[i])]
        bbox = t["BoundingBox2D"](
            center=t["Pose2D"](position=t["Point2D"](x=(x1 + x2) / 2.0, y=(y1 + y2) / 2.0),
                               theta=0.0),
            size_x=x2 - x1, size_y=y2 - y1)
        detections.append(t["Detection2D"](header=header, results=results, bbox=bbox, id=""))
    return t["Detection2DArray"](header=header, detections=detections)
