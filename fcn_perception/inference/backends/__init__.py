"""Inference backends: torch, ONNX Runtime and TensorRT behind one small interface.

A backend is built for one task and takes a network-sized ``(h, w, 3)`` uint8 RGB image;
it normalises it (on its device) and returns the contract's output tensors as numpy
arrays (see :mod:`fcn_perception.inference.contract`).

Names accepted by :func:`fcn_perception.load_predictor`'s ``backend``:

==========================  =======================================================
``auto``                    the first that loads of ``tensorrt``, ``onnxruntime-cuda``,
                            ``torch-cuda``, ``onnxruntime-cpu`` (then ``torch-cpu``)
``tensorrt`` (``trt``)      a TensorRT engine, built from the ONNX export and cached
``onnxruntime`` (``ort``)   ONNX Runtime: CUDA where available, else CPU
``onnxruntime-cpu``         ... on the CPU execution provider
``onnxruntime-cuda``        ... on the CUDA execution provider
``onnxruntime-tensorrt``    ... on the TensorRT execution provider (CUDA fallback)
``torch``                   PyTorch eager: CUDA (fp16, channels_last) where available
``torch-cpu``, ``torch-cuda``
==========================  =======================================================
"""
from __future__ import annotations

import gc
import os
import sys

import numpy as np

#: concrete backend -> the device kind it runs on
RUNS_ON = {"tensorrt": "cuda", "onnxruntime-cpu": "cpu", "onnxruntime-cuda": "cuda",
           "onnxruntime-tensorrt": "cuda", "torch-cpu": "cpu", "torch-cuda": "cuda"}
CONCRETE = tuple(RUNS_ON)
#: what ``auto`` tries, in order (``onnxruntime-tensorrt`` only when asked for by name)
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu", "torch-cpu")
ALIASES = {"trt": "tensorrt", "ort": "onnxruntime", "onnx": "onnxruntime",
           "ort-cpu": "onnxruntime-cpu", "ort-cuda": "onnxruntime-cuda", "pytorch": "torch"}
NAMES = ("auto", "onnxruntime", "torch", *CONCRETE)
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "int8")


class Backend:
    """Base class: ``infer(rgb, net_hw)`` -> dict of contract outputs.

    ``rgb`` is the checked ``(H, W, 3)`` uint8 frame; ``net_hw`` the size the network runs
    at (the frame is normalised, then resized there bilinearly with antialiasing when it
    differs).  Outputs are numpy arrays or torch tensors (GPU backends leave them on the
    device so that upsampling and the argmax run there).

    ``confidence=True`` asks a segmentation backend that outputs ``labels`` for the
    ``confidence`` output too (backends giving ``logits`` ignore it: the Predictor
    computes confidence from them).  :meth:`infer_batch` runs several frames, each
    resized to the same ``net_hw`` (or of one size), as one batch where the backend can,
    and returns one output dict per frame.
    """

    name = "base"
    precision = "fp32"

    def infer(self, rgb: np.ndarray, net_hw: tuple[int, int] | None = None,
              confidence: bool = False) -> dict:
        raise NotImplementedError  # pragma: no cover

    def infer_batch(self, images: list[np.ndarray], net_hw: tuple[int, int] | None = None,
                    confidence: bool = False) -> list[dict]:
        """One output dict per image (this default: one :meth:`infer` each)."""
        return [self.infer(img, net_hw, confidence=confidence) for img in images]

    def describe(self) -> str:
        return f"{self.name} ({self.precision})"


def canonical_name(name: str) -> str:
    name = ALIASES.get(str(name).lower(), str(name).lower())
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {NAMES}")
    return name


def candidates(backend: str, device: str = "auto") -> tuple[str, ...]:
    """The concrete backends to try, in order, for ``backend`` on ``device`` (``auto``,
    ``cpu`` or ``cuda``): ``auto`` is :data:`AUTO_ORDER`, ``torch`` and ``onnxruntime``
    their CUDA then CPU variants, each narrowed to the device.

    Raises ValueError when the two contradict each other (``tensorrt`` on ``cpu``)."""
    name = canonical_name(backend)
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        names = AUTO_ORDER
    elif name in ("torch", "onnxruntime"):
        names = (f"{name}-cuda", f"{name}-cpu")
    else:
        names = (name,)
    allowed = tuple(n for n in names if device == "auto" or RUNS_ON[n] == device)
    if not allowed:
        raise ValueError(f"backend {name} runs on {RUNS_ON[names[0]]}, not on device {device}")
    return allowed


def device_of(backend_name: str, gpu: int | None = None) -> str:
    """Where concrete backend ``backend_name`` runs: ``cpu``, ``cuda`` or ``cuda:N``."""
    kind = RUNS_ON[canonical_name(backend_name)]
    return f"cuda:{gpu}" if kind == "cuda" and gpu is not None else kind


def split_batch(outputs: dict, count: int) -> list[dict]:
    """``{name: (N, ...)}`` -> ``count`` dicts of ``(1, ...)`` slices (views)."""
    return [{k: v[i:i + 1] for k, v in outputs.items()} for i in range(count)]


def free_accelerator_memory() -> None:
    """Collect garbage and return cached CUDA memory (when torch is loaded)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - broken torch installs
        return False


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads counted once)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` (concrete) cannot run here, or None if it can."""
    name = canonical_name(name)
    if name in ("torch-cpu",):
        return None
    if name == "torch-cuda":
        return None if cuda_available() else "torch sees no CUDA GPU"
    if name.startswith("onnxruntime"):
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime or onnxruntime-gpu)"
        providers = ort.get_available_providers()
        need = {"onnxruntime-cpu": "CPUExecutionProvider",
                "onnxruntime-cuda": "CUDAExecutionProvider",
                "onnxruntime-tensorrt": "TensorrtExecutionProvider"}.get(name)
        if need and need not in providers:
            return f"this onnxruntime build has no {need} (has {providers})"
        if name != "onnxruntime-cpu" and not cuda_available():
            return "no CUDA GPU is visible"
        return None
    if name == "tensorrt":
        from fcn_perception.inference.backends.tensorrt_backend import tensorrt_unavailable

        return tensorrt_unavailable()
    return None


def available_backends() -> dict[str, str | None]:
    """Every concrete backend -> None if it can run here, else the reason it cannot."""
    return {name: unavailable_reason(name) for name in CONCRETE}
