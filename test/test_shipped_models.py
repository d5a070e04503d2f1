"""The shipped models (FCN-8s EfficientNet-Lite0 ``fast``, the same weights at 540x720
``accurate``, R-FCN Lite0): their cards describe the files and the sequence-held-out protocol they were
trained by, and the evaluate commands reproduce the cards' numbers on the card's val split."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fcn_perception.card import DEFAULT_WEIGHTS, MODELS, read_card, sha256_of
from fcn_perception.evaluation.camvid import CLASSES, PALETTE, CamVid
from fcn_perception.models import build_model
from fcn_perception.training.train_segmentation import CachedSegmentationSet, confusion_on
from fcn_perception.training.transforms import SegmentationTransform
from fcn_perception.weights_io import load_weights_into

SEG, DET = DEFAULT_WEIGHTS["segmentation"], DEFAULT_WEIGHTS["detection"]
REPO = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "fcn_perception.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


SHIPPED = {f"{task}-{name}": path for task, names in MODELS.items() for name, path in names.items()}


@pytest.mark.parametrize("weights", SHIPPED.values(), ids=SHIPPED.keys())
def test_card_describes_the_shipped_weights(weights):
    """Every name in MODELS ships: ImageNet-initialised, full-resolution input, and the
    last epoch of a fixed schedule (nothing selected on a split the model trained on)."""
    card = read_card(weights)
    assert card["sha256"] == sha256_of(weights)
    assert weights.stat().st_size < 50 * 2**20
    assert card["architecture"]["backbone"] == "efficientnet_lite0"
    assert card["training"]["pretrained"] == "imagenet"
    assert card["input"]["size"] == (  # full-resolution frames; accurate at 1.5x of CamVid's
        [540, 720] if weights == MODELS["segmentation"]["accurate"] else None)
    assert card["training"]["time"]["train_loop_min"] <= 120  # the 2-hour recipe budget
    assert card["selected_epoch"] == card["training"]["epochs"]


@pytest.mark.parametrize("weights", SHIPPED.values(), ids=SHIPPED.keys())
def test_cards_carry_the_heldout_protocol(weights):
    """Trained on all of train+val with the recipe's fixed schedule; the card holds the
    same recipe's score on the held-out sequence 0006R0 (trained without it)."""
    card = read_card(weights)
    assert card["training"]["train_split"] == "training/splits/camvid_trainval.txt"
    assert card["training"]["select"] == "last"
    held = card["heldout"]
    assert held["sequences"] == ["0006R0"] and held["train_sequences"] == ["0001TP", "0016E5"]
    assert held["val_split"] == "training/splits/camvid_0006R0.txt"
    assert held["selected_epoch"] == card["training"]["epochs"]
    assert card["metrics"]["val_in_training"] is True
    assert held["input_size"] == card["input"]["size"]
    last = held["history"][-1]  # the held-out run's own (fp32, native size) last epoch
    assert last["epoch"] + 1 == held["selected_epoch"]
    key = "mean_iou" if card["task"] == "segmentation" else "map50"
    if weights != MODELS["segmentation"]["accurate"]:  # scored as it ran
        assert last[f"val/{key}"] == pytest.approx(held["metrics"][key], abs=5e-3)
    else:  # the same weights and held-out run as fast, at 540x720: better on the new street
        fast = read_card(MODELS["segmentation"]["fast"])
        assert card["training"] == fast["training"]  # one run, shipped twice
        assert held["metrics"][key] > fast["heldout"]["metrics"][key]


def _val_split(card) -> str:
    """The card's val split: a repository split file, or a name within the data folder."""
    split = card["training"]["val_split"]
    return str(REPO / split) if (REPO / split).is_file() else split


@pytest.mark.parametrize("name", MODELS["segmentation"])
def test_segmentation_card_and_evaluate_reproduce_val(tmp_path, camvid_dir, name):
    weights = MODELS["segmentation"][name]
    card = read_card(weights)
    assert card["task"] == "segmentation" and card["architecture"]["name"] == "fcn8s"
    assert card["classes"] == list(CLASSES)
    assert [tuple(c) for c in card["palette"]] == list(PALETTE)
    out = tmp_path / "val.json"
    proc = _cli("evaluate", "segmentation", "--data", camvid_dir, "--split", _val_split(card),
                "--weights", weights, "--json", out)
    assert "mean_iou" in proc.stdout
    got, want = json.loads(out.read_text()), card["metrics"]["val"]
    assert got["frames"] == 101
    # the default backend (ONNX Runtime) against the card's torch scoring of the same weights
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert got[key] == pytest.approx(want[key], abs=2e-3), key
    for name in CLASSES:
        assert got["per_class_iou"][name] == pytest.approx(want["per_class_iou"][name], abs=5e-3)
    assert (tmp_path / "val_confusion.png").stat().st_size > 10_000
    assert (tmp_path / "val_iou.png").stat().st_size > 10_000


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_detection_evaluate_reproduces_the_card(tmp_path, camvid_dir, backend):
    """On ONNX Runtime (auto here) and on torch: the one exported graph and the eager
    model give the card's numbers, which training scored in eager torch."""
    card = read_card(DET)
    assert card["task"] == "detection" and card["architecture"]["name"] == "rfcn"
    out = tmp_path / "det.json"
    _cli("evaluate", "detection", "--data", camvid_dir, "--split", _val_split(card), "--json",
         out, "--backend", backend)
    got, want = json.loads(out.read_text()), card["metrics"]["val"]
    assert got["backend"] == ("torch-cpu" if backend == "torch" else "onnxruntime-cpu")
    assert got["map50"] == pytest.approx(want["map50"], abs=1e-3)
    assert got["map"] == pytest.approx(want["map"], abs=1e-3)
    for name, ap in want["per_class_ap"].items():
        assert got["per_class_ap"][name] == pytest.approx(ap, abs=2e-3), name
    assert (tmp_path / "det_pr.png").stat().st_size > 10_000


def test_segmentation_predictor_agrees_with_training_scoring(tmp_path, camvid_dir):
    """The Predictor (torch backend) and confusion_on, which wrote the card's metrics,
    label the same pixels the same way (6 val frames spread over the sequence)."""
    import fcn_perception
    from fcn_perception.evaluation.segmentation import ConfusionMatrix

    lines = (camvid_dir / "val.txt").read_text().splitlines()[::17][:6]
    split = tmp_path / "val_subset.txt"
    split.write_text("\n".join(lines) + "\n")
    card = read_card(SEG)
    data = CamVid(camvid_dir, split)
    tf = SegmentationTransform(False, card["input"]["mean"], card["input"]["std"])
    model = load_weights_into(build_model(card["architecture"]), SEG).eval()
    ref = confusion_on(model, CachedSegmentationSet(data, tf), 11, 11, torch.device("cpu"),
                       card["input"]["size"])
    predictor = fcn_perception.load_predictor("segmentation", backend="torch")
    got = ConfusionMatrix(11, 11)
    for i in range(len(data)):
        image, label = data.load(i)
        got.update(label, predictor(image).labels)
    assert got.matrix.sum() == ref.matrix.sum() > 0
    moved = np.abs(got.matrix - ref.matrix).sum() / 2  # pixels scored differently, at least
    assert moved / ref.matrix.sum() < 0.002
