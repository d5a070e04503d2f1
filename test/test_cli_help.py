"""Command-line help: bag play / record describe themselves; bag eval and both evaluate
commands list their backends."""
from __future__ import annotations

import pytest

from fcn_perception.cli import main


@pytest.mark.parametrize("command,words", [
    (["bag", "play"], "Publish a bag's messages on live ROS 2 topics"),
    (["bag", "record"], "write every message to a new bag"),
])
def test_bag_subcommands_have_descriptions(command, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert words in out


@pytest.mark.parametrize("command", [
    ["bag", "eval", "x", "--json", "j", "--report", "r"],
    ["evaluate", "segmentation", "--data", "d", "--split", "s", "--json", "j"],
    ["evaluate", "detection", "--data", "d", "--split", "s", "--json", "j"],
], ids=["bag-eval", "evaluate-segmentation", "evaluate-detection"])
def test_backend_option_lists_its_choices(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--backend", "bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and "onnxruntime-cpu" in err


def _without_help(parser, path: tuple[str, ...] = ()) -> list[str]:
    import argparse

    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _without_help(sub, (*path, name))
        elif not action.help and action.dest != "help":
            missing.append(" ".join((*path, *(action.option_strings or [action.dest]))))
    return missing


def test_every_option_of_every_command_says_what_it_does():
    """train segmentation/detection/ship, evaluate, export, build-engine and bag: each
    option and positional argument has help text (hidden test-only options aside)."""
    from fcn_perception.cli import build_parser

    parser = build_parser()
    commands = {c for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)
                for c in a.choices}
    assert {"train", "evaluate", "export", "build-engine", "bag"} <= commands
    assert _without_help(parser) == []
