"""INT8 calibration data for TensorRT: a folder of images -> normalised batches.

:class:`CalibrationBatches` (no TensorRT needed) lists and prepares the images;
:func:`make_calibrator` wraps it in TensorRT's ``IInt8EntropyCalibrator2`` or
``IInt8MinMaxCalibrator`` with a calibration cache file, feeding device buffers that are
torch CUDA tensors.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from fcn_perception.inference.preprocess import InputSpec, Preprocessor

log = logging.getLogger("fcn_perception.inference")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
CALIBRATORS = ("entropy", "minmax")


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder {folder} does not exist")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(
            f"calibration folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    if limit:
        step = max(1, len(images) // limit)
        images = images[::step][:limit]
    return images


class CalibrationBatches:
    """Iterate ``(batch, 3, H, W)`` float32 batches of the images, resized to ``hw``."""

    def __init__(self, images: list[Path], spec: InputSpec, hw: tuple[int, int],
                 batch_size: int = 1) -> None:
        self.images = list(images)
        self.spec = spec
        self.hw = (int(hw[0]), int(hw[1]))
        self.batch_size = int(batch_size)
        self.pre = Preprocessor(spec)

    def fingerprint(self, algorithm: str) -> str:
        """Identifies the calibration set, size and algorithm (part of the engine key)."""
        h = hashlib.sha256(f"{algorithm}|{self.hw}|{self.batch_size}|{self.spec}".encode())
        for p in self.images:
            st = p.stat()
            h.update(f"{p.name}|{st.st_size}|{int(st.st_mtime)}".encode())
        return h.hexdigest()

    def load(self, path: Path) -> np.ndarray:
        from PIL import Image

        rgb = np.asarray(Image.open(path).convert("RGB"))
        return self.pre.network_input(rgb, self.hw)[0].copy()  # as the Predictor feeds it

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self):
        for i in range(len(self)):
            chunk = self.images[i * self.batch_size:(i + 1) * self.batch_size]
            yield np.stack([self.load(p) for p in chunk])


def make_calibrator(algorithm: str, batches: CalibrationBatches, cache_file: str | Path):
    """A TensorRT INT8 calibrator (``"entropy"`` or ``"minmax"``) over ``batches``."""
    import tensorrt as trt
    import torch

    if algorithm not in CALIBRATORS:
        raise ValueError(f"calibrator must be one of {CALIBRATORS}, got {algorithm!r}")
    base = trt.IInt8EntropyCalibrator2 if algorithm == "entropy" else trt.IInt8MinMaxCalibrator

    class _Calibrator(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.batches = batches
            self.iterator = iter(batches)
            self.cache_file = Path(cache_file)
            self.device_input = None
            self.seen = 0

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names):
            try:
                batch = next(self.iterator)
            except StopIteration:
                return None
            self.device_input = torch.from_numpy(batch).cuda().contiguous()
            torch.cuda.synchronize()
            self.seen += 1
            if self.seen % 20 == 0:
                log.info("INT8 calibration: %d/%d batches", self.seen, len(batches))
            return [int(self.device_input.data_ptr())]

        def read_calibration_cache(self):
            if self.cache_file.is_file():
                log.info("INT8 calibration: reusing %s", self.cache_file)
                return self.cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            self.cache_file.write_bytes(bytes(cache))

    return _Calibrator()
