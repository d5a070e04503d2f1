"""INT8 calibration data: a folder of images -> network-input batches, and the one
definition of the calibration options.

Calibration feeds :func:`fcn_perception.inference.quantize.quantized_onnx`, which writes
the explicit Q/DQ graph that ONNX Runtime and TensorRT (10 and 11) both build; there are
no TensorRT implicit calibrators (TensorRT 11 removed them; see
:mod:`fcn_perception.inference.tensorrt_plan`).

:data:`METHODS`, :data:`DEFAULT_METHOD` and :data:`DEFAULT_LIMIT` are used by
``fcn-perception export``, ``fcn-perception build-engine`` (:func:`add_arguments`) and
:func:`fcn_perception.load_predictor` alike.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the CLI imports this module for its options: keep torch out of --help
    from fcn_perception.inference.preprocess import InputSpec

log = logging.getLogger("fcn_perception.inference")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
#: how activation ranges are chosen from the calibration frames (ONNX Runtime's methods)
METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"
#: frames calibrated on: evenly spaced over the folder
DEFAULT_LIMIT = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--calibration-images``, ``--calibrator``, ``--calibration-limit``."""
    parser.add_argument("--calibration-images", type=Path, default=None,
                        help="folder of frames like the camera's to calibrate int8 activation "
                        "ranges on (e.g. ../shared/camvid/train)")
    parser.add_argument("--calibrator", choices=METHODS, default=DEFAULT_METHOD,
                        help=f"how ranges are chosen (default {DEFAULT_METHOD})")
    parser.add_argument("--calibration-limit", type=int, default=DEFAULT_LIMIT,
                        help=f"calibrate on at most this many frames (default {DEFAULT_LIMIT})")


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The images of ``folder`` (sorted), at most ``limit`` evenly spaced ones."""
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
        from fcn_perception.inference.preprocess import Preprocessor  # torch (see above)

        self.pre = Preprocessor(spec)

    def fingerprint(self, algorithm: str) -> str:
        """Identifies the calibration set, size and algorithm (part of cache keys)."""
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
