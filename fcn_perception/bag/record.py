"""``bag record``: capture live topics (e.g. the nodes' outputs) to a rosbag2.

Each topic's type and QoS are taken from its publishers once they appear: best effort
if any publisher is best effort (a reliable subscription would not match it), reliable
otherwise; transient-local when every publisher is (so latched messages such as
``label_info`` arrive).  Messages are written as received (serialized bytes, log time =
receive time), so the bag reads back with :class:`~fcn_perception.bag.read.Bag` and
replays with ``bag play``.
"""
from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fcn_perception.bag import typestore as T
from fcn_perception.errors import BagError


@dataclass
class RecordStats:
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    qos: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_by: str = ""


def _publisher_qos(infos) -> tuple[str, bool]:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
    latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return ("best_effort" if best_effort else "reliable"), latched


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
    Ctrl-C / SIGTERM, ``stop`` set, ``duration`` s after ready, ``idle_timeout`` s after
    the last message (once one arrived), or when every topic has ``max_messages``.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rosbags.rosbag2 import StoragePlugin, Writer

    from fcn_perception.ros.layout import ros_message_class
    from fcn_perception.ros.qos import input_qos, latched_qos

    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists already; bag record writes a new bag (remove it first)")
    if not topics:
        raise BagError("bag record: name at least one topic")
    if storage not in ("mcap", "sqlite3"):
        raise BagError(f"storage {storage!r}: use mcap or sqlite3")
    wait_for = list(topics if wait_for is None else wait_for)
    if set(wait_for) - set(topics):
        raise BagError(f"bag record: --wait-for topics {sorted(set(wait_for) - set(topics))} "
                       "are not among the recorded topics")
    stop = stop or threading.Event()
    stats = RecordStats(out, counts=dict.fromkeys(topics, 0))
    store = T.get_typestore()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda *_: stop.set())
    context = rclpy.context.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(node_name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=plugin)
    writer.open()
    subs: dict[str, object] = {}
    last = [0.0]

    def subscribe(topic: str, infos) -> None:
        typ = infos[0].topic_type
        if typ not in store.types or ros_message_class(typ) is None:
            raise BagError(f"bag record: {topic} has type {typ}, which the bag tools cannot "
                           "record (known: sensor_msgs, std_msgs, vision_msgs, ...)")
        rel, latched = _publisher_qos(infos)
        if reliability != "auto":
            rel = reliability
        latched = latched and rel == "reliable"  # latched_qos() is reliable
        conn = writer.add_connection(topic, typ, typestore=store)
        stats.types[topic] = typ
        stats.qos[topic] = rel + (", transient_local" if latched else "")

        def cb(raw: bytes) -> None:
            writer.write(conn, node.get_clock().now().nanoseconds, raw)
            stats.counts[topic] += 1
            last[0] = time.monotonic()

        subs[topic] = node.create_subscription(
            ros_message_class(typ), topic, cb,
            latched_qos() if latched else input_qos(rel, depth=100), raw=True)

    failed = False
    try:
        t_start = time.monotonic()
        t_ready = None
        next_poll = 0.0
        while True:
            executor.spin_once(timeout_sec=0.02)
            now = time.monotonic()
            if now >= next_poll and len(subs) < len(topics):
                next_poll = now + poll_s
                for t in topics:
                    if t not in subs and (infos := node.get_publishers_info_by_topic(t)):
                        subscribe(t, infos)
            if t_ready is None:
                if all(t in subs and subs[t].get_publisher_count() > 0 for t in wait_for):
                    t_ready = now
                    log("bag record: recording " + ", ".join(
                        f"{t} ({stats.types[t]}, {stats.qos[t]})" for t in subs) + f" to {out}")
                    if ready_file:
                        Path(ready_file).write_text("ready\n")
                elif now - t_start > wait_timeout:
                    missing = [t for t in wait_for if t not in subs]
                    seen = sorted(f"{n} ({', '.join(ts)})"
                                  for n, ts in node.get_topic_names_and_types())
                    raise BagError(
                        f"bag record: no publisher on {missing} after {wait_timeout:.0f} s. "
                        f"Topics seen: {seen or 'none'}. Are the nodes running, in the same "
                        "ROS_DOMAIN_ID?")
            if stop.is_set():
                stats.stopped_by = "signal"
            elif t_ready is not None and duration is not None and now - t_ready >= duration:
                stats.stopped_by = "duration"
            elif idle_timeout is not None and last[0] and now - last[0] >= idle_timeout:
                stats.stopped_by = "idle"
            elif max_messages is not None and all(n >= max_messages
                                                  for n in stats.counts.values()):
                stats.stopped_by = "count"
            if stats.stopped_by:
                break
        stats.seconds = time.monotonic() - (t_ready or t_start)
    except BagError:
        failed = True
        raise
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        writer.close()
        for sig, h in handlers.items():
            signal.signal(sig, h)
        if failed:  # nothing worth keeping: let the same command run again
            shutil.rmtree(out, ignore_errors=True)
    if storage == "mcap":
        from fcn_perception.bag.mcap_crc import add_chunk_crcs

        for path in sorted(out.glob("*.mcap")):
            add_chunk_crcs(path)  # the rosbags writer leaves the chunk CRCs at 0
    return stats
