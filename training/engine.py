"""Training infrastructure shared by the segmentation and detection loops.

* :class:`RunDir`: a run folder with ``config.json``, ``metrics.jsonl`` (one line per
  epoch), ``metrics.json`` (summary) and TensorBoard event files.
* :class:`Checkpointer`: ``last.pt`` every epoch and ``best.pt`` on improvement, written
  atomically, read back with ``torch.load(weights_only=True)``; :meth:`resume` restores
  model, optimiser, scheduler, AMP scaler, epoch and best score.
* :class:`ModelEMA`: an exponential moving average of the weights and buffers (torch's
  ``AveragedModel`` with a ramped decay), updated after every optimiser step; with it on, validation, ``best.pt`` selection and shipping use the
  average (:func:`selected_weights`).
* :func:`poly_lr`: the poly learning-rate schedule ``(1 - it/total) ** power``.
* :func:`distributed`: DistributedDataParallel set-up from ``torchrun`` variables.
* :func:`seed_epoch`: every epoch reseeds the RNGs from ``(seed, epoch)``, so a run
  resumed from a checkpoint continues exactly as the uninterrupted run would have.
* :func:`ship_run`: copy a finished run's ``model.safetensors`` and card to the package
  (``fcn-perception train ship``), with the training time from ``metrics.jsonl``.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fcn_perception.errors import CommandError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed(device: str | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Picks NCCL with one GPU per process when CUDA is available, Gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Reseed torch, numpy and random for ``epoch``; return a generator for shuffling."""
    s = seed * 100_003 + epoch
    torch.manual_seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 (seeds legacy global users too)
    random.seed(s)
    gen = torch.Generator()
    gen.manual_seed(s)
    return gen


def add_run_args(p) -> None:
    """Arguments every training command shares: device, threads, seed, resume, logging."""
    import argparse

    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes (0: load in the main process)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation, data order and augmentation; each epoch "
                        "reseeds from (seed, epoch), so --resume continues exactly "
                        "(default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-val", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-tensorboard", action="store_true",
                   help="write no TensorBoard event files (metrics.jsonl is written anyway)")


def epoch_loader(dataset, batch_size: int, seed: int, epoch: int, dist: DistInfo,
                 workers: int = 0, **loader_kwargs):
    """The training DataLoader of ``epoch``: RNGs reseeded from ``(seed, epoch)`` first, a
    DistributedSampler under torchrun, else a seeded shuffle; incomplete batches dropped."""
    from torch.utils.data import DataLoader, DistributedSampler

    gen = seed_epoch(seed, epoch)
    sampler = None
    if dist.world_size > 1:
        sampler = DistributedSampler(dataset, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      drop_last=True, num_workers=workers, generator=gen, **loader_kwargs)


