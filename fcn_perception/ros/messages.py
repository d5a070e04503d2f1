"""Message builders: numpy results -> ROS messages, each carrying the input header.

``vision_msgs`` is imported lazily so a segmentation-only node runs where it is not
installed (then it publishes no ``label_info``).
"""
from __future__ import annotations

import array

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from fcn_perception.ros import layout


def copy_header(header: Header) -> Header:
    out = Header()
    out.stamp.sec = header.stamp.sec
    out.stamp.nanosec = header.stamp.nanosec
    out.frame_id = header.frame_id
    return out


def image_msg(header: Header, pixels: np.ndarray, encoding: str) -> Image:
    """An Image from an ``(H, W)`` (mono8) or ``(H, W, 3)`` (rgb8) uint8 array."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    msg = Image()
    msg.header = copy_header(header)
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    data = array.array("B")
    data.frombytes(pixels.data)  # one copy; array.array is the setter's fast path
    msg.data = data
    return msg


def labels_msg(header: Header, labels: np.ndarray) -> Image:
    """``segmentation/labels``: mono8 class ids at the input resolution."""
    return image_msg(header, labels, "mono8")


def rgb_msg(header: Header, rgb: np.ndarray) -> Image:
    return image_msg(header, rgb, "rgb8")


def confidence_msg(header: Header, confidence: np.ndarray, encoding: str = "mono8") -> Image:
    """``segmentation/confidence``: the top class's softmax probability per pixel, at the
    input resolution: ``mono8`` scaled to 0-255 (rounded) or ``32FC1`` in ``[0, 1]``
    (little-endian float32)."""
    conf = np.asarray(confidence, np.float32)
    if encoding == "mono8":
        return image_msg(header, np.rint(np.clip(conf, 0.0, 1.0) * 255.0).astype(np.uint8),
                         "mono8")
    if encoding != "32FC1":
        raise ValueError(f"confidence encoding {encoding!r} is not mono8 or 32FC1")
    pixels = np.ascontiguousarray(conf, "<f4")
    msg = image_msg(header, pixels.view(np.uint8).reshape(pixels.shape[0], -1), "32FC1")
    msg.width = int(pixels.shape[1])
    return msg


def detections_msg(header: Header, boxes: np.ndarray, scores: np.ndarray,
                   class_ids: np.ndarray, class_scores: np.ndarray | None = None, ids=None):
    """``vision_msgs/Detection2DArray`` (:func:`fcn_perception.ros.layout.detection_array`):
    one Detection2D per box with its centre and size in input pixels; with
    ``class_scores`` ``(N, C)`` one ObjectHypothesisWithPose per class, the detected
    class first (vision_msgs' results are class probabilities); without, that one;
    ``ids``: each detection's track id (None: empty)."""
    return layout.detection_array(layout.ros_message_class, copy_header(header), boxes,
                                  scores, class_ids, class_scores, ids)


def detections_3d_msg(header: Header, centres: np.ndarray, sizes: np.ndarray,
                      scores: np.ndarray, class_ids: np.ndarray,
                      class_scores: np.ndarray | None = None, ids=None):
    """``vision_msgs/Detection3DArray`` (:func:`fcn_perception.ros.layout.detection3d_array`):
    centres and sizes in metres in the optical frame of ``header``."""
    return layout.detection3d_array(layout.ros_message_class, copy_header(header), centres,
                                    sizes, scores, class_ids, class_scores, ids)


def labelled_cloud_msg(header: Header, xyz: np.ndarray, labels: np.ndarray,
                       confidence: np.ndarray | None = None):
    """``sensor_msgs/PointCloud2``, unorganised (height 1), dense: fields ``x``, ``y``,
    ``z`` (float32, metres), ``label`` (uint8 class id) and, with ``confidence``, a
    float32 ``confidence``; little-endian, point_step 16 (20 with confidence)."""
    from sensor_msgs.msg import PointCloud2, PointField

    names = ["x", "y", "z", "label"] + (["confidence"] if confidence is not None else [])
    formats = ["<f4", "<f4", "<f4", "u1"] + (["<f4"] if confidence is not None else [])
    offsets = [0, 4, 8, 12] + ([16] if confidence is not None else [])
    step = 20 if confidence is not None else 16
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": step})
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    points = np.zeros(len(xyz), dtype)
    points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points["label"] = labels
    if confidence is not None:
        points["confidence"] = confidence
    kinds = {"<f4": PointField.FLOAT32, "u1": PointField.UINT8}
    msg = PointCloud2()
    msg.header = copy_header(header)
    msg.height, msg.width = 1, len(points)
    msg.fields = [PointField(name=n, offset=o, datatype=kinds[f], count=1)
                  for n, f, o in zip(names, formats, offsets)]
    msg.is_bigendian = False
    msg.point_step, msg.row_step = step, step * len(points)
    msg.is_dense = True
    data = array.array("B")
    data.frombytes(points.tobytes())
    msg.data = data
    return msg


def camera_info_msg(header: Header, info):
    """The input's ``sensor_msgs/CameraInfo`` with the colour frame's ``header``."""
    from sensor_msgs.msg import CameraInfo

    out = CameraInfo()
    for name in ("height", "width", "distortion_model", "d", "k", "r", "p", "binning_x",
                 "binning_y", "roi"):
        setattr(out, name, getattr(info, name))
    out.header = copy_header(header)
    return out


def label_info_msg(header: Header, classes: list[str], threshold: float = 0.0):
    """``vision_msgs/LabelInfo``: class id -> name for every class of the model."""
    from vision_msgs.msg import LabelInfo, VisionClass

    msg = LabelInfo()
    msg.header = copy_header(header)
    msg.threshold = float(threshold)
    for i, name in enumerate(classes):
        msg.class_map.append(VisionClass(class_id=i, class_name=str(name)))
    return msg


LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN,
          "error": DiagnosticStatus.ERROR, "stale": DiagnosticStatus.STALE}


def _format(value) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.2f}"
    return str(value)


def diagnostic_status(name: str, hardware_id: str, level: str, message: str,
                      values: dict) -> DiagnosticStatus:
    status = DiagnosticStatus()
    status.level = LEVELS[level]
    status.name = name
    status.hardware_id = hardware_id
    status.message = message
    status.values = [KeyValue(key=str(k), value=_format(v)) for k, v in values.items()]
    return status


def diagnostics_msg(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg
