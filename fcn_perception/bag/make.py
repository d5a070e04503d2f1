"""``bag make``: a CamVid-layout folder becomes a rosbag2 (mcap or sqlite3).

Topics: ``/camera/image_raw`` (sensor_msgs/Image rgb8), optionally
``/camera/image_raw/compressed`` (sensor_msgs/CompressedImage jpeg) and the ground
truth ``/camera/labels`` (sensor_msgs/Image mono8, class id per pixel).  Frame ``i``
is stamped ``start + i / rate`` (header stamp and log time), so stamps are monotonic
and a label matches its image by header stamp.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer

from fcn_perception.bag import typestore as T
from fcn_perception.bag.mcap_crc import add_chunk_crcs
from fcn_perception.errors import BagError
from fcn_perception.evaluation.camvid import CamVid

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
LABEL_TOPIC = "/camera/labels"
FRAME_ID = "camera"
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000  # fixed, so the same input gives the same bag
STORAGES = ("mcap", "sqlite3")


@dataclass
class MadeBag:
    path: Path
    frames: int
    topics: dict[str, int]
    start_ns: int
    period_ns: int


def make_bag(data_dir, split, out, rate: float = 10.0, compressed: bool = False,
             storage: str = "mcap", frame_id: str = FRAME_ID,
             start_ns: int = DEFAULT_START_NS, limit: int | None = None) -> MadeBag:
    """Write the frames and labels of a CamVid split (see :class:`CamVid`) to a bag.

    Raises ``ValueError`` (a :class:`DatasetError` or a ``BagError``) on bad input;
    nothing is left at ``out`` then.
    """
    if rate <= 0:
        raise BagError(f"--rate must be positive, got {rate}")
    if storage not in STORAGES:
        raise BagError(f"storage {storage!r}: use one of {', '.join(STORAGES)}")
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists already; bag make writes a new bag (remove it first)")
    dataset = CamVid(data_dir, split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    period = int(round(1e9 / rate))
    store = T.get_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=plugin)
    writer.set_custom_data("fcn_perception.classes", json.dumps(list(dataset.classes or ())))
    writer.set_custom_data("fcn_perception.ignore_index", str(dataset.ignore_index))
    writer.set_custom_data("fcn_perception.source", f"{data_dir} {split}")
    counts: dict[str, int] = {}
    try:
        with writer:
            conns = {IMAGE_TOPIC: writer.add_connection(IMAGE_TOPIC, T.IMAGE, typestore=store)}
            if compressed:
                conns[COMPRESSED_TOPIC] = writer.add_connection(
                    COMPRESSED_TOPIC, T.COMPRESSED_IMAGE, typestore=store)
            conns[LABEL_TOPIC] = writer.add_connection(LABEL_TOPIC, T.IMAGE, typestore=store)
            for i in range(n):
                image, label = dataset.load(i)
                stamp = start_ns + i * period
                msgs = {IMAGE_TOPIC: (T.image_msg(image, stamp, frame_id), T.IMAGE),
                        LABEL_TOPIC: (T.image_msg(label, stamp, frame_id), T.IMAGE)}
                if compressed:
                    msgs[COMPRESSED_TOPIC] = (T.compressed_msg(image, stamp, frame_id),
                                              T.COMPRESSED_IMAGE)
                for topic, conn in conns.items():
                    msg, typename = msgs[topic]
                    writer.write(conn, stamp, store.serialize_cdr(msg, typename))
                    counts[topic] = counts.get(topic, 0) + 1
        if storage == "mcap":
            for path in sorted(out.glob("*.mcap")):
                add_chunk_crcs(path)  # the rosbags writer leaves the chunk CRCs at 0
    except BaseException:
        _remove_tree(out)
        raise
    return MadeBag(out, n, counts, start_ns, period)


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
