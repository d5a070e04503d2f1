"""Builders shared by the tests (imported as ``from factories import ...``; the shared
fixtures built from them are in conftest.py): real CamVid frames, small random-initialised
models with model cards, box IoU."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD, write_card
from fcn_perception.evaluation.boxes import derivation_rule
from fcn_perception.evaluation.camvid import CLASSES, PALETTE
from fcn_perception.models import build_model
from fcn_perception.models.rfcn import architecture
from fcn_perception.weights_io import save_state_dict

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SEG_ARCH = {"name": "fcn8s", "backbone": "resnet18", "num_classes": 11}
DET_CLASSES = ["Car", "Pedestrian", "Bicyclist"]


def camvid_frames(count: int = 3) -> list[np.ndarray]:
    """Real CamVid val frames: ../shared/camvid (project layout) or the packaged sample."""
    for folder in (ROOT.parent / "shared" / "camvid" / "val",
                   ROOT / "fcn_perception" / "data" / "camvid_sample" / "val"):
        files = sorted(folder.glob("*.png"))
        if files:
            step = max(1, len(files) // count)
            return [np.asarray(Image.open(f).convert("RGB")) for f in files[::step][:count]]
    pytest.skip("no CamVid frames found (../shared/camvid or the packaged sample)")


def model_card(task: str, arch: dict, size=None) -> dict:
    return {"task": task, "architecture": arch,
            "classes": [f"c{i}" for i in range(int(arch["num_classes"]))],
            "input": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "size": size}}


def make_segmentation_weights(folder: Path, name: str = "seg", size=None, seed: int = 0) -> Path:
    """A random but non-degenerate FCN-8s ResNet-18 (BN statistics and skip layers set,
    so the label map has structure and argmax ties are as rare as in a trained net)."""
    torch.manual_seed(seed)
    model = build_model(SEG_ARCH)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        for layer in (model.score_s16, model.score_s8):
            torch.nn.init.normal_(layer.weight, std=0.05)
            torch.nn.init.normal_(layer.bias, std=0.1)
    path = folder / f"{name}.safetensors"
    save_state_dict(model.state_dict(), path)
    write_card(model_card("segmentation", SEG_ARCH, size), path)
    return path


def make_detection_weights(folder: Path, name: str = "det", seed: int = 0) -> Path:
    """A random R-FCN whose RPN and class maps are scaled up so it detects things."""
    arch = architecture(num_classes=3)
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        torch.nn.init.normal_(model.head.ps_cls.weight, std=0.5)
        torch.nn.init.normal_(model.rpn.cls.weight, std=0.5)
    path = folder / f"{name}.safetensors"
    save_state_dict(model.state_dict(), path)
    write_card(model_card("detection", arch), path)
    return path


def make_weights(folder: Path, task: str, size=(90, 120), arch: dict | None = None) -> Path:
    """Small random-initialised weights + a CamVid-style card for ``task`` in ``folder``
    (default: a U-Net of width 4 run at ``size``, or a slim R-FCN ResNet-18 that keeps
    every box)."""
    torch.manual_seed(0)
    norm = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if task == "segmentation":
        arch = arch or {"name": "unet", "num_classes": len(CLASSES), "width": 4, "depth": 2}
        card = {"classes": list(CLASSES), "palette": [list(p) for p in PALETTE],
                "ignore_index": 11, "input": {**norm, "size": size}}
    else:
        arch = arch or architecture(backbone="resnet18", num_classes=len(DET_CLASSES),
                                    feature_channels=32, head_channels=32, score_thresh=0.0)
        card = {"classes": DET_CLASSES, "palette": [list(PALETTE[i]) for i in (8, 9, 10)],
                "ignore_index": None, "input": {**norm, "size": size}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}_{arch['name']}.safetensors"
    save_state_dict(build_model(arch).state_dict(), path)
    write_card({"task": task, "architecture": arch, **card}, path)
    return path


def write_random_weights(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Random-initialised FCN-8s (ResNet-18, run at 180x240) and R-FCN (ResNet-18) with
    model cards like the shipped ones."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    norm = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    det_arch = architecture(num_classes=3, backbone="resnet18")
    out = {}
    for task, arch, card in (
        ("segmentation", SEG_ARCH, {
            "classes": list(CLASSES), "palette": [list(p) for p in PALETTE],
            "ignore_index": 11, "input": {**norm, "size": [180, 240]}}),
        ("detection", det_arch, {
            "classes": DET_CLASSES, "palette": [list(PALETTE[i]) for i in (8, 9, 10)],
            "input": {**norm, "size": None},
            "box_derivation": derivation_rule(DET_CLASSES, (8, 9, 10), 100)}),
    ):
        path = folder / f"{task}.safetensors"
        save_state_dict(build_model(arch).state_dict(), path)
        write_card({"task": task, "architecture": arch, **card}, path)
        out[task] = path
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def start_node(executable: str, ros_args: list[str], env_extra: dict | None = None):
    """A node console script of this venv as its own process (stdout+stderr piped, text)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
               **(env_extra or {}))
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    return subprocess.Popen([str(VENV_BIN / executable), "--ros-args", *ros_args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def wait_until(predicate, timeout: float = 60.0, what: str = "condition", poll: float = 0.01):
    """``predicate()``'s first truthy value, polled until ``timeout`` s (generous: the test
    machine may be busy); AssertionError naming ``what`` after that.  For tests of threads
    without a ROS harness: wait on the event a test needs, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB."""
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


class OutputReader:
    """Collects a process's output lines in a thread; ``wait_for`` a line."""

    def __init__(self, proc, timeout: float = 60.0) -> None:
        self.lines: list[str] = []
        self.timeout = timeout
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, text: str, timeout: float | None = None) -> str:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r} in {timeout} s:\n" + "\n".join(self.lines))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
