"""Reading rosbag2 bags (mcap or sqlite3) with clear errors.

Every failure is a :class:`BagError` (a ``ValueError``, so the CLI prints it as
``error: ...``) that names the bag and, where one message is at fault, the message: its
index on the topic, topic, type, log time and header stamp, followed by the topics and
types the bag holds.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import Reader

from fcn_perception.bag import typestore as T
from fcn_perception.bag.mcap_crc import CrcCheck, verify_chunk_crcs
from fcn_perception.errors import BagError
from fcn_perception.imaging.decode import decode_message
from fcn_perception.ros.layout import stamp_ns


@dataclass
class Message:
    """One deserialized message; ``index`` counts messages on its topic from 0."""

    topic: str
    msgtype: str
    index: int
    log_ns: int
    msg: object

    @property
    def stamp_ns(self) -> int | None:
        """The header stamp in ns (None for a message without a header)."""
        return stamp_ns(self.msg)

    def where(self) -> str:
        return f"message {self.index} on {self.topic} ({self.msgtype}, log time {self.log_ns} ns)"


class Bag:
    """An open bag: ``with Bag(path) as bag: ...``.

    ``topics`` maps topic name -> (type, message count).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            found = sorted(p.name for p in self.path.iterdir())[:8]
            raise BagError(
                f"{self.path} is not a rosbag2: it has no metadata.yaml (found {found}); "
                "pass the bag folder written by ros2 bag record or fcn-perception bag make, "
                "or a single .mcap/.db3 file"
            )
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags, yaml, sqlite3 and mcap errors alike
            listed = _topics_in_metadata(self.path)
            raise BagError(
                f"{self.path} could not be read as a rosbag2 (mcap or sqlite3): "
                f"{type(exc).__name__}: {str(exc).rstrip('.')}. A recording that was killed leaves a "
                "truncated file (`mcap recover` repairs mcap files)."
                + (f"\nTopics its metadata.yaml lists:\n{listed}" if listed else "")
            ) from exc
        self.store = T.get_typestore()
        self.topics: dict[str, tuple[str, int]] = {}
        for conn in self._reader.connections:
            old = self.topics.get(conn.topic, (conn.msgtype, 0))
            self.topics[conn.topic] = (conn.msgtype, old[1] + conn.msgcount)

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_reader", None) is not None and self._reader.is_open:
            self._reader.close()

    @property
    def custom_data(self) -> dict:
        return dict(getattr(self._reader.storage.metadata, "custom", None) or {})

    def storage_files(self) -> list[Path]:
        """The bag's storage files (``.mcap`` or ``.db3``)."""
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.iterdir() if p.suffix in (".mcap", ".db3"))

    def verify(self):
        """Check the CRC of every chunk of its mcap files (sqlite3 has none), reading each
        file once; :class:`BagError` names the file and the chunk.  Returns the counts
        (:class:`~fcn_perception.bag.mcap_crc.CrcCheck`)."""
        total = CrcCheck()
        for path in self.storage_files():
            if path.suffix == ".mcap":
                try:
                    check = verify_chunk_crcs(path)
                except OSError as exc:
                    raise BagError(f"{path} cannot be read ({exc.strerror or exc})") from None
                total.checked += check.checked
                total.unchecked += check.unchecked
        return total

    def describe(self) -> str:
        """The topics as ``name (type, N messages)``, one per line."""
        if not self.topics:
            return "  (no topics)"
        return "\n".join(f"  {name} ({typ}, {n} messages)"
                         for name, (typ, n) in sorted(self.topics.items()))

    def error(self, text: str) -> BagError:
        return BagError(f"bag {self.path}: {text}\nTopics in the bag:\n{self.describe()}")

    def topics_of_type(self, *types: str) -> list[str]:
        return [name for name, (typ, _) in sorted(self.topics.items()) if typ in types]

    def require(self, topic: str, *types: str) -> str:
        """``topic``'s type, checking that the bag has it with one of ``types``."""
        if topic not in self.topics:
            raise self.error(f"no topic {topic}")
        typ = self.topics[topic][0]
        if types and typ not in types:
            raise self.error(f"topic {topic} has type {typ}; expected {' or '.join(types)}")
        self._check_definition(topic, typ)
        return typ

    def _check_definition(self, topic: str, typ: str) -> None:
        if typ not in self.store.types:
            raise self.error(f"topic {topic} has type {typ}, which the bag tools do not know")
        for conn in self._reader.connections:
            if conn.topic == topic and conn.digest and conn.digest.startswith("RIHS01_"):
                if conn.digest != self.store.hash_rihs01(typ):
                    raise self.error(
                        f"topic {topic}: the bag's definition of {typ} differs from the one "
                        f"the bag tools use (type hash {conn.digest} vs "
                        f"{self.store.hash_rihs01(typ)}); was it recorded with another "
                        "version of its package?"
                    )

    def raw_messages(self, topics: list[str]) -> Iterator[tuple[str, str, int, int, bytes]]:
        """``(topic, type, index on topic, log time ns, serialized bytes)`` in log-time order."""
        for topic in topics:
            self.require(topic)
        conns = [c for c in self._reader.connections if c.topic in topics]
        counts = dict.fromkeys(topics, 0)
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, log_ns, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:
                after = ", ".join(f"{n} on {t}" for t, n in counts.items())
                raise self.error(
                    f"reading failed after {after} messages (the bag may be truncated or "
                    f"corrupt): {type(exc).__name__}: {exc}"
                ) from exc
            index = counts[conn.topic]
            counts[conn.topic] += 1
            yield conn.topic, conn.msgtype, index, log_ns, raw

    def messages(self, topics: list[str]) -> Iterator[Message]:
        """Deserialized messages of ``topics`` in log-time order."""
        for topic, msgtype, index, log_ns, raw in self.raw_messages(topics):
            try:
                msg = self.store.deserialize_cdr(raw, msgtype)
            except Exception as exc:
                raise self.error(
                    f"message {index} on {topic} ({msgtype}, log time {log_ns} ns) "
                    f"could not be deserialized: {type(exc).__name__}: {exc}"
                ) from exc
            yield Message(topic, msgtype, index, log_ns, msg)

    def decode_image(self, m: Message) -> np.ndarray:
        """``(H, W, 3)`` RGB of an Image/CompressedImage, or an error naming the message."""
        try:
            return decode_message(m.msg)
        except ValueError as exc:
            raise self.error(f"{m.where()}, stamp {m.stamp_ns} ns: {exc}") from exc

    def decode_label(self, m: Message) -> np.ndarray:
        """``(H, W)`` class ids of a mono8 label Image, or an error naming the message."""
        try:
            return T.label_to_array(m.msg)
        except ValueError as exc:
            raise self.error(f"{m.where()}, stamp {m.stamp_ns} ns: {exc}") from exc

    def image_topic(self, topic: str | None = None, exclude: tuple[str, ...] = ()) -> str:
        """The camera topic: ``topic`` if given, else the one image topic (label and
        prediction topics excluded), preferring raw ``.../image_raw`` over compressed."""
        if topic:
            self.require(topic, *T.IMAGE_TYPES)
            return topic
        cands = [t for t in self.topics_of_type(*T.IMAGE_TYPES)
                 if t not in exclude and "label" not in t and "segmentation" not in t
                 and not t.startswith("/detections")]
        if not cands:
            raise self.error("no image topic (sensor_msgs/msg/Image or CompressedImage)")
        for pick in (lambda t: t.endswith("image_raw"),
                     lambda t: self.topics[t][0] == T.IMAGE,
                     lambda t: True):
            chosen = [t for t in cands if pick(t)]
            if len(chosen) == 1:
                return chosen[0]
            if chosen:
                break
        raise self.error(f"several image topics {chosen}; choose one with --image-topic")

    def label_topic(self, topic: str | None = None) -> str:
        """The ground-truth label topic (mono8 Image): ``topic`` or the one named ``*labels``."""
        if topic:
            self.require(topic, T.IMAGE)
            return topic
        cands = [t for t in self.topics_of_type(T.IMAGE) if t.endswith("labels")]
        if "/camera/labels" in cands:
            return "/camera/labels"
        if len(cands) == 1:
            return cands[0]
        if not cands:
            raise self.error(
                "no ground-truth label topic (a mono8 sensor_msgs/msg/Image named like "
                "/camera/labels); make one with fcn-perception bag make, or name it with "
                "--label-topic"
            )
        raise self.error(f"several label topics {cands}; choose one with --label-topic")


def _topics_in_metadata(path: Path) -> str:
    """The topics a bag folder's metadata.yaml lists (for errors), or ``""``."""
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return "\n".join(
            f"  {t['topic_metadata']['name']} ({t['topic_metadata']['type']}, "
            f"{t['message_count']} messages)" for t in info["topics_with_message_count"])
    except Exception:  # no folder, no file, or not the expected layout
        return ""
