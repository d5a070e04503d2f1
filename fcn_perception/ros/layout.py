"""How results are laid out in ``vision_msgs`` messages, for either message library.

The nodes build messages from rclpy's generated classes, the bag tools from rosbags'
typestore (no ROS installation needed).  Both take their classes from a ``types``
callable, ``types("vision_msgs/msg/Detection2D")`` -> class, and pass every field by
keyword (rosbags' classes have no defaults), so the two publish the same layout;
:func:`stamp_ns` reads either's header stamp.
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


def stamp_ns(msg) -> int | None:
    """``header.stamp`` of an rclpy or rosbags message in nanoseconds (None without one)."""
    try:
        stamp = msg.header.stamp
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError):
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


def _types(types: Callable[[str], type], names) -> dict[str, type]:
    t = {name: types(f"{pkg}/msg/{name}") for pkg, name in names}
    missing = [name for name, cls in t.items() if cls is None]
    if missing:
        raise ImportError(f"message types {missing} are not installed (vision_msgs?)")
    return t


_HYPOTHESIS_TYPES = (
    ("vision_msgs", "ObjectHypothesisWithPose"), ("vision_msgs", "ObjectHypothesis"),
    ("geometry_msgs", "PoseWithCovariance"), ("geometry_msgs", "Pose"),
    ("geometry_msgs", "Point"), ("geometry_msgs", "Quaternion"))


def _pose(t, x: float = 0.0, y: float = 0.0, z: float = 0.0):
    return t["Pose"](position=t["Point"](x=float(x), y=float(y), z=float(z)),
                     orientation=t["Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))


def _results(t, class_id, score, class_scores, position=(0.0, 0.0, 0.0)) -> list:
    return [t["ObjectHypothesisWithPose"](
        hypothesis=t["ObjectHypothesis"](class_id=str(cid), score=s),
        pose=t["PoseWithCovariance"](pose=_pose(t, *position),
                                     covariance=np.zeros(36, np.float64)))
        for cid, s in hypotheses(class_id, score, class_scores)]


def _ids(ids, n: int) -> list[str]:
    if ids is None:
        return [""] * n
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} detections")
    return ids


def detection_array(types: Callable[[str], type], header, boxes: np.ndarray,
                    scores: np.ndarray, class_ids: np.ndarray,
                    class_scores: np.ndarray | None = None, ids=None):
    """A ``vision_msgs/Detection2DArray``: one Detection2D per box (centre and size in
    input pixels, ``header`` shared) with its :func:`hypotheses` (``class_id`` = the
    class index as a string, resolved to a name by ``label_info``) and its ``id`` (a
    track id; ``ids`` None: empty).  The hypotheses' poses are left at identity: a 2D
    detector has no 3D pose."""
    t = _types(types, (("vision_msgs", "Detection2DArray"), ("vision_msgs", "Detection2D"),
                       ("vision_msgs", "BoundingBox2D"), ("vision_msgs", "Pose2D"),
                       ("vision_msgs", "Point2D"), *_HYPOTHESIS_TYPES))
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    names = _ids(ids, len(boxes))
    detections = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        results = _results(t, class_ids[i], scores[i],
                           None if class_scores is None else class_scores[i])
        bbox = t["BoundingBox2D"](
            center=t["Pose2D"](position=t["Point2D"](x=(x1 + x2) / 2.0, y=(y1 + y2) / 2.0),
                               theta=0.0),
            size_x=x2 - x1, size_y=y2 - y1)
        detections.append(t["Detection2D"](header=header, results=results, bbox=bbox,
                                           id=names[i]))
    return t["Detection2DArray"](header=header, detections=detections)


def detection3d_array(types: Callable[[str], type], header, centres: np.ndarray,
                      sizes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                      class_scores: np.ndarray | None = None, ids=None):
    """A ``vision_msgs/Detection3DArray``: one Detection3D per ``(N, 3)`` centre and
    size (metres, the optical frame of ``header``; axis-aligned, identity orientation),
    with the same :func:`hypotheses` and ``id`` as the 2D detection it comes from; each
    hypothesis' pose is the centre."""
    t = _types(types, (("vision_msgs", "Detection3DArray"), ("vision_msgs", "Detection3D"),
                       ("vision_msgs", "BoundingBox3D"), ("geometry_msgs", "Vector3"),
                       *_HYPOTHESIS_TYPES))
    centres = np.asarray(centres, np.float64).reshape(-1, 3)
    sizes = np.asarray(sizes, np.float64).reshape(-1, 3)
    scores = np.asarray(scores, np.float64).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    names = _ids(ids, len(centres))
    detections = []
    for i, (centre, size) in enumerate(zip(centres.tolist(), sizes.tolist())):
        results = _results(t, class_ids[i], scores[i],
                           None if class_scores is None else class_scores[i], centre)
        bbox = t["BoundingBox3D"](center=_pose(t, *centre),
                                  size=t["Vector3"](x=size[0], y=size[1], z=size[2]))
        detections.append(t["Detection3D"](header=header, results=results, bbox=bbox,
                                           id=names[i]))
    return t["Detection3DArray"](header=header, detections=detections)
