"""R-FCN training and evaluation end to end on the bundled CamVid frames: run outputs,
exact resume, the evaluate command, and the shipped detector."""
import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fcn_perception.card import read_card, sha256_of
from fcn_perception.cli import main as cli_main
from fcn_perception.training import train_detection as td

SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _args(out, **over):
    parser = argparse.ArgumentParser()
    td.add_train_args(parser)
    args = parser.parse_args(["--data", str(SAMPLE), "--train-split", "val.txt",
                              "--val-split", "val.txt", "--out", str(out)])
    defaults = dict(epochs=2, batch_size=2, limit_train=2, limit_val=1, threads=1,
                    no_tensorboard=True)
    for k, v in {**defaults, **over}.items():
        setattr(args, k, v)
    return args


def test_resume_continues_exactly_and_run_outputs(tmp_path, monkeypatch):
    """With the weight average on, as the shipped recipe trains (two steps an epoch, so the
    average of an epoch's end is not one state of the model)."""
    td.train_loop(_args(tmp_path / "a", ema_decay=0.99, batch_size=1), td.RFCNAdapter)

    class Killed(Exception):
        pass

    original = td.engine.Checkpointer.save

    def save_then_die(self, epoch, *a, **k):
        original(self, epoch, *a, **k)
        if epoch == 0:
            raise Killed

    monkeypatch.setattr(td.engine.Checkpointer, "save", save_then_die)
    with pytest.raises(Killed):
        td.train_loop(_args(tmp_path / "b", ema_decay=0.99, batch_size=1), td.RFCNAdapter)
    monkeypatch.setattr(td.engine.Checkpointer, "save", original)
    td.train_loop(_args(tmp_path / "b", ema_decay=0.99, batch_size=1, resume=True),
                  td.RFCNAdapter)

    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(a["ema"]["module"][k], b["ema"]["module"][k], rtol=0, atol=0,
                                   msg=k)
    assert a["ema"]["updates"] == b["ema"]["updates"] == 4
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 4
    for k, s in a["optimizer"]["state"].items():
        torch.testing.assert_close(s["momentum_buffer"],
                                   b["optimizer"]["state"][k]["momentum_buffer"], rtol=0, atol=0)
    rows = [json.loads(r) for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(0.0 <= r["val/map50"] <= 1.0 for r in rows)
    card = read_card(tmp_path / "b" / "model.safetensors")
    assert card["task"] == "detection" and card["classes"] == ["Car", "Pedestrian", "Bicyclist"]
    assert card["box_derivation"]["min_area"] == 100 and len(card["palette"]) == 3
    assert card["sha256"] == sha256_of(tmp_path / "b" / "model.safetensors")
    assert card["training"]["ema_decay"] == 0.99
    best = torch.load(tmp_path / "b" / "best.pt", weights_only=True)
    shipped = load_file(tmp_path / "b" / "model.safetensors")
    moved = [k for k, v in best["ema"]["module"].items() if v.is_floating_point()
             and not torch.equal(v, best["model"][k])]
    assert moved  # two steps: the average (a copy after the first) differs from the model, "the average should differ from the last trained weights"
    for k in moved:  # the average ships (in fp16), not the last trained weights
        torch.testing.assert_close(shipped[k], best["ema"]["module"][k].half(), rtol=0, atol=0)
    assert {"map50", "map", "per_class_ap"} <= set(card["metrics"]["val"])
    assert (tmp_path / "b" / "val_pr.png").is_file()

    out = tmp_path / "eval" / "det.json"
    assert cli_main(["evaluate", "detection", "--data", str(SAMPLE), "--split", "val.txt",
                     "--weights", str(tmp_path / "b" / "model.safetensors"),
                     "--json", str(out), "--limit", "2", "--threads", "1"]) == 0
    result = json.loads(out.read_text())
    assert 0.0 <= result["map50"] <= 1.0 and 0.0 <= result["map"] <= result["map50"] + 1e-9
    assert set(result["per_class_ap"]) == {"Car", "Pedestrian", "Bicyclist"}
    assert result["ground_truth"]["min_area"] == 100
    assert Path(result["pr_curve_png"]).is_file()


def test_select_last_ships_the_final_epoch(tmp_path):
    """A fixed schedule (``--select last``) ships the last epoch even when an earlier one
    scored higher on val, which is how a model trained on train+val is selected."""
    runs = {}
    for select in ("best", "last"):
        out = tmp_path / select
        td.train_loop(_args(out, select=select, epochs=3, batch_size=1), td.RFCNAdapter)
        rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
        runs[select] = (read_card(out / "model.safetensors"), [r["val/map50"] for r in rows])
    card, maps = runs["last"]
    assert card["selected_epoch"] == 3 and card["training"]["select"] == "last"
    card, maps = runs["best"]
    assert card["selected_epoch"] == 1 + maps.index(max(maps))  # the first of the best
    assert card["training"]["select"] == "best"


def test_init_backbone_and_frozen_layers(tmp_path):
    from fcn_perception.models import build_model

    fcn = build_model({"name": "fcn8s", "backbone": "efficientnet_lite0", "num_classes": 11})
    torch.save({"model": fcn.state_dict()}, tmp_path / "seg.pt")
    adapter = td.RFCNAdapter(_args(tmp_path / "r", init_backbone=str(tmp_path / "seg.pt")),
                             ("Car", "Pedestrian", "Bicyclist"))
    bb = adapter.model.backbone
    conv = "_blocks.4._expand_conv.weight"  # the stride-8 stage
    assert torch.equal(bb.state_dict()[conv], fcn.backbone.state_dict()[conv])
    assert adapter.frozen_bn
    top, s16, s8, s4, stem = bb.stages()  # --trainable-layers 3: stride 32, 16 and 8
    assert not any(p.requires_grad for p in [*stem.parameters(), *s4.parameters()])
    assert all(p.requires_grad for m in (top, s16, s8) for p in m.parameters()
               if p.ndim > 1)  # convolutions train, BatchNorm affine stays fixed
    assert not bb._blocks[4]._bn1.weight.requires_grad
    adapter.train_mode(adapter.model)
    assert adapter.model.training and not bb._blocks[8]._bn1.training


def test_peer_trains_through_the_same_loop_and_ships_its_average(tmp_path):
    from fcn_perception.training import peer_fasterrcnn as peer

    out, metrics = tmp_path / "peer", tmp_path / "peer_val.json"
    assert peer.main(["--data", str(SAMPLE), "--train-split", "val.txt", "--val-split",
                      "val.txt", "--out", str(out), "--pretrained", "none", "--epochs", "1",
                      "--batch-size", "2", "--limit-train", "4", "--limit-val", "1",
                      "--threads", "1", "--no-tensorboard", "--ema-decay", "0.99",
                      "--metrics-out", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert result["recipe"]["ema_decay"] == 0.99 and result["best_epoch"] == 1
    assert result["time"]["epochs_run"] == 1
    best = torch.load(out / "best.pt", weights_only=True)
    shipped = load_file(out / "model.safetensors")
    moved = [k for k, v in best["ema"]["module"].items() if v.is_floating_point()
             and not torch.equal(v, best["model"][k])]
    assert moved  # two steps: the average (a copy after the first) differs from the model
    for k in moved:
        torch.testing.assert_close(shipped[k], best["ema"]["module"][k], rtol=0, atol=0)
