"""Training on the user's own data: the dataset description file (YAML).

A small synthetic data set in the Cityscapes layout with other classes (ground, wall,
robot, box; raw label ids mapped to train ids by the file) is read, trained on for a
few epochs, and the shipped run is loaded by a real segmentation node, which must name
the new classes in LabelInfo.  Bad description files give one line naming file and field.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_perception.errors import DatasetError
from fcn_perception.evaluation.camvid import CLASSES as CAMVID_CLASSES
from fcn_perception.evaluation.camvid import PALETTE as CAMVID_PALETTE
from fcn_perception.training.dataset_file import (
    CAMVID_FILE,
    DATASETS,
    camvid_dataset,
    read_dataset_file,
)

CLASSES = ["ground", "wall", "robot", "box"]
PALETTE = [[90, 60, 20], [150, 150, 160], [230, 30, 40], [30, 80, 230]]
RAW_IDS = {7: 0, 12: 1, 24: 2, 26: 3}  # Cityscapes-style labelIds -> train ids; 0 = void
SIZE = (96, 128)
COLOURS = {7: (100, 70, 30), 12: (140, 140, 150), 24: (220, 40, 40), 26: (40, 70, 220), 0: (0, 0, 0)}

DESCRIPTION = f"""\
name: warehouse
root: data
classes: {CLASSES}
palette: {PALETTE}
ignore_index: 255
label_map: {{7: 0, 12: 1, 24: 2, 26: 3}}
image_suffix: _leftImg8bit.png
label_suffix: _gtFine_labelIds.png
splits:
  train: {{images: leftImg8bit/train, labels: gtFine/train}}
  val: {{images: leftImg8bit/val, labels: gtFine/val}}
detection:
  classes: [robot, box]
  min_area: 20
