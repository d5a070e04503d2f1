"""``bag play``: publish a bag's messages to live topics with rclpy.

Messages go out in log-time order at their recorded spacing divided by ``rate``, as
the serialized bytes stored in the bag (no re-encoding; header stamps unchanged).
Before the first message the player can wait until the camera topic has a number of
subscribers (``wait_for_subscribers``), so that nodes started beside it see every
frame.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.signals import SignalHandlerOptions

from fcn_perception.bag.read import Bag
from fcn_perception.errors import BagError
from fcn_perception.ros.layout import ros_message_class
from fcn_perception.ros.qos import input_qos


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    #: per topic, messages not published because they do not deserialize as their type
    skipped_messages: dict[str, int] = field(default_factory=dict)
    loops: int = 0
    seconds: float = 0.0


def play_bag(path: str | Path, rate: float = 1.0, loop: bool = False,
             topics: list[str] | None = None, remap: dict[str, str] | None = None,
             reliability: str = "reliable", wait_for_subscribers: int = 0,
             wait_topic: str | None = None, wait_timeout: float = 60.0, delay: float = 0.0,
             max_loops: int | None = None, log: Callable[[str], None] = print,
             node_name: str = "fcn_bag_player", ack_timeout: float = 10.0) -> PlayStats:
    """Publish ``path`` (all topics, or ``topics``) until done (or forever with ``loop``).

    ``remap`` renames topics (bag name -> live name).  ``wait_for_subscribers`` waits
    (at most ``wait_timeout`` s) until ``wait_topic`` (default: the camera topic) has
    that many subscribers; ``delay`` then waits a little longer for discovery to settle
    on the subscribers' side.  With reliable QoS it waits (at most ``ack_timeout`` s)
    until every subscriber has acknowledged the last messages before it goes.  Stops
    cleanly on Ctrl-C.
    """
    if rate <= 0:
        raise BagError(f"--rate must be positive, got {rate}")
    remap = dict(remap or {})
    stats = PlayStats()
    with Bag(path) as bag:
        bag.verify()  # chunk CRCs, before anything is published
        wanted = list(topics) if topics else sorted(bag.topics)
        for t in wanted:
            bag.require(t)
        if not wanted:
            raise bag.error("nothing to play")
        classes = {}
        for t in wanted:
            cls = ros_message_class(bag.topics[t][0])
            if cls is None:
                stats.skipped_topics[t] = f"type {bag.topics[t][0]} is not importable in rclpy"
                log(f"bag play: skipping {t}: {stats.skipped_topics[t]}")
            else:
                classes[t] = cls
        if not classes:
            raise bag.error("none of the topics has a message type importable in rclpy")
        wait_topic = wait_topic or (bag.image_topic() if wait_for_subscribers else None)

        context = rclpy.context.Context()
        rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node(node_name, context=context)
        try:
            profile = input_qos(reliability, depth=10)  # volatile, keep last 10
            pubs = {t: node.create_publisher(cls, remap.get(t, t), profile)
                    for t, cls in classes.items()}
            if wait_for_subscribers:
                if wait_topic not in pubs:
                    raise bag.error(f"cannot wait for subscribers of {wait_topic}: not played")
                _wait_for_subscribers(node, pubs[wait_topic], wait_for_subscribers,
                                      wait_timeout, remap.get(wait_topic, wait_topic), log)
            if delay > 0:
                time.sleep(delay)
            t_start = time.monotonic()
            while True:
                _play_once(bag, list(pubs), pubs, rate, stats, log)
                stats.loops += 1
                if not loop or (max_loops is not None and stats.loops >= max_loops):
                    break
            stats.seconds = time.monotonic() - t_start
            if reliability == "reliable":
                _wait_for_acks(pubs, ack_timeout, log)
        except KeyboardInterrupt:
            log("bag play: interrupted")
        finally:
            node.destroy_node()
            context.try_shutdown()
    return stats


def _wait_for_acks(pubs: dict, timeout: float, log) -> None:
    """Reliable subscribers get every message before the player goes: a copy lost in
    transit (a large frame split into UDP fragments) is re-sent only while the publisher
    exists, so destroying it right after the last publish would lose the last frame."""
    from rclpy.duration import Duration

    for topic, pub in pubs.items():
        if not pub.wait_for_all_acked(Duration(seconds=timeout)):
            log(f"bag play: {topic}: not every reliable subscriber acknowledged the last "
                f"messages within {timeout:.0f} s")


def _wait_for_subscribers(node, pub, count: int, timeout: float, topic: str, log) -> None:
    deadline = time.monotonic() + timeout
    while pub.get_subscription_count() < count:
        if time.monotonic() > deadline:
            raise BagError(
                f"bag play: {topic} has {pub.get_subscription_count()} subscriber(s) after "
                f"{timeout:.0f} s, waited for {count}; are the nodes running, in the same "
                "ROS_DOMAIN_ID, and remapped to this topic?"
            )
        time.sleep(0.05)
    log(f"bag play: {topic} has {pub.get_subscription_count()} subscriber(s)")


def _play_once(bag: Bag, topics, pubs, rate: float, stats: PlayStats, log=print) -> None:
    """One pass over the bag, sleeping to keep the recorded spacing / rate.

    Each payload is deserialized first: one that does not deserialize as its type is
    skipped and counted in ``stats.skipped_messages`` (logged once per topic), instead
    of reaching subscribers whose middleware would drop it without a trace."""
    t0_log = None
    t0_wall = time.monotonic()
    for topic, msgtype, index, log_ns, raw in bag.raw_messages(topics):
        try:
            bag.store.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # any rosbags/numpy error on a malformed payload
            if topic not in stats.skipped_messages:
                log(f"bag play: skipping message {index} on {topic}: it does not deserialize "
                    f"as {msgtype} ({type(exc).__name__}); further ones are counted")
            stats.skipped_messages[topic] = stats.skipped_messages.get(topic, 0) + 1
            continue
        if t0_log is None:
            t0_log = log_ns
        due = t0_wall + (log_ns - t0_log) / 1e9 / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        pubs[topic].publish(bytes(raw))
        stats.published[topic] = stats.published.get(topic, 0) + 1
