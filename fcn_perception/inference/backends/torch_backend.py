"""PyTorch eager backend: CPU (fp32) or CUDA (fp16 by default), channels_last, BN folded.

Batch norms that directly follow a convolution are folded into it (exact up to float
rounding), the model runs under ``torch.inference_mode`` and, on CUDA, images are
uploaded as uint8 and normalised on the GPU.
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fcn_perception.errors import BackendUnavailable
from fcn_perception.inference.backends import Backend, split_batch
from fcn_perception.inference.export import export_module
from fcn_perception.inference.preprocess import InputSpec, network_input_torch

log = logging.getLogger("fcn_perception.inference")


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold ``Conv2d -> BatchNorm2d`` pairs into the convolution, in place (eval only).

    Handles ``nn.Sequential`` runs (stems, ``downsample``, U-Net blocks) and torchvision
    ResNet blocks (``convN``/``bnN`` attribute pairs).  Returns the number folded.
    """
    count = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[a] = fuse_conv_bn_eval(conv, bn)
                    module._modules[b] = nn.Identity()
                    count += 1
        for i in range(1, 4):
            conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                setattr(module, f"bn{i}", nn.Identity())
                count += 1
    return count


class TorchBackend(Backend):
    """Run ``model`` (a task model from :func:`fcn_perception.models.build_model`)."""

    def __init__(self, model: nn.Module, task: str, spec: InputSpec, device: str = "cpu",
                 precision: str | None = None, channels_last: bool = True,
                 fuse_bn: bool = True) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch-cuda: torch sees no CUDA GPU")
        self.device = torch.device(device)
        self.task = task
        self.spec = spec
        cuda = self.device.type == "cuda"
        self.precision = precision or ("fp16" if cuda else "fp32")
        if self.precision == "int8" or (self.precision == "fp16" and not cuda):
            raise BackendUnavailable(
                f"torch backend on {self.device.type} does not run {self.precision}; use fp32"
                + (" (fp16 needs CUDA)" if self.precision == "fp16" else "")
            )
        self.name = f"torch-{self.device.type}"
        model = copy.deepcopy(model).eval()
        self.fused = fuse_batchnorm(model) if fuse_bn else 0
        self.seg_output = "logits" if spec.size else "labels"
        self.module = export_module(model, task, seg_output=self.seg_output).eval().to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.half = cuda and self.precision == "fp16"
        if self.half and task == "segmentation":
            self.module = self.module.half()  # detection uses autocast (box maths stays fp32)
        self.mean, self.std = spec.mean, spec.std

    def _network_input(self, rgb: np.ndarray, net_hw):
        if not rgb.flags.writeable:
            rgb = rgb.copy()
        img = torch.from_numpy(rgb)
        if self.device.type == "cuda":
            img = img.pin_memory().to(self.device, non_blocking=True)
        return network_input_torch(img, self.spec, net_hw)

    @torch.inference_mode()
    def infer(self, rgb: np.ndarray, net_hw: tuple[int, int] | None = None,
              confidence: bool = False) -> dict:
        """Contract outputs as torch tensors (on the backend's device)."""
        return self._run(self._network_input(rgb, net_hw), confidence)

    @torch.inference_mode()
    def infer_batch(self, images: list[np.ndarray], net_hw: tuple[int, int] | None = None,
                    confidence: bool = False) -> list[dict]:
        """Segmentation: one forward pass over the frames (all resized to ``net_hw`` or of
        one size); detection: one frame at a time (its export takes batch 1)."""
        if self.task != "segmentation" or len(images) == 1:
            return [self.infer(img, net_hw, confidence) for img in images]
        x = torch.cat([self._network_input(img, net_hw) for img in images])
        return split_batch(self._run(x, confidence), len(images))

    def _run(self, x, confidence: bool = False) -> dict:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        want_conf = confidence and self.task == "segmentation" and self.seg_output == "labels"
        if self.half and self.task == "segmentation":
            out = self.module(x.half(), confidence=want_conf)
        elif self.half:
            with torch.autocast("cuda", dtype=torch.float16):
                out = self.module(x)
        elif self.task == "segmentation":
            out = self.module(x, confidence=want_conf)
        else:
            out = self.module(x)
        if self.task == "segmentation":
            if want_conf:
                labels, conf = out
                return {"labels": labels, "confidence": conf.float()}
            return {self.seg_output: out.float() if self.seg_output == "logits" else out}
        names = ("boxes", "scores", "labels", "num_detections", "class_scores")
        return {n: (t.float() if n in ("boxes", "scores") else t) for n, t in zip(names, out)}
