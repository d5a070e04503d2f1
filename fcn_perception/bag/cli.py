"""``fcn-perception bag make | eval | play | record``.

The sub-commands import their modules when they run, not when the parser is built:
``eval`` loads torch (seconds), ``play`` and ``record`` load rclpy, and ``--help``
should answer at once.
"""
from __future__ import annotations

import argparse

from fcn_perception.inference.backends import NAMES as BACKEND_NAMES  # no torch import


def register(subparsers) -> None:
    bag = subparsers.add_parser(
        "bag", help="rosbag2 tools: make, eval, play, record",
        description="Build bags from CamVid, replay them to the nodes, record the nodes' "
        "outputs and score them (rosbag2, mcap or sqlite3, via the rosbags library).")
    sub = bag.add_subparsers(dest="bag_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("make", help="CamVid-layout folder -> rosbag2",
                       description="Write a split's frames (/camera/image_raw rgb8, optionally "
                       "/camera/image_raw/compressed jpeg) and labels (/camera/labels mono8) "
                       "to a new bag, stamped start + i/rate.")
    p.add_argument("--data", required=True, help="dataset folder (SegNet layout)")
    p.add_argument("--split", required=True, help="split file, e.g. val.txt")
    p.add_argument("--out", required=True, help="bag to create (a folder)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--compressed", action="store_true",
                   help="also write /camera/image_raw/compressed (JPEG)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                   help="rosbag2 storage (default mcap)")
    p.add_argument("--limit", type=int, default=None, help="first N frames only")
    p.set_defaults(func=make_main)

    p = sub.add_parser("eval", help="score segmentation and detection on a bag",
                       description="Offline: run the models on every frame; with "
                       "--predictions: score a recorded live run (drops count as misses). "
                       "Writes the metrics JSON, a predictions bag and an HTML report.")
    p.add_argument("bag", help="bag with images and ground-truth labels")
    p.add_argument("--json", required=True, help="metrics JSON to write")
    p.add_argument("--report", required=True, help="folder for the HTML report")
    p.add_argument("--predictions", default=None,
                   help="recorded bag of the nodes' outputs (live run) instead of running "
                   "the models here")
    p.add_argument("--seg-weights", default=None,
                   help="segmentation weights (default: shipped FCN-8s); live: its card")
    p.add_argument("--det-weights", default=None,
                   help="detection weights (default: shipped R-FCN); live: its card")
    p.add_argument("--tasks", default="segmentation,detection",
                   help="comma-separated: segmentation, detection (default both)")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="inference backend (default auto)")
    p.add_argument("--image-topic", default=None,
                   help="camera topic (default: the bag's one Image/CompressedImage topic, "
                        "raw preferred)")
    p.add_argument("--label-topic", default=None,
                   help="ground-truth mono8 label topic (default: /camera/labels, or the one "
                        "topic named *labels)")
    p.add_argument("--output-bag", default=None,
                   help="predictions bag (default: REPORT/predictions_bag)")
    p.add_argument("--samples", type=int, default=4, help="frames shown in the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=eval_main)

    p = sub.add_parser(
        "play", help="publish a bag to live topics (rclpy)",
        description="Publish a bag's messages on live ROS 2 topics with rclpy, at their "
        "recorded pace (scaled by --rate), keeping each message's header; e.g. a CamVid bag "
        "from `bag make` to the perception nodes.  Topics can be selected and remapped, "
        "and playing can wait for the node's subscription.  Outputs carry the recorded "
        "header stamps; no /clock is published (for nodes on the bag's time, "
        "use_sim_time:=true, a ROS 2 install's `ros2 bag play --clock` does it; the PyPI "
        "venv has no ros2 command).")
    p.add_argument("bag", help="bag folder (or one .mcap/.db3 file)")
    p.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play again and again")
    p.add_argument("--topics", nargs="+", default=None, help="topics to play (default all)")
    p.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO",
                   help="publish topic FROM of the bag on TO")
    p.add_argument("--qos", choices=("reliable", "best_effort"), default="reliable",
                   help="reliability of the publishers (default reliable)")
    p.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                   help="wait until the camera topic has N subscribers before playing")
    p.add_argument("--wait-timeout", type=float, default=60.0,
                   help="seconds --wait-for-subscribers waits before it fails (default 60)")
    p.add_argument("--delay", type=float, default=0.0,
                   help="seconds to wait before the first message (after the wait)")
    p.set_defaults(func=play_main)

    p = sub.add_parser(
        "record", help="record live topics to a bag (rclpy)",
        description="Subscribe to live ROS 2 topics with rclpy and write every message to "
        "a new bag (mcap or sqlite3), e.g. the nodes' outputs during `bag play`, to score "
        "them afterwards with `bag eval --predictions`.  Stops after --duration, "
        "--idle-timeout or --max-messages, or on Ctrl-C.")
    p.add_argument("topics", nargs="+", help="topics, e.g. /segmentation/labels /detections")
    p.add_argument("--out", required=True, help="bag to create")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                   help="rosbag2 storage (default mcap)")
    p.add_argument("--qos", choices=("auto", "reliable", "best_effort"), default="auto",
                   help="auto: best effort if a publisher is, else reliable")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--idle-timeout", type=float, default=None,
                   help="stop S seconds after the last message (messages of "
                   "diagnostic_msgs/DiagnosticArray topics, which nodes publish every "
                   "second, do not count)")
    p.add_argument("--max-messages", type=int, default=None,
                   help="stop once every topic has N messages")
    p.add_argument("--wait-for", nargs="+", default=None, metavar="TOPIC",
                   help="topics that must have a publisher before recording counts as "
                   "ready (default: all); the others are subscribed when they appear")
    p.add_argument("--wait-timeout", type=float, default=60.0,
                   help="seconds to wait for the --wait-for publishers")
    p.add_argument("--ready-file", default=None,
                   help="file written once the subscriptions are matched")
    p.set_defaults(func=record_main)


