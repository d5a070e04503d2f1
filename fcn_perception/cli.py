"""The ``fcn-perception`` command.

Each area registers its own sub-commands with a ``register(subparsers)`` function:
``train`` and ``evaluate`` (training), ``export`` and ``build-engine`` (inference) and
``bag`` (rosbag tools).  Benchmarks are scripts in the repository's ``benchmarks/``.  Only the area that owns the command is
imported, and the areas import torch (about 3 s) and rclpy inside the commands that need
them, so ``--help`` and a bad argument answer at once.

Errors end in one line on stderr, never a traceback: ``error: ...`` with exit status 2
for bad input (a :class:`CommandError`, any ``ValueError`` -- bad files, cards, bags,
checkpoints -- and ``OSError``); anything unexpected prints its type and first line
with exit status 1 (``FCN_PERCEPTION_TRACEBACK=1`` shows the traceback instead).

``--allow-modified-weights`` (anywhere on the line) loads weights whose sha256 differs
from their model card's, for weights edited on purpose.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from fcn_perception.errors import CommandError

ALLOW_MODIFIED_FLAG = "--allow-modified-weights"
TRACEBACK_ENV = "FCN_PERCEPTION_TRACEBACK"

REGISTRARS = {
    "fcn_perception.training.cli": ("train", "evaluate"),
    "fcn_perception.inference.cli": ("export", "build-engine"),
    "fcn_perception.bag.cli": ("bag",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` only the area that owns it is imported (fast start)."""
    parser = argparse.ArgumentParser(
        prog="fcn-perception",
        description="FCN segmentation and R-FCN detection: train, evaluate, export, "
        "and replay and score rosbags.",
    )
    parser.add_argument(ALLOW_MODIFIED_FLAG, action="store_true",
                        help="load weights whose sha256 differs from their model card's "
                        "(edited on purpose); may be given anywhere on the line")
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


def _first_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    allow_modified = ALLOW_MODIFIED_FLAG in argv
    argv = [a for a in argv if a != ALLOW_MODIFIED_FLAG]
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        if allow_modified:
            from fcn_perception.card import allow_modified_weights  # imports torch

            allow_modified_weights()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, OSError) as exc:
        print(f"error: {_first_line(exc, 2000)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"error: {type(exc).__name__}: {_first_line(exc).splitlines()[0]}\n"
              f"(unexpected: set {TRACEBACK_ENV}=1 for the traceback and report it)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
