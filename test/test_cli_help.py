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