"""


def _frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A wall above the ground, a box and a round robot on it, a void border row."""
    h, w = SIZE
    raw = np.full((h, w), 12, np.uint8)
    horizon = int(rng.integers(35, 55))
    raw[horizon:] = 7
    y0, x0 = int(rng.integers(horizon - 20, h - 30)), int(rng.integers(0, w // 2 - 25))
    raw[y0:y0 + int(rng.integers(15, 28)), x0:x0 + int(rng.integers(15, 28))] = 26
    cy, cx, r = int(rng.integers(horizon - 5, h - 15)), int(rng.integers(w // 2 + 10, w - 15)), \
        int(rng.integers(8, 14))
    yy, xx = np.mgrid[:h, :w]
    raw[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 24
    raw[0] = 0
    image = np.zeros((h, w, 3), np.float32)
    for value, colour in COLOURS.items():
        image[raw == value] = colour
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), raw


@pytest.fixture(scope="module")
def dataset_yaml(tmp_path_factory) -> Path:
    """12 frames, 96x128, Cityscapes layout: train (two cities, 8) and val (one city, 4)."""
    base = tmp_path_factory.mktemp("warehouse")
    rng = np.random.default_rng(0)
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("ulm",))):
        for city in cities:
            for n in range(4):
                image, raw = _frame(rng)
                stem = f"{city}_000000_{n:06d}"
                for folder, suffix, array in (("leftImg8bit", "_leftImg8bit.png", image),
                                              ("gtFine", "_gtFine_labelIds.png", raw)):
                    out = base / "data" / folder / split / city
                    out.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(array).save(out / f"{stem}{suffix}")
    path = base / "warehouse.yaml"
    path.write_text(DESCRIPTION)
    return path


# ----------------------------------------------------------------------------- reading
def test_cityscapes_layout_is_read_and_label_ids_mapped(dataset_yaml):
    desc = read_dataset_file(dataset_yaml)
    assert desc.classes == tuple(CLASSES) and desc.palette == tuple(map(tuple, PALETTE))
    train, val = desc.open("train"), desc.open("val")
    assert (len(train), len(val)) == (8, 4)
    assert {s.image.parent.name for s in train.samples} == {"aachen", "bremen"}
    for s in val.samples:
        assert s.label.name == s.image.name.replace("_leftImg8bit", "_gtFine_labelIds")
    image, label = val.load(2)
    raw = np.asarray(Image.open(val.samples[2].label))
    assert image.shape == (*SIZE, 3) and label.shape == SIZE
    expected = np.full(SIZE, 255, np.uint8)
    for raw_id, train_id in RAW_IDS.items():
        expected[raw == raw_id] = train_id
    np.testing.assert_array_equal(label, expected)
    assert set(np.unique(label).tolist()) == {0, 1, 2, 3, 255}


def test_camvid_is_one_such_file():
    desc = read_dataset_file(CAMVID_FILE)
    assert desc.classes == CAMVID_CLASSES and desc.palette == CAMVID_PALETTE
    assert desc.ignore_index == 11 and desc.root is None
    with pytest.raises(DatasetError, match=r"camvid.yaml: root: is not set; pass .*--data"):
        desc.samples("train")
    cityscapes = read_dataset_file(DATASETS / "cityscapes.yaml")
    assert len(cityscapes.classes) == 19 and cityscapes.label_map[26] == cityscapes.classes.index("car")


def test_camvid_folder_reads_through_the_description(camvid_dir):
    from fcn_perception.evaluation.camvid import CamVid

    data = camvid_dataset(camvid_dir).open("val")
    reference = CamVid(camvid_dir, "val.txt")
    assert [s.image for s in data.samples] == [s.image for s in reference.samples]
    for i in (0, len(data) - 1):
        for a, b in zip(data.load(i), reference.load(i)):
            np.testing.assert_array_equal(a, b)
    # a list file that is not a split name still works (the held-out folds)
    fold = Path(__file__).resolve().parents[1] / "training" / "splits" / "camvid_0006R0.txt"
    assert len(camvid_dataset(camvid_dir).open(fold)) > 0


BAD = [
    ("classes: [a, b]\nsplits: {train: t.txt}\npalete: [[1, 2, 3], [4, 5, 6]]\n",
     r"palete: is not a known key; did you mean palette\?"),
    ("classes: [a, b]\npalette: [[1, 2, 3]]\nsplits: {train: t.txt}\n",
     r"palette: has 1 colours for 2 classes; give one colour per class"),
    ("classes: [a, b]\nignore_index: 1\nsplits: {train: t.txt}\n",
     r"ignore_index: is 1; use the label value of unlabelled pixels, 2..255"),
    ("classes: [a, b]\nlabel_map: {7: 5}\nsplits: {train: t.txt}\n",
     r"label_map.7: maps to 5; map to a class id 0..1 or to ignore_index 255"),
    ("classes: [a, a]\nsplits: {train: t.txt}\n", r"classes: names \['a'\] more than once"),
    ("classes: [a]\nsplits: {train: {images: im}}\n",
     r"splits.train: has neither labels nor coco; add labels: FOLDER"),
    ("classes: [a]\nsplits: {train: t.txt}\ndetection: {classes: [b]}\n",
     r"detection.classes: names \['b'\], which are not in classes; use names from classes"),
    ("classes: [a\nsplits: x\n", r"is not valid YAML \(line \d+, column \d+\)"),
    ("- a\n- b\n", r"\(top level\): is \['a', 'b'\], not a mapping"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[b[1][:24] for b in BAD])
def test_bad_description_names_file_field_and_fix(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message) as info:
        read_dataset_file(path)
    assert str(info.value).startswith(f"dataset file {path}") and "\n" not in str(info.value)


def test_missing_split_and_labels_are_named(dataset_yaml, tmp_path):
    desc = read_dataset_file(dataset_yaml)
    with pytest.raises(DatasetError, match=r"splits: has no split 'test' \(it has train, val\)"):
        desc.open("test")
    broken = tmp_path / "broken.yaml"
    broken.write_text(dataset_yaml.read_text().replace("_gtFine_labelIds.png", "_gtFine_ids.png")
                      .replace("root: data", f"root: {dataset_yaml.parent / 'data'}"))
    with pytest.raises(DatasetError, match=r"8 image\(s\) in .* have no label.*label_suffix"):
        read_dataset_file(broken).open("train")


def test_command_line_error_is_one_line(dataset_yaml, tmp_path, capsys):
    from fcn_perception.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(dataset_yaml.read_text().replace("ignore_index: 255", "ignore_index: 2"))
    code = main(["train", "segmentation", "--dataset", str(bad), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: dataset file {bad}: ignore_index: is 2;"), err
    assert not (tmp_path / "r").exists()


def test_detection_boxes_come_from_the_description(dataset_yaml):
    from fcn_perception.training.det_data import open_detection_split

    desc = read_dataset_file(dataset_yaml)
    boxes = open_detection_split(None, "val", dataset=desc)
    assert boxes.classes == ("robot", "box") and boxes.label_ids == [2, 3]
    assert boxes.palette == [PALETTE[2], PALETTE[3]] and boxes.rule["min_area"] == 20
    for i, sample in enumerate(desc.open("val").samples):
        raw = np.asarray(Image.open(sample.label))
        ys, xs = np.nonzero(raw == 24)  # the robot: one disc per frame
        b, labels = boxes.boxes(i)
        assert sorted(labels.tolist()) == [0, 1]
        np.testing.assert_array_equal(b[labels == 0][0], [xs.min(), ys.min(), xs.max() + 1,
                                                          ys.max() + 1])


def test_detection_trains_on_the_description(dataset_yaml, tmp_path):
    from fcn_perception.card import read_card
    from fcn_perception.cli import main

    run = tmp_path / "det"
    assert main(["train", "detection", "--dataset", str(dataset_yaml), "--out", str(run),
                 "--backbone", "resnet18", "--feature-channels", "32", "--epochs", "1",
                 "--batch-size", "2", "--limit-train", "4", "--limit-val", "2",
                 "--threads", "1", "--no-tensorboard"]) == 0
    card = read_card(run / "model.safetensors")
    assert card["classes"] == ["robot", "box"] and card["palette"] == PALETTE[2:]
    assert card["box_derivation"]["label_ids"] == [2, 3]
    assert card["training"]["dataset"] == str(dataset_yaml)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def shipped(dataset_yaml, tmp_path_factory) -> Path:
    """``train segmentation --dataset`` (U-Net, 4 epochs on 8 frames, one thread), then
    ``train ship`` of the run to a weights file outside the package."""
    from fcn_perception.cli import main

    work = tmp_path_factory.mktemp("warehouse_run")
    run, weights = work / "run", work / "weights" / "warehouse_unet.safetensors"
    assert main(["train", "segmentation", "--dataset", str(dataset_yaml), "--out", str(run),
                 "--arch", "unet", "--epochs", "4", "--batch-size", "4", "--lr", "3e-3",
                 "--crop", *map(str, SIZE), "--scale", "1", "1", "--threads", "1",
                 "--no-tensorboard"]) == 0
    assert main(["train", "ship", "--run", str(run), "--to", str(weights)]) == 0
    return weights


def test_trained_card_takes_classes_from_the_description(shipped, dataset_yaml):
    from fcn_perception.card import read_card

    card = read_card(shipped)
    assert card["classes"] == CLASSES and card["palette"] == PALETTE
    assert card["ignore_index"] == 255 and card["architecture"]["num_classes"] == 4
    assert card["training"]["dataset"] == {"name": "warehouse", "file": str(dataset_yaml)}
    # it learned the synthetic classes (4 epochs reach about 0.97 pixel accuracy on val)
    assert card["metrics"]["val"]["pixel_accuracy"] > 0.9, card["metrics"]["val"]


def test_evaluate_reads_the_description(shipped, dataset_yaml, tmp_path):
    """``evaluate segmentation --dataset`` scores the shipped run as training scored it."""
    from fcn_perception.card import read_card
    from fcn_perception.cli import main

    out = tmp_path / "val.json"
    assert main(["evaluate", "segmentation", "--dataset", str(dataset_yaml), "--split", "val",
                 "--weights", str(shipped), "--backend", "torch-cpu", "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    card = read_card(shipped)["metrics"]["val"]
    assert scores["frames"] == 4 and list(scores["per_class_iou"]) == CLASSES
    assert scores["pixel_accuracy"] == pytest.approx(card["pixel_accuracy"], abs=1e-3)
    assert scores["mean_iou"] == pytest.approx(card["mean_iou"], abs=1e-3)


def test_node_publishes_the_new_class_names(shipped, dataset_yaml, rclpy_context):
    pytest.importorskip("vision_msgs")
    import ros_harness
    from ros_harness import Harness, as_array, image_msg, make_node
    from sensor_msgs.msg import Image as ImageMsg
    from vision_msgs.msg import LabelInfo

    from fcn_perception.ros import nodes, qos

    val = read_dataset_file(dataset_yaml).open("val")
    harness = Harness(rclpy_context)
    try:
        node = make_node(nodes.SegmentationNode, harness,
                         {"model": str(shipped), "backend": "torch-cpu"})
        harness.subscribe("label_info", LabelInfo, qos.latched_qos())
        info = harness.wait(lambda: harness.received.get("label_info"), what="label_info")[0]
        assert [(c.class_id, c.class_name) for c in info.class_map] == list(enumerate(CLASSES))
        harness.subscribe("segmentation/labels", ImageMsg)
        pub = harness.publisher("image", ImageMsg)
        harness.wait_matched(pub)
        ros_harness.wait_outputs_matched(harness, node, ["labels"])
        agree = []
        for stamp in range(len(val)):
            image, truth = val.load(stamp)
            pub.publish(image_msg(image, "rgb8", stamp))
            labels = as_array(harness.message_with_stamp("segmentation/labels", stamp))
            assert labels.shape == SIZE and set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
            known = truth != 255
            agree.append(float((labels[known] == truth[known]).mean()))
        # the node reproduces the card's val pixel accuracy (same frames, same weights)
        assert np.mean(agree) > 0.9, agree
    finally:
        harness.close()
