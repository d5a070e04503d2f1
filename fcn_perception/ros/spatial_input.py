"""The ``depth`` and ``camera_info`` inputs of a node, time-synchronised with its
colour frames (``spatial_inputs`` parameter; one camera).

``camera_info``: subscribes to ``camera_info`` (sensor_msgs/CameraInfo); ``depth``: also
to ``depth`` (sensor_msgs/Image, 32FC1 metres or 16UC1 millimetres, registered to the
colour camera).  Each colour frame waits in an
:class:`~fcn_perception.spatial.sync.ApproximateSync` (``sync_queue_size``,
``sync_slop``) until a camera_info (and depth) within the slop arrives; then the set
goes to the worker together (frames that find no partner are counted, not processed).
Both subscriptions are best effort (they match reliable and best-effort publishers)
with the node's ``qos_depth``.  On the worker, :func:`scene_of` turns a set into a
:class:`Scene` (decoded depth, the intrinsics at the colour frame's size).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from fcn_perception.ros import qos
from fcn_perception.ros.layout import stamp_ns
from fcn_perception.spatial.depth import Intrinsics, depth_from_msg, intrinsics_from_msg
from fcn_perception.spatial.sync import ApproximateSync

MODES = ("none", "camera_info", "depth")


@dataclass
class SpatialMsgs:
    """The camera_info (and depth) messages synchronised with one colour frame."""

    info: Any
    depth: Any = None


@dataclass
class Scene:
    """A colour frame's geometry on the worker: ``camera`` (the intrinsics at the colour
    frame's size), ``depth`` ``(Hd, Wd)`` float32 metres (NaN invalid) or None, and the
    camera_info message to pass on."""

    camera: Intrinsics
    depth: np.ndarray | None
    info: Any


def scene_of(msgs: SpatialMsgs | None, image_hw: tuple[int, int],
             max_pixels: int | None = None) -> Scene | None:
    """The :class:`Scene` of a synchronised set for a colour frame of ``image_hw``;
    raises ConversionError for a bad camera_info or depth image."""
    if msgs is None:
        return None
    camera = intrinsics_from_msg(msgs.info, image_hw)
    depth = None if msgs.depth is None else depth_from_msg(msgs.depth, max_pixels)
    return Scene(camera, depth, msgs.info)


class SpatialInput:
    """The ``camera_info`` (and ``depth``) subscriptions and their synchroniser.

    :meth:`add_frame` takes a colour frame instead of the worker; ``deliver(msg,
    received_at, SpatialMsgs)`` gets each synchronised set."""

    def __init__(self, node, mode: str, *, queue_size: int, slop_s: float, history: int,
                 deliver: Callable[[Any, float, SpatialMsgs], None]) -> None:
        if mode not in MODES[1:]:
            raise ValueError(f"spatial_inputs {mode!r}: expected one of {MODES}")
        self.node, self.mode = node, mode
        self._deliver = deliver
        inputs = 3 if mode == "depth" else 2  # colour, camera_info[, depth]
        self.sync = ApproximateSync(inputs, queue_size, slop_s, self._on_set)
        profile = qos.input_qos("best_effort", history)
        self.subs = [node.create_subscription(CameraInfo, "camera_info",
                                              lambda m: self._add(1, m), profile)]
        if mode == "depth":
            self.subs.append(node.create_subscription(Image, "depth",
                                                      lambda m: self._add(2, m), profile))
        self.topics = [s.topic_name for s in self.subs]
        self.active = False

    def add_frame(self, msg, received_at: float) -> None:
        self._add(0, msg, received_at)

    def _add(self, index: int, msg, received_at: float | None = None) -> None:
        if not self.active:
            return
        stamp = stamp_ns(msg)
        if stamp is not None:
            self.sync.add(index, stamp, (msg, received_at))

    def _on_set(self, colour, info, depth=None) -> None:
        msg, received_at = colour
        self._deliver(msg, received_at, SpatialMsgs(info[0], None if depth is None else depth[0]))

    def values(self) -> dict:
        """Diagnostics: sets formed, and frames of each input dropped unmatched."""
        names = ["image", "camera_info", "depth"][: len(self.sync.dropped)]
        return {"synced_sets": self.sync.emitted,
                **{f"unsynced_{n}": d for n, d in zip(names, self.sync.dropped)}}

    def activate(self) -> None:
        self.sync.clear()
        self.active = True

    def deactivate(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.subs = []