def make_main(args: argparse.Namespace) -> int:
    from fcn_perception.bag.make import make_bag

    made = make_bag(args.data, args.split, args.out, rate=args.rate,
                    compressed=args.compressed, storage=args.storage, limit=args.limit)
    topics = ", ".join(f"{t} ({n})" for t, n in made.topics.items())
    print(f"wrote {made.path} ({args.storage}): {made.frames} frames at {args.rate:g} Hz; "
          f"{topics}")
    return 0


def _tasks(text: str) -> set[str]:
    tasks = {t.strip() for t in text.split(",") if t.strip()}
    bad = tasks - {"segmentation", "detection"}
    if bad or not tasks:
        raise ValueError(f"--tasks {text!r}: use segmentation, detection or both")
    return tasks


def eval_main(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from fcn_perception.bag.eval import evaluate_bag
    from fcn_perception.bag.read import Bag

    tasks = _tasks(args.tasks)
    weights = {"segmentation": args.seg_weights, "detection": args.det_weights}
    with ExitStack() as stack:
        # each bag is opened once: checked here (chunk CRCs, so corrupted bytes are not
        # scored silently; before the models load) and then scored
        bag = stack.enter_context(Bag(args.bag))
        bag.verify()
        kwargs = {}
        if args.predictions:
            from fcn_perception.card import DEFAULT_WEIGHTS, read_card

            kwargs["predictions"] = stack.enter_context(Bag(args.predictions))
            kwargs["predictions"].verify()
            for task in tasks:
                kwargs[f"{task[:3]}_card"] = read_card(weights[task] or DEFAULT_WEIGHTS[task])
        else:
            from fcn_perception import load_predictor

            for task, key in (("segmentation", "segmenter"), ("detection", "detector")):
                if task in tasks:
                    kwargs[key] = load_predictor(task, backend=args.backend,
                                                 weights=weights[task])
        result = evaluate_bag(bag, args.json, args.report, image_topic=args.image_topic,
                              label_topic=args.label_topic, output_bag=args.output_bag,
                              samples=args.samples, progress=not args.quiet, **kwargs)
    print(summary_text(result))
    print(f"wrote {args.json}, {result['predictions_bag'] if not args.predictions else ''}"
          .rstrip(", "))
    print(f"report: {result['report']}")
    return 0


def summary_text(result: dict) -> str:
    fr = result["frames"]
    lines = [f"{result['mode']} evaluation of {result['bag']}: {fr['scored']} frames scored"
             + (f", {fr['without_ground_truth']} without ground truth"
                if fr["without_ground_truth"] else "")]
    seg = result.get("segmentation")
    if seg:
        drop = (f" (answered {fr['segmentation_answered']}, dropped "
                f"{fr['segmentation_dropped']})" if result["mode"] == "live" else "")
        lines.append(f"  segmentation{drop}: pixel acc {seg['pixel_accuracy']:.4f}  mean acc "
                     f"{seg['mean_accuracy']:.4f}  mean IoU {seg['mean_iou']:.4f}  fw IoU "
                     f"{seg['fw_iou']:.4f}")
    det = result.get("detection")
    if det:
        drop = (f" (answered {fr['detection_answered']}, dropped {fr['detection_dropped']})"
                if result["mode"] == "live" else "")
        lines.append(f"  detection{drop}: mAP@0.5 {det['map50']:.4f}  mAP@[.5:.95] "
                     f"{det['map']:.4f}")
    for task, lat in result.get("latency_ms", {}).items():
        lines.append(f"  {task} latency: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms")
    return "\n".join(lines)


def play_main(args: argparse.Namespace) -> int:
    from fcn_perception.bag.play import play_bag

    remap = {}
    for item in args.remap:
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise ValueError(f"--remap {item!r}: expected FROM:=TO")
        remap[src] = dst
    stats = play_bag(args.bag, rate=args.rate, loop=args.loop, topics=args.topics,
                     remap=remap, reliability=args.qos,
                     wait_for_subscribers=args.wait_for_subscribers,
                     wait_timeout=args.wait_timeout, delay=args.delay)
    sent = ", ".join(f"{t} {n}" for t, n in stats.published.items())
    print(f"bag play: published {sent} in {stats.seconds:.1f} s ({stats.loops} pass(es))")
    if stats.skipped_messages:
        bad = ", ".join(f"{t} {n}" for t, n in stats.skipped_messages.items())
        print(f"bag play: skipped undeserialisable messages: {bad}")
    return 0


def record_main(args: argparse.Namespace) -> int:
    from fcn_perception.bag.record import record

    stats = record(args.out, args.topics, storage=args.storage, reliability=args.qos,
                   wait_for=args.wait_for, wait_timeout=args.wait_timeout, duration=args.duration,
                   idle_timeout=args.idle_timeout, max_messages=args.max_messages,
                   ready_file=args.ready_file)
    got = ", ".join(f"{t} {n}" for t, n in stats.counts.items())
    print(f"bag record: wrote {stats.path}: {got} in {stats.seconds:.1f} s "
          f"(stopped by {stats.stopped_by})")
    return 0
