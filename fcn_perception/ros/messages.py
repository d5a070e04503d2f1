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


def detections_msg(header: Header, boxes: np.ndarray, scores: np.ndarray,
                   class_ids: np.ndarray, class_scores: np.ndarray | None = None):
    """``vision_msgs/Detection2DArray``: one Detection2D per box with its centre and
    size in input pixels and its hypotheses (``class_id`` = the class index as a string,
    resolved to a name by ``label_info``; ``score``).

    With ``class_scores`` ``(N, C)`` every detection carries the whole class
    distribution, one ObjectHypothesisWithPose per class, best first (vision_msgs'
    results are class probabilities); without it, the one detected class."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    out = Detection2DArray()
    out.header = copy_header(header)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        det = Detection2D()
        det.header = out.header
        det.bbox.center.position.x = (x1 + x2) / 2.0
        det.bbox.center.position.y = (y1 + y2) / 2.0
        det.bbox.size_x = x2 - x1
        det.bbox.size_y = y2 - y1
        if class_scores is None:
            hyps = [(int(class_ids[i]), float(scores[i]))]
        else:
            dist = np.asarray(class_scores[i], np.float64)
            rest = [(int(c), float(dist[c])) for c in np.argsort(-dist, kind="stable")
                    if c != class_ids[i]]
            hyps = [(int(class_ids[i]), float(scores[i])), *rest]
        for cid, score in hyps:
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id = str(cid)
            hyp.hypothesis.score = score
            det.results.append(hyp)
        out.detections.append(det)
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