def poly_lr(optimizer: torch.optim.Optimizer, total_iters: int, power: float = 0.9,
            warmup_iters: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then poly decay to zero at ``total_iters``."""
    def factor(it: int) -> float:
        if it < warmup_iters:
            return (it + 1) / warmup_iters
        return max(0.0, 1.0 - it / max(1, total_iters)) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(params, name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adamw'")


class ModelEMA:
    """Exponential moving average of a model's weights (Polyak averaging), kept by
    :class:`torch.optim.swa_utils.AveragedModel` with every buffer averaged too
    (``use_buffers=True``: BatchNorm's running statistics follow the averaged weights).

    Update ``t`` (1, 2, ...) makes every floating-point parameter and buffer
    ``avg_t = d_(t-1) * avg_(t-1) + (1 - d_(t-1)) * current`` with the ramped decay
    ``d_n = decay * (1 - exp(-n / h))``, ``n`` the updates already averaged and
    ``h = 1 / (1 - decay)`` the average's horizon in steps: ``d_0 = 0``, so the first
    update copies the model (AveragedModel's own first step) and the early updates follow
    it instead of remembering its random start.  Integer buffers (BatchNorm's step count)
    are the model's.  ``module`` is the averaged copy, in eval mode.

    Checkpoints hold ``{"updates": n, "module": state dict}`` (:meth:`state_dict`), the
    format :func:`selected_weights` reads.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        from torch.optim.swa_utils import AveragedModel

        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.horizon = 1.0 / (1.0 - self.decay)
        self.averaged = AveragedModel(unwrap(model), multi_avg_fn=self._average,
                                      use_buffers=True)
        self.module.eval().requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)  # a CPU tensor: no device sync

    def decay_at(self, averaged: int) -> float:
        """The decay of the update that follows ``averaged`` updates."""
        return self.decay * (1.0 - math.exp(-averaged / self.horizon))

    @torch.no_grad()
    def _average(self, avg: list[torch.Tensor], current: list[torch.Tensor], _n) -> None:
        """AveragedModel's ``multi_avg_fn``, called for each (device, dtype) group."""
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        if avg[0].is_floating_point():
            get_ema_multi_avg_fn(self.decay_at(self.updates))(avg, current, _n)
        else:  # an average of step counts means nothing: the model's
            for a, c in zip(avg, current, strict=True):
                a.copy_(c)

    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(unwrap(model))

    def state_dict(self) -> dict:
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.averaged.n_averaged.fill_(int(state["updates"]))


def add_ema_args(p) -> None:
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="keep an exponential moving average of the weights with this decay "
                        "per step (e.g. 0.998: a horizon of 500 steps) and validate, select "
                        "and ship the average (0: off)")


def add_select_args(p) -> None:
    p.add_argument("--select", default="best", choices=("best", "last"),
                   help="which epoch ships: 'best' val score, or 'last' (a fixed schedule: "
                        "use it when the val split shares sequences with train)")


def is_selected(select: str, score: float, best: float, last: bool) -> bool:
    """Whether this validated epoch becomes ``best.pt`` under ``--select``."""
    return score > best if select == "best" else last


def selected_weights(state: dict) -> dict:
    """The weights a checkpoint ships: the moving average when the run kept one."""
    return state["ema"]["module"] if state.get("ema") else state["model"]


class RunDir:
    """A training run's folder; only the main process writes."""

    def __init__(self, path: str | Path, config: dict, is_main: bool = True,
                 tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.is_main = is_main
        self.writer = None
        if not is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.path / "tensorboard"))

    def log_epoch(self, epoch: int, metrics: dict, epochs: int | None = None) -> None:
        """Append a row to ``metrics.jsonl``, TensorBoard and the console."""
        if not self.is_main:
            return
        from tqdm import tqdm

        msg = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        tqdm.write(f"epoch {epoch + 1}/{epochs or '?'} {msg}")
        row = {"epoch": epoch, "time": time.time(), **metrics}
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, epoch)
            self.writer.flush()

    def history(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_history(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (a resumed run re-logs the epochs it redoes)."""
        if not self.is_main:
            return
        rows = [r for r in self.history() if r["epoch"] <= last_epoch]
        (self.path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def write_summary(self, summary: dict) -> None:
        if self.is_main:
            (self.path / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Checkpointer:
    """``last.pt`` after every epoch, ``best.pt`` when the selection score improves."""

    def __init__(self, run_dir: str | Path, is_main: bool = True) -> None:
        self.dir = Path(run_dir)
        self.is_main = is_main

    def save(self, epoch: int, model, optimizer, scheduler, scaler=None, best: float = -1.0,
             is_best: bool = False, ema: ModelEMA | None = None) -> None:
        if not self.is_main:
            return
        state = {
            "epoch": epoch,
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "best": float(best),
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        self._atomic_save(state, self.dir / "last.pt")
        if is_best:
            self._atomic_save(state, self.dir / "best.pt")

    @staticmethod
    def _atomic_save(state: dict, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def resume(self, model, optimizer, scheduler, scaler=None, path: str | Path | None = None,
               ema: ModelEMA | None = None):
        """Restore everything from ``path`` (default ``last.pt``); return (next_epoch, best)."""
        path = Path(path) if path else self.dir / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"cannot resume: no checkpoint at {path} (a run writes last.pt after each epoch)"
            )
        from fcn_perception.errors import CheckpointError

        def reason(exc: Exception) -> str:
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return text if len(text) <= 120 else text[:117] + "..."

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, not a torch file, unsafe pickle
            raise CheckpointError(
                f"cannot resume: {path} is not a readable checkpoint ({reason(exc)}); it is "
                "truncated or corrupt: delete it and copy best.pt over it, or start again "
                "without --resume"
            ) from None
        needed = ("epoch", "model", "optimizer", "scheduler", "best")
        if ema is not None:
            needed += ("ema",)
        missing = [k for k in needed if not isinstance(state, dict) or k not in state]
        if missing:
            raise CheckpointError(
                f"cannot resume: {path} lacks {missing} (not a checkpoint this trainer wrote, or one "
                "written without --ema-decay); start again without --resume or with another --out"
            )
        try:
            unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            return int(state["epoch"]) + 1, float(state["best"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"cannot resume: {path} does not fit this run ({reason(exc)}); resume with "
                "the run's own --arch/--backbone/--optimizer, or use a new --out"
            ) from None


def training_time(run_dir: str | Path) -> dict:
    """Epochs and seconds of a run from its ``metrics.jsonl`` (train loop only, and the
    whole span including validation and checkpoints)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    if not rows:
        return {"epochs_run": 0, "train_loop_s": 0.0}
    per_epoch = [float(r.get("time/epoch_s", 0.0)) for r in rows]
    return {"epochs_run": len(rows), "train_loop_s": round(sum(per_epoch), 1),
            "train_loop_min": round(sum(per_epoch) / 60, 1)}


#: card ``training`` keys that name data, not the recipe (a held-out run may differ in them)
_DATA_KEYS = ("dataset", "data", "train_split", "val_split", "out", "time", "history")


def _portable(value):
    """A path recorded in a shipped card: ``training/splits/NAME`` for the repository's
    split files (``training/datasets/NAME`` for its dataset files), a folder beside the
    checkout relative to it (``../shared/camvid``); any other path as given."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    path, root = Path(value), Path(__file__).resolve().parents[1]
    if path.parent.name in ("splits", "datasets") and path.parent.parent.name == "training":
        return f"training/{path.parent.name}/{path.name}"
    if path.is_relative_to(root.parent) and not path.is_relative_to(root):
        return os.path.relpath(path, root)
    return value


def split_sequences(split: str | Path) -> set[str]:
    """CamVid sequences (``0006R0``, ...) of a list-file split: each line's image name up to
    its first ``_``."""
    path = Path(split)
    if not path.is_file():  # recorded by a run in another checkout: this repository's copy
        path = Path(__file__).resolve().parent / "splits" / path.name
    if not path.is_file():
        raise CommandError(f"ship: split file {split} not found; --heldout needs the run's "
                         "train and val list files (training/splits/*.txt)")
    return {Path(line.split()[0]).name.split("_")[0]
            for line in path.read_text().splitlines() if line.strip()}


def scored_at_size(run_dir: Path, size: list[int], data: str | None, split: str,
                   dataset: str | None = None) -> dict:
    """Segmentation scores of ``run_dir``'s weights with the network at ``size`` ([H, W]:
    frames resized, scores upsampled back, as a card's ``input.size`` runs it) on ``split``."""
    import shutil
    import tempfile
    from argparse import Namespace

    from fcn_perception import load_predictor
    from fcn_perception.card import read_card, write_card
    from fcn_perception.training.dataset_file import dataset_from_args
    from fcn_perception.training.evaluate_segmentation import evaluate_segmentation

    card = read_card(run_dir / "model.safetensors")
    card["input"]["size"] = list(size)
    with tempfile.TemporaryDirectory(prefix="ship_") as tmp:
        weights = Path(tmp) / "model.safetensors"
        shutil.copyfile(run_dir / "model.safetensors", weights)
        write_card(card, weights)
        predictor = load_predictor("segmentation", weights=str(weights))
        frames = dataset_from_args(Namespace(dataset=dataset, data=data)).open(str(split))
        scores, _ = evaluate_segmentation(predictor, frames, progress=False)
    return {k: v for k, v in scores.items() if k != "latency_ms_p50"}


def heldout_section(fold_dir: str | Path, card: dict) -> dict:
    """The held-out-sequence score of ``card``'s recipe, from ``fold_dir``: a run of the same
    recipe (every ``training`` key but the data's equal) whose val split is whole
    sequences its train split never saw.  With ``card["input"]["size"]`` set, the run's
    weights are scored again at that size (``history`` stays the run's own validation)."""
    from fcn_perception.card import read_card

    fold = read_card(Path(fold_dir) / "model.safetensors")
    mine, theirs = card.get("training", {}), fold.get("training", {})
    differ = sorted(k for k in set(mine) | set(theirs) if k not in _DATA_KEYS
                    and mine.get(k) != theirs.get(k))
    differ += ["architecture"] if fold["architecture"] != card["architecture"] else []
    if differ:
        raise CommandError(f"ship: --heldout {fold_dir} trained another recipe (differs in "
                         f"{', '.join(differ)}); hold out a run of this one")
    train, val = split_sequences(theirs["train_split"]), split_sequences(theirs["val_split"])
    if train & val:
        raise CommandError(f"ship: --heldout {fold_dir} trained on its val sequences "
                         f"{sorted(train & val)}; its val split must be whole unseen sequences")
    return {
        "protocol": "the same recipe and fixed schedule trained without the held-out "
                    "sequences, scored on every frame of them",
        "sequences": sorted(val), "train_sequences": sorted(train),
        "train_split": _portable(theirs["train_split"]),
        "val_split": _portable(theirs["val_split"]),
        "selected_epoch": fold.get("selected_epoch"),
        "time": training_time(fold_dir),
        "input_size": card["input"].get("size"),
        "metrics": fold["metrics"]["val"] if not card["input"].get("size") else scored_at_size(
            Path(fold_dir), card["input"]["size"], theirs["data"], theirs["val_split"],
            dataset_file_of(theirs)),
        "history": _history(Path(fold_dir)),
    }


def dataset_file_of(training: dict) -> str | None:
    """The dataset description file a run read (None: CamVid at its ``data``)."""
    described = training.get("dataset")
    file = described.get("file") if isinstance(described, dict) else None
    return None if not file or Path(file).name == "camvid.yaml" else file


def _history(run_dir: Path) -> list[dict]:
    """Per epoch of a run (``metrics.jsonl``): its epoch, train loss and val scores, as a
    card's ``training.history`` and ``heldout.history`` keep them."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    return [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()
             if k == "epoch" or k == "train/loss" or k.startswith("val/")} for r in rows]


def ship_run(run_dir: str | Path, dest: str | Path, machine: str | None = None,
             heldout: str | Path | None = None, input_size=None) -> Path:
    """Copy ``run_dir/model.safetensors`` and its card to ``dest`` (card renamed and
    re-hashed; ``training.time`` added from the run's metrics; paths made portable; with
    ``heldout``, the :func:`heldout_section` of that run; with ``input_size`` [H, W]
    (segmentation), the card runs the network at that size and its val scores are
    measured again there).  Returns the card path."""
    import shutil

    from fcn_perception.card import read_card, write_card

    run_dir, dest = Path(run_dir), Path(dest)
    card = read_card(run_dir / "model.safetensors")
    training = card.setdefault("training", {})
    data, val_split = training.get("data"), training.get("val_split")  # as the run read them
    dataset = dataset_file_of(training)
    for key in ("data", "train_split", "val_split"):
        training[key] = _portable(training.get(key))
    if isinstance(training.get("dataset"), dict):
        training["dataset"]["file"] = _portable(training["dataset"].get("file"))
    training["time"] = {**training_time(run_dir), **({"machine": machine} if machine else {})}
    training["history"] = _history(run_dir)
    if input_size:
        if card["task"] != "segmentation":
            raise CommandError("ship: --input-size is for segmentation models")
        card["input"]["size"] = [int(v) for v in input_size]
        card["metrics"]["val"] = scored_at_size(run_dir, card["input"]["size"], data, val_split,
                                                dataset)
    if heldout is not None:
        card["heldout"] = heldout_section(heldout, card)
        trained = split_sequences(training["train_split"])
        val = split_sequences(training["val_split"]) if training.get("val_split") else set()
        card["metrics"]["val_in_training"] = bool(val & trained)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "model.safetensors", dest)
    return write_card(card, dest)


def add_ship_args(p) -> None:
    p.add_argument("--run", required=True, help="a finished run folder (holds model.safetensors)")
    p.add_argument("--to", required=True, help="destination .safetensors (its card goes beside)")
    p.add_argument("--machine", default=None,
                   help="where it was trained, recorded in the card (e.g. '2-core CPU')")
    p.add_argument("--heldout", default=None, metavar="RUN",
                   help="a finished run of the same recipe whose val split is whole sequences "
                        "its train split never saw (training/splits/camvid_without_0006R0.txt "
                        "-> camvid_0006R0.txt); its val scores go in the card as 'heldout'")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="segmentation: the card runs the network at H x W (frames resized, "
                        "scores upsampled back); val and --heldout scores are measured there")


def ship_cli(args) -> int:
    """Entry for ``fcn-perception train ship``."""
    card = ship_run(args.run, args.to, args.machine, args.heldout, args.input_size)
    print(f"shipped {args.to} (card {card})")
    return 0
