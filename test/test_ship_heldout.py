"""``train ship --heldout``: a shipped card carries the score of its recipe on whole
sequences held out of training, and refuses a run that is not that (another recipe, or
a val split whose sequences it trained on).  Tiny real runs on CamVid frames."""
import json
import shutil

import pytest

from fcn_perception.card import read_card, write_card
from fcn_perception.cli import main
from fcn_perception.errors import CommandError
from fcn_perception.training.engine import heldout_section, split_sequences

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _split(camvid_dir, path, sequences, per_sequence):
    """A list file of the first ``per_sequence`` train frames of each sequence."""
    lines = (camvid_dir / "train.txt").read_text().splitlines()
    picked = [ln for seq in sequences for ln in [x for x in lines if f"/{seq}_" in x][:per_sequence]]
    path.write_text("\n".join(picked) + "\n")
    return path


def _train(camvid_dir, out, train, val):
    assert main(["train", "segmentation", "--data", str(camvid_dir), "--train-split", str(train),
                 "--val-split", str(val), "--out", str(out), "--epochs", "1", "--batch-size",
                 "2", "--crop", "64", "96", "--scale", "1", "1", "--select", "last",
                 "--threads", "1", "--no-tensorboard"]) == 0


@pytest.fixture(scope="module")
def runs(camvid_dir, tmp_path_factory):
    """The shipped run (two sequences, 0006R0 among them) and its held-out twin (the same
    recipe without 0006R0), both scored on 0006R0 frames."""
    work = tmp_path_factory.mktemp("heldout")
    full = _split(camvid_dir, work / "full.txt", ["0001TP", "0006R0"], 2)
    fold = _split(camvid_dir, work / "without_0006R0.txt", ["0001TP"], 2)
    val = _split(camvid_dir, work / "0006R0.txt", ["0006R0"], 2)
    _train(camvid_dir, work / "full", full, val)
    _train(camvid_dir, work / "fold", fold, val)
    return work


def test_card_carries_the_heldout_score(runs):
    assert split_sequences(runs / "full.txt") == {"0001TP", "0006R0"}
    dest = runs / "ship" / "model.safetensors"
    assert main(["train", "ship", "--run", str(runs / "full"), "--to", str(dest),
                 "--heldout", str(runs / "fold")]) == 0
    card, fold = read_card(dest), read_card(runs / "fold" / "model.safetensors")
    held = card["heldout"]
    assert held["sequences"] == ["0006R0"] and held["train_sequences"] == ["0001TP"]
    assert held["metrics"] == fold["metrics"]["val"]  # the held-out run's own scoring
    rows = [json.loads(r) for r in (runs / "fold" / "metrics.jsonl").read_text().splitlines()]
    assert [h["val/mean_iou"] for h in held["history"]] == [round(r["val/mean_iou"], 5)
                                                           for r in rows]
    assert card["metrics"]["val_in_training"] is True  # its val frames are in its train split
    assert card["metrics"]["val"] != held["metrics"]  # two models, two scores


def test_refuses_another_recipe_or_a_val_it_trained_on(runs):
    card = read_card(runs / "full" / "model.safetensors")
    with pytest.raises(CommandError, match=r"trained on its val sequences \['0006R0'\]"):
        heldout_section(runs / "full", card)
    other = runs / "other"
    shutil.copytree(runs / "fold", other, dirs_exist_ok=True)
    changed = read_card(other / "model.safetensors")
    changed["training"]["lr"] *= 2
    write_card(changed, other / "model.safetensors")
    with pytest.raises(CommandError, match=r"trained another recipe \(differs in lr\)"):
        heldout_section(other, card)


def test_input_size_scores_the_model_and_its_heldout_run_at_that_size(runs, camvid_dir):
    """``--input-size``: the card runs the network at that size, and its val and held-out
    scores are those of that size (the evaluate command on the shipped file agrees)."""
    dest = runs / "ship_big" / "model.safetensors"
    assert main(["train", "ship", "--run", str(runs / "full"), "--to", str(dest),
                 "--heldout", str(runs / "fold"), "--input-size", "96", "128"]) == 0
    card, fold = read_card(dest), read_card(runs / "fold" / "model.safetensors")
    assert card["input"]["size"] == [96, 128] and card["heldout"]["input_size"] == [96, 128]
    assert card["heldout"]["metrics"]["mean_iou"] != fold["metrics"]["val"]["mean_iou"]
    out = runs / "big.json"
    assert main(["evaluate", "segmentation", "--data", str(camvid_dir), "--split",
                 str(runs / "0006R0.txt"), "--weights", str(dest), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["mean_iou"] == pytest.approx(card["metrics"]["val"]["mean_iou"], abs=1e-9)
    assert got["frames"] == card["metrics"]["val"]["frames"] == 2


def test_input_scale_script_scores_a_run_at_each_size(runs):
    """scripts/input_scale.py: the evidence for --input-size, one row per size, equal to
    what ship measures at that size."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "input_scale.py"
    spec = importlib.util.spec_from_file_location("input_scale", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = runs / "scale.json"
    assert script.main(["--run", f"fold={runs / 'fold'}", "--sizes", "72x96", "96x128",
                        "--out", str(out)]) == 0
    sizes = json.loads(out.read_text())["runs"]["fold"]["sizes"]
    assert list(sizes) == ["72x96", "96x128"] and sizes["72x96"]["frames"] == 2
    card = read_card(runs / "ship_big" / "model.safetensors")  # shipped at 96x128
    assert sizes["96x128"]["mean_iou"] == pytest.approx(card["heldout"]["metrics"]["mean_iou"])
    with pytest.raises(SystemExit, match="expected HxW"):
        script.main(["--run", f"fold={runs / 'fold'}", "--sizes", "big", "--out", str(out)])
