"""QoS profiles for the nodes' subscriptions and publishers, and how to describe them."""
from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

RELIABILITIES = ("best_effort", "reliable")
#: the ``qos_reliability`` parameter's choices: ``auto`` takes what the publishers offer
RELIABILITY_CHOICES = ("auto", *RELIABILITIES)


def offered_reliability(publisher_profiles: list[QoSProfile]) -> str:
    """The reliability a subscription should take to get every frame of these
    publishers: ``reliable`` when there are publishers and all of them offer it (a
    reliable subscription to a reliable camera has its lost samples sent again, and
    large frames then arrive even through Fast DDS's default 512 KiB shared-memory
    segment), else ``best_effort`` (it matches every publisher), as ``ros2 bag record``
    adapts its QoS."""
    if publisher_profiles and all(p.reliability == ReliabilityPolicy.RELIABLE
                                  for p in publisher_profiles):
        return "reliable"
    return "best_effort"


def input_qos(reliability: str = "best_effort", depth: int = 5) -> QoSProfile:
    """The camera subscription's QoS (``reliability`` ``best_effort`` or ``reliable``;
    ``auto`` is resolved by the caller with :func:`offered_reliability`).

    ``best_effort`` is ROS's sensor-data profile (best effort, volatile, keep last
    ``depth``): it matches both best-effort and reliable camera publishers.
    ``reliable`` only matches reliable publishers but never loses a frame in transit.
    """
    if reliability not in RELIABILITIES:
        raise ValueError(f"qos reliability {reliability!r}; expected one of {RELIABILITIES}")
    if reliability == "best_effort":
        profile = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
    else:
        profile = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )
    return profile


def output_qos(depth: int = 2) -> QoSProfile:
    """Results: reliable (so both reliable and best-effort subscribers, e.g. RViz and
    bag recorders, connect), volatile, a short keep-last queue so a slow subscriber
    costs memory of ``depth`` messages at most."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """``label_info``: reliable, transient local, depth 1 (late joiners get the last)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def diagnostics_qos() -> QoSProfile:
    return QoSProfile(depth=10)


def _policy_name(policy) -> str:
    return getattr(policy, "name", str(policy)).lower()


def describe(profile: QoSProfile) -> str:
    """``"best_effort, volatile, keep_last(5)"``."""
    parts = [_policy_name(profile.reliability), _policy_name(profile.durability)]
    if profile.history == HistoryPolicy.KEEP_LAST:
        parts.append(f"keep_last({profile.depth})")
    elif profile.history == HistoryPolicy.KEEP_ALL:
        parts.append("keep_all")
    return ", ".join(parts)


def compatibility_hint(sub_profile: QoSProfile, publisher_profiles: list[QoSProfile]) -> str:
    """Why a subscription with ``sub_profile`` may not get the publishers' messages."""
    if not publisher_profiles:
        return (
            "nobody publishes on it: remap the input to your camera, e.g. "
            "`--ros-args -r image:=/camera/image_raw` (or camera:=... with the launch files)"
        )
    if sub_profile.reliability == ReliabilityPolicy.RELIABLE and any(
        p.reliability == ReliabilityPolicy.BEST_EFFORT for p in publisher_profiles
    ):
        return (
            "the publisher is best effort but this subscription is reliable, so they do "
            "not connect: set qos_reliability:=best_effort (or auto, the default)"
        )
    return (
        f"{len(publisher_profiles)} publisher(s) with compatible QoS "
        f"({'; '.join(describe(p) for p in publisher_profiles)}); check that they are "
        "actually publishing (with a ROS 2 install: ros2 topic hz TOPIC; in the venv: "
        "fcn-perception bag record TOPIC --out /tmp/probe --duration 5, which prints the "
        "count) and that ROS_DOMAIN_ID and RMW match"
    )
