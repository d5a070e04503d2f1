"""The ``fcn-perception`` command.

Each area registers its own sub-commands with a ``register(subparsers)`` function:
``train`` and ``evaluate`` (training), ``export``, ``build-engine``, ``bench``
(inference) and ``bag`` (rosbag tools).  Imports are lazy so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from fcn_perception.errors import CommandError

REGISTRARS = {
    "fcn_perception.training.cli": ("train", "evaluate"),
    "fcn_perception.inference.cli": ("export", "build-engine", "bench"),
    "fcn_perception.bag.cli": ("bag",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` only the area that owns it is imported (fast start)."""
    parser = argparse.ArgumentParser(
        prog="fcn-perception",
        description="FCN segmentation and R-FCN detection: train, evaluate, export, "
        "benchmark and replay rosbags.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    owners = [m for m, cmds in REGISTRARS.items() if command in cmds] or list(REGISTRARS)
    for name in owners:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
