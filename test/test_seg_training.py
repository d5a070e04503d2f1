"""The training subpackage on real CamVid frames: data errors, a step lowers the loss,
exact resume, evaluation outputs."""
import argparse
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD
from fcn_perception.errors import DatasetError, WeightsError
from fcn_perception.evaluation.camvid import CamVid
from fcn_perception.models import build_model
from fcn_perception.training import train_segmentation as ts
from fcn_perception.training.transforms import SegmentationTransform
from fcn_perception.weights_io import load_weights_into

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _args(tmp_path, camvid_dir, **over):
    parser = argparse.ArgumentParser()
    ts.add_train_args(parser)
    args = parser.parse_args(["--data", str(camvid_dir), "--out", str(tmp_path / "run")])
    defaults = dict(epochs=2, batch_size=2, limit_train=4, limit_val=2, crop=(64, 96),
                    val_every=1, threads=1, no_tensorboard=True, input_size=None)
    for k, v in {**defaults, **over}.items():
        setattr(args, k, v)
    return args


def test_missing_folder_and_split_say_what_is_expected(tmp_path, camvid_dir):
    with pytest.raises(DatasetError, match="does not exist"):
        CamVid(tmp_path / "nope", "train.txt")
    with pytest.raises(DatasetError, match="split file .* not found"):
        CamVid(camvid_dir, tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("train/0001TP_006690.png trainannot/nothere.png\n")
    with pytest.raises(DatasetError, match="missing file"):
        CamVid(camvid_dir, bad)
    malformed = tmp_path / "malformed.txt"
    malformed.write_text("just-one-path.png\n")
    with pytest.raises(DatasetError, match="expected 'IMAGE LABEL'"):
        CamVid(camvid_dir, malformed)


def test_label_out_of_range_is_rejected(tmp_path, camvid_dir):
    first = (camvid_dir / "train.txt").read_text().split()[:2]
    (tmp_path / "img").mkdir()
    img = tmp_path / "img" / "a.png"
    shutil.copy(camvid_dir / first[0], img)
    lab = np.asarray(Image.open(camvid_dir / first[1])).copy()
    lab[0, 0] = 42
    Image.fromarray(lab).save(tmp_path / "img" / "a_lab.png")
    (tmp_path / "split.txt").write_text("img/a.png img/a_lab.png\n")
    with pytest.raises(DatasetError, match=r"values \[42\] outside the class range"):
        CamVid(tmp_path, "split.txt").load(0)


def test_common_layout_with_class_dict(tmp_path, camvid_dir):
    from fcn_perception.evaluation.camvid import CLASSES, PALETTE

    first = (camvid_dir / "val.txt").read_text().split()[:2]
    (tmp_path / "val").mkdir()
    (tmp_path / "val_labels").mkdir()
    shutil.copy(camvid_dir / first[0], tmp_path / "val" / "f.png")
    ids = np.asarray(Image.open(camvid_dir / first[1]))
    rgb = np.zeros((*ids.shape, 3), np.uint8)
    for i, c in enumerate(PALETTE):
        rgb[ids == i] = c
    Image.fromarray(rgb).save(tmp_path / "val_labels" / "f_L.png")
    rows = ["name,r,g,b"] + [f"{n},{c[0]},{c[1]},{c[2]}" for n, c in zip(CLASSES, PALETTE)]
    (tmp_path / "class_dict.csv").write_text("\n".join(rows) + "\n")
    ds = CamVid(tmp_path, "val")
    _, label = ds.load(0)
    expected = np.where(ids == 11, 255, ids)
    np.testing.assert_array_equal(label, expected)


def test_training_steps_lower_the_loss_on_real_frames(camvid_dir):
    torch.manual_seed(0)
    ds = CamVid(camvid_dir, "train.txt")
    tf = SegmentationTransform(False, IMAGENET_MEAN, IMAGENET_STD)
    batch = [tf(*ds.load(i)) for i in range(2)]
    x = torch.nn.functional.interpolate(torch.stack([b[0] for b in batch]), size=(90, 120))
    y = torch.stack([b[1] for b in batch])[:, ::4, ::4]
    model = build_model({"name": "fcn8s", "backbone": "resnet18", "num_classes": 11})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=11)
    losses = []
    for _ in range(8):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_resume_continues_exactly(tmp_path, camvid_dir):
    straight = _args(tmp_path / "a", camvid_dir)
    ts.train(straight)
    # A killed run: the first epoch of the same 2-epoch run, then --resume.
    killed = _args(tmp_path / "b", camvid_dir)
    _run_first_epoch_only(killed)
    resumed = _args(tmp_path / "b", camvid_dir, resume=True)
    ts.train(resumed)
    a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k]["exp_avg"], sb[k]["exp_avg"], rtol=0, atol=0)
    rows = [json.loads(r) for r in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    card = json.loads((tmp_path / "b" / "run" / "model.json").read_text())
    assert card["task"] == "segmentation" and len(card["classes"]) == 11
    assert 0.0 <= card["metrics"]["val"]["mean_iou"] <= 1.0


def _run_first_epoch_only(args):
    """Run a 2-epoch training but stop it after epoch 1 (as a kill would)."""
    original = ts.engine.Checkpointer.save

    class Killed(Exception):
        pass

    def save_then_die(self, epoch, *a, **k):
        original(self, epoch, *a, **k)
        if epoch == 0:
            raise Killed

    ts.engine.Checkpointer.save = save_then_die
    try:
        with pytest.raises(Killed):
            ts.train(args)
    finally:
        ts.engine.Checkpointer.save = original


def test_wrong_architecture_weights_are_rejected(tmp_path):
    from fcn_perception.weights_io import save_state_dict

    r18 = build_model({"name": "fcn8s", "backbone": "resnet18", "num_classes": 11})
    path = tmp_path / "r18.safetensors"
    save_state_dict(r18.state_dict(), path)
    r34 = build_model({"name": "fcn8s", "backbone": "resnet34", "num_classes": 11})
    with pytest.raises(WeightsError, match="do not fit"):
        load_weights_into(r34, path)
    fewer = build_model({"name": "fcn8s", "backbone": "resnet18", "num_classes": 5})
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_weights_into(fewer, path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights_into(r18, junk)
