"""The rosbags typestore used by the bag tools, and conversions of its messages.

The store is ROS 2 Kilted's (``sensor_msgs``, ``std_msgs``, ``geometry_msgs``,
``diagnostic_msgs`` ...) plus ``vision_msgs`` 4.1, registered from the same ``.msg``
text as ``interfaces/vision_msgs`` (embedded here, comments dropped, so an installed
package needs no source tree).  Messages serialized with this store and with rclpy
are identical byte for byte, and the type hashes (RIHS01) are the same, so bags written
here play through rclpy nodes and bags recorded from rclpy read back here.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as kilted_store

from fcn_perception.errors import ConversionError
from fcn_perception.imaging.decode import decode
from fcn_perception.imaging.encode import encode_compressed
from fcn_perception.ros import layout

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
DETECTION_2D_ARRAY = "vision_msgs/msg/Detection2DArray"
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
#: what a node's diagnostics say about where its model runs
BACKEND_KEYS = ("backend", "device", "precision")
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

# vision_msgs 4.1 (field lines of interfaces/vision_msgs/msg/*.msg)
VISION_MSGS = {
    "Point2D": "float64 x\nfloat64 y\n",
    "Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "ObjectHypothesis": "string class_id\nfloat64 score\n",
    "ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "Detection3D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n"
    ),
    "Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
    "VisionClass": "uint16 class_id\nstring class_name\n",
    "LabelInfo": (
        "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n"
    ),
}

@lru_cache(maxsize=1)
def get_typestore():
    """The Kilted store with vision_msgs registered (built once per process)."""
    store = kilted_store(Stores.ROS2_KILTED)
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, f"vision_msgs/msg/{name}"))
    store.register(types)
    return store


def msg_class(typename: str):
    return get_typestore().types[typename]


def time_msg(stamp_ns: int):
    t = msg_class("builtin_interfaces/msg/Time")
    return t(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def header(stamp_ns: int, frame_id: str):
    return msg_class("std_msgs/msg/Header")(stamp=time_msg(stamp_ns), frame_id=frame_id)


def image_msg(array: np.ndarray, stamp: int, frame_id: str):
    """A ``sensor_msgs/Image``: ``(H, W, 3)`` uint8 as rgb8, ``(H, W)`` uint8 as mono8."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 2:
        encoding, channels = "mono8", 1
    elif array.ndim == 3 and array.shape[2] == 3:
        encoding, channels = "rgb8", 3
    else:
        raise ConversionError(f"expected an (H, W) or (H, W, 3) array, got shape {array.shape}")
    h, w = array.shape[:2]
    return msg_class(IMAGE)(
        header=header(stamp, frame_id), height=h, width=w, encoding=encoding,
        is_bigendian=0, step=w * channels, data=array.reshape(-1),
    )


def compressed_msg(array: np.ndarray, stamp: int, frame_id: str, fmt: str = "jpeg"):
    """A ``sensor_msgs/CompressedImage`` of an RGB array (``fmt``: jpeg or png)."""
    data = encode_compressed(array, fmt)
    return msg_class(COMPRESSED_IMAGE)(
        header=header(stamp, frame_id), format=fmt, data=np.frombuffer(data, dtype=np.uint8))


def label_to_array(msg) -> np.ndarray:
    """``(H, W)`` uint8 class ids of a mono8 (or 8UC1) label Image."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ConversionError(
            f"a label image must be mono8 (one class id per pixel), got {msg.encoding!r}")
    return decode(msg.encoding, msg.height, msg.width, msg.step, 0, msg.data)[:, :, 0].copy()


def detections_msg(result, stamp: int, frame_id: str):
    """A ``vision_msgs/Detection2DArray`` of a :class:`DetectionResult`, laid out as the
    detection node publishes it (:func:`fcn_perception.ros.layout.detection_array`),
    built from rosbags types so that bag tools need no ROS installation."""
    return layout.detection_array(msg_class, header(stamp, frame_id), result.boxes,
                                  result.scores, result.class_ids, result.class_scores)


def detections_from_msg(msg, class_names=None):
    """``(boxes (N, 4) x1 y1 x2 y2, scores (N,), class_ids (N,))`` of a Detection2DArray.

    Each detection's first hypothesis gives its class and score (the detected class:
    the nodes put it first, :func:`fcn_perception.ros.layout.hypotheses`; the others are
    the rest of its class distribution and may score higher, so they are not read);
    ``class_id`` may be a name in ``class_names`` or a numeric string.
    """
    index = {n: i for i, n in enumerate(class_names or ())}
    boxes, scores, classes = [], [], []
    for det in msg.detections:
        if not det.results:
            continue
        best = det.results[0]
        cid = best.hypothesis.class_id
        if cid in index:
            cls = index[cid]
        else:
            try:
                cls = int(cid)
            except ValueError as exc:
                raise ConversionError(
                    f"detection class_id {cid!r} is neither a class name "
                    f"({', '.join(index) or 'none given'}) nor a number"
                ) from exc
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        scores.append(best.hypothesis.score)
        classes.append(cls)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
            np.asarray(classes, np.int64))


def diagnostics_msg(stamp: int, statuses: dict[str, dict[str, str]]):
    """A ``diagnostic_msgs/DiagnosticArray`` with one OK status per ``{name: values}``."""
    status, key_value = msg_class("diagnostic_msgs/msg/DiagnosticStatus"), \
        msg_class("diagnostic_msgs/msg/KeyValue")
    return msg_class(DIAGNOSTIC_ARRAY)(header=header(stamp, ""), status=[
        status(level=status.OK, name=name, message="", hardware_id="",
               values=[key_value(key=str(k), value=str(v)) for k, v in values.items()])
        for name, values in statuses.items()])


def backends_from_diagnostics(msg) -> dict[str, dict[str, str]]:
    """``{task: {backend, device, precision}}`` from a DiagnosticArray whose statuses are
    named ``"<node>: <task>"`` and carry a ``backend`` value, as the nodes publish them."""
    out = {}
    for status in msg.status:
        task = status.name.rpartition(": ")[2]
        values = {kv.key: kv.value for kv in status.values}
        if task in ("segmentation", "detection") and values.get("backend"):
            out[task] = {k: values[k] for k in BACKEND_KEYS if k in values}
    return out
