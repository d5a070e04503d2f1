"""The shipped FCN-8s ResNet-18: its card, the evaluate command on real val frames, and
agreement between the Predictor and the training-time scoring that wrote the card."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fcn_perception.evaluation.camvid import CLASSES, PALETTE, CamVid
from fcn_perception.models import build_model
from fcn_perception.training.train_segmentation import CachedSegmentationSet, confusion_on
from fcn_perception.training.transforms import SegmentationTransform
from fcn_perception.weights_io import DEFAULT_WEIGHTS, load_weights_into, read_card, sha256_of

WEIGHTS = DEFAULT_WEIGHTS["segmentation"]
FRAMES = 6  # the first val frames, spread over the sequence: every 17th line


@pytest.fixture(scope="module")
def val_subset(tmp_path_factory, camvid_dir):
    lines = (camvid_dir / "val.txt").read_text().splitlines()[::17][:FRAMES]
    split = tmp_path_factory.mktemp("split") / "val_subset.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


def test_card_describes_the_shipped_weights():
    card = read_card(WEIGHTS)
    assert card["sha256"] == sha256_of(WEIGHTS)
    assert WEIGHTS.stat().st_size < 50 * 2**20
    assert card["task"] == "segmentation"
    assert card["architecture"] == {"name": "fcn8s", "backbone": "resnet18", "num_classes": 11}
    assert card["classes"] == list(CLASSES)
    assert [tuple(c) for c in card["palette"]] == list(PALETTE)
    assert card["training"]["pretrained"] is None  # trained from scratch
    val = card["metrics"]["val"]
    assert 0.5 < val["mean_iou"] <= 1 and 0.85 < val["pixel_accuracy"] <= 1


def test_evaluate_command_with_shipped_weights_beats_floor(tmp_path, camvid_dir, val_subset):
    out = tmp_path / "val.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fcn_perception.cli", "evaluate", "segmentation",
         "--data", str(camvid_dir), "--split", str(val_subset), "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mean_iou" in proc.stdout
    scores = json.loads(out.read_text())
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert 0.0 <= scores[key] <= 1.0
    assert set(scores["per_class_iou"]) == set(CLASSES)
    assert scores["frames"] == FRAMES
    # floors well below the full-val figures of the card (0.89 / 0.58)
    assert scores["pixel_accuracy"] > 0.80, scores["pixel_accuracy"]
    assert scores["mean_iou"] > 0.40, scores["mean_iou"]
    assert (tmp_path / "val_confusion.png").stat().st_size > 10_000
    assert (tmp_path / "val_iou.png").stat().st_size > 10_000


def test_predictor_agrees_with_training_scoring(camvid_dir, val_subset):
    """The Predictor (torch backend) and confusion_on, which wrote the card's metrics,
    label the same pixels the same way."""
    import fcn_perception
    from fcn_perception.evaluation.segmentation import ConfusionMatrix

    torch.set_num_threads(1)
    card = read_card(WEIGHTS)
    data = CamVid(camvid_dir, val_subset)
    tf = SegmentationTransform(False, card["input"]["mean"], card["input"]["std"])
    model = load_weights_into(build_model(card["architecture"]), WEIGHTS).eval()
    ref = confusion_on(model, CachedSegmentationSet(data, tf), 11, 11, torch.device("cpu"),
                       card["input"]["size"])
    predictor = fcn_perception.load_predictor("segmentation", backend="torch")
    got = ConfusionMatrix(11, 11)
    for i in range(len(data)):
        image, label = data.load(i)
        got.update(label, predictor(image).labels)
    assert got.matrix.sum() == ref.matrix.sum()
    moved = np.abs(got.matrix - ref.matrix).sum() / 2  # pixels scored differently, at least
    assert moved / ref.matrix.sum() < 0.01
    assert abs(got.scores()["mean_iou"] - ref.scores()["mean_iou"]) < 0.005
