"""``bag record``: capture live topics (e.g. the nodes' outputs) to a rosbag2.

Each topic's type and QoS are taken from its publishers once they appear: best effort
if any publisher is best effort (a reliable subscription would not match it), reliable
otherwise; transient-local when every publisher is (so latched messages such as
``label_info`` arrive).  Messages are written as received (serialized bytes, log time =
receive time), so the bag reads back with :class:`~fcn_perception.bag.read.Bag` and
replays with ``bag play``.
"""
from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.rosbag2 import StoragePlugin, Writer

from fcn_perception.bag import typestore as T
from fcn_perception.bag.mcap_crc import add_chunk_crcs
from fcn_perception.errors import BagError
from fcn_perception.ros.layout import ros_message_class
from fcn_perception.ros.qos import input_qos, latched_qos, offered_reliability

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@dataclass
class RecordStats:
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    qos: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_by: str = ""
    # time.monotonic() of the last message (0: none yet), the nodes' periodic
    # diagnostics (T.DIAGNOSTIC_ARRAY) aside: they never stop while a node runs
    last_message_at: float = 0.0


@dataclass(frozen=True)
class StopRules:
    """When recording ends: ``duration`` s after ready, ``idle_timeout`` s after the last
    message (once one arrived; diagnostics do not count), or when every topic has
    ``max_messages``."""

    duration: float | None = None
    idle_timeout: float | None = None
    max_messages: int | None = None

    def reason(self, stats: RecordStats, now: float, ready_at: float | None) -> str:
        """Why to stop now (``duration``, ``idle``, ``count``), or ``""``."""
        if ready_at is not None and self.duration is not None and now - ready_at >= self.duration:
            return "duration"
        last = stats.last_message_at
        if self.idle_timeout is not None and last and now - last >= self.idle_timeout:
            return "idle"
        if self.max_messages is not None and all(n >= self.max_messages
                                                 for n in stats.counts.values()):
            return "count"
        return ""


def subscription_qos(infos, reliability: str = "auto") -> tuple[str, bool]:
    """``(reliability, transient_local)`` that matches every publisher in ``infos``:
    ``auto`` takes the reliability the publishers offer, as the nodes' camera input
    does (:func:`~fcn_perception.ros.qos.offered_reliability`: best effort if any
    publisher is); ``best_effort`` / ``reliable`` override it.  Transient-local only if
    every publisher is (and the subscription is reliable:
    :func:`~fcn_perception.ros.qos.latched_qos` is)."""
    profiles = [i.qos_profile for i in infos]
    latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
    rel = offered_reliability(profiles) if reliability == "auto" else reliability
    return rel, latched and rel == "reliable"


def check_request(out: Path, topics: list[str], storage: str,
                  wait_for: list[str] | None) -> list[str]:
    """Refuse a request that cannot succeed (before anything starts); the topics to wait
    for."""
    if out.exists():
        raise BagError(f"{out} exists already; bag record writes a new bag (remove it first)")
    if not topics:
        raise BagError("bag record: name at least one topic")
    if storage not in STORAGES:
        raise BagError(f"storage {storage!r}: use mcap or sqlite3")
    wait_for = list(topics if wait_for is None else wait_for)
    if set(wait_for) - set(topics):
        raise BagError(f"bag record: --wait-for topics {sorted(set(wait_for) - set(topics))} "
                       "are not among the recorded topics")
    return wait_for


class TopicRecorder:
    """Subscribes each topic (raw bytes) once it has a publisher, with that publisher's
    type and a QoS it matches, and writes every message to ``writer``."""

    def __init__(self, node: Node, writer: Writer, topics: list[str], reliability: str,
                 stats: RecordStats) -> None:
        self.node, self.writer, self.topics = node, writer, topics
        self.reliability, self.stats = reliability, stats
        self.store = T.get_typestore()
        self.subs: dict[str, object] = {}

    def subscribe_new_publishers(self) -> None:
        for topic in self.topics:
            if topic not in self.subs and (infos := self.node.get_publishers_info_by_topic(topic)):
                self._subscribe(topic, infos)

    def matched(self, topics: list[str]) -> bool:
        return all(t in self.subs and self.subs[t].get_publisher_count() > 0 for t in topics)

    def _subscribe(self, topic: str, infos) -> None:
        typ = infos[0].topic_type
        if typ not in self.store.types or ros_message_class(typ) is None:
            raise BagError(f"bag record: {topic} has type {typ}, which the bag tools cannot "
                           "record (known: sensor_msgs, std_msgs, vision_msgs, ...)")
        rel, latched = subscription_qos(infos, self.reliability)
        conn = self.writer.add_connection(topic, typ, typestore=self.store)
        self.stats.types[topic] = typ
        self.stats.qos[topic] = rel + (", transient_local" if latched else "")
        self.subs[topic] = self.node.create_subscription(
            ros_message_class(typ), topic, lambda raw: self._write(topic, conn, raw),
            latched_qos() if latched else input_qos(rel, depth=100), raw=True)

    def _write(self, topic: str, conn, raw: bytes) -> None:
        self.writer.write(conn, self.node.get_clock().now().nanoseconds, raw)
        self.stats.counts[topic] += 1
        if self.stats.types[topic] != T.DIAGNOSTIC_ARRAY:
            self.stats.last_message_at = time.monotonic()

    def no_publisher_error(self, topics: list[str], waited: float) -> BagError:
        missing = [t for t in topics if t not in self.subs]
        seen = sorted(f"{n} ({', '.join(ts)})" for n, ts in self.node.get_topic_names_and_types())
        return BagError(f"bag record: no publisher on {missing} after {waited:.0f} s. Topics "
                        f"seen: {seen or 'none'}. Are the nodes running, in the same "
                        "ROS_DOMAIN_ID?")


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM (from the main thread only), restore on exit."""
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def recorder_node(node_name: str) -> Iterator[tuple[Node, SingleThreadedExecutor]]:
    """A node in its own context and executor (Ctrl-C left to :func:`stop_on_signals`)."""
    context = rclpy.context.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(node_name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def record(out: str | Path, topics: list[str], storage: str = "mcap",
           reliability: str = "auto", wait_for: list[str] | None = None,
           wait_timeout: float = 60.0, duration: float | None = None,
           idle_timeout: float | None = None, max_messages: int | None = None,
           ready_file: str | Path | None = None, stop: threading.Event | None = None,
           log: Callable[[str], None] = print, node_name: str = "fcn_bag_recorder",
           poll_s: float = 0.2) -> RecordStats:
    """Record ``topics`` to a new bag at ``out`` until a stop condition.

    A topic is subscribed as soon as a publisher of it appears (so the recorder may start
    before the publishers).  Once every topic of ``wait_for`` (default: all ``topics``)
    is subscribed and matched, it logs "recording" and writes ``ready_file``; if that
    takes longer than ``wait_timeout`` s it fails, naming the topics it saw.  Stops on
    Ctrl-C / SIGTERM, ``stop`` set, or by :class:`StopRules` (``duration``,
    ``idle_timeout``, ``max_messages``).
    """
    out = Path(out)
    wait_for = check_request(out, topics, storage, wait_for)
    stop = stop or threading.Event()
    rules = StopRules(duration, idle_timeout, max_messages)
    stats = RecordStats(out, counts=dict.fromkeys(topics, 0))
    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    writer.open()
    failed = False
    try:
        with stop_on_signals(stop), recorder_node(node_name) as (node, executor):
            recorder = TopicRecorder(node, writer, topics, reliability, stats)
            started = time.monotonic()
            ready_at = None
            next_poll = 0.0
            while not stats.stopped_by:
                executor.spin_once(timeout_sec=0.02)
                now = time.monotonic()
                if now >= next_poll and len(recorder.subs) < len(topics):
                    next_poll = now + poll_s
                    recorder.subscribe_new_publishers()
                if ready_at is None and recorder.matched(wait_for):
                    ready_at = now
                    log("bag record: recording " + ", ".join(
                        f"{t} ({stats.types[t]}, {stats.qos[t]})" for t in recorder.subs)
                        + f" to {out}")
                    if ready_file:
                        Path(ready_file).write_text("ready\n")
                elif ready_at is None and now - started > wait_timeout:
                    raise recorder.no_publisher_error(wait_for, wait_timeout)
                stats.stopped_by = "signal" if stop.is_set() else rules.reason(stats, now,
                                                                               ready_at)
            stats.seconds = time.monotonic() - (ready_at or started)
    except BagError:
        failed = True
        raise
    finally:
        writer.close()
        if failed:  # nothing worth keeping: let the same command run again
            shutil.rmtree(out, ignore_errors=True)
    if storage == "mcap":
        for path in sorted(out.glob("*.mcap")):
            add_chunk_crcs(path)  # the rosbags writer leaves the chunk CRCs at 0
    return stats
