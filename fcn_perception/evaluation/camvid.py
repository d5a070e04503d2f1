"""CamVid: the 11-class road-scene dataset (Brostow et al. 2009): its class names,
palette and ignore index, and a reader of its frames and label maps (numpy and Pillow
only), shared by evaluation, ``bag make`` and training.

Two layouts are read:

* SegNet layout (``../shared/camvid``): a split file with lines ``"image label"``
  (paths relative to the data folder); labels are single-channel PNGs of class ids,
  11 = Unlabelled (ignored).
* Common layout: folders ``train/``, ``train_labels/`` (also ``val``, ``test``) with
  RGB-coded label PNGs and a ``class_dict.csv`` (``name,r,g,b``) mapping colours to
  classes.  The 32 fine classes are kept as they are; colours not in the CSV map to the
  ignore index.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fcn_perception.errors import DatasetError

CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)
PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
IGNORE_INDEX = 11


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


def read_split(data_dir: str | Path, split_file: str | Path) -> list[Sample]:
    """Read a SegNet-layout split file; every path must exist.

    ``split_file`` may be absolute or relative to ``data_dir``.  Each non-empty line is
    ``"IMAGE LABEL"``; paths are relative to ``data_dir`` (a leading ``/SegNet/CamVid/``
    prefix, as in the original SegNet lists, is stripped).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"dataset folder {data_dir} does not exist")
    split = Path(split_file)
    if not split.is_absolute() and not split.is_file():
        split = data_dir / split
    if not split.is_file():
        raise DatasetError(
            f"split file {split_file} not found (looked in the working folder and in "
            f"{data_dir}); expected lines 'train/X.png trainannot/X.png'"
        )
    samples, missing = [], []
    for n, line in enumerate(split.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DatasetError(
                f"{split}:{n}: expected 'IMAGE LABEL' (two paths), got {line.strip()!r}"
            )
        img, lab = (data_dir / p.removeprefix("/SegNet/CamVid/").lstrip("/") for p in parts)
        for p in (img, lab):
            if not p.is_file():
                missing.append(str(p))
        samples.append(Sample(img, lab))
    if missing:
        raise DatasetError(
            f"{split} names {len(missing)} missing file(s), e.g. {missing[:3]}; paths are "
            f"read relative to {data_dir}"
        )
    if not samples:
        raise DatasetError(f"split file {split} lists no samples")
    return samples


def read_class_dict(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read ``class_dict.csv`` (``name,r,g,b``) -> (names, colours ``(K, 3)`` uint8)."""
    names, colors = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                names.append(row["name"])
                colors.append([int(row["r"]), int(row["g"]), int(row["b"])])
            except (KeyError, ValueError) as exc:
                raise DatasetError(f"{path}: expected columns name,r,g,b ({exc})") from exc
    return names, np.asarray(colors, dtype=np.uint8)


def rgb_to_ids(rgb: np.ndarray, colors: np.ndarray, ignore_index: int) -> np.ndarray:
    """Map an RGB-coded label ``(H, W, 3)`` to class ids ``(H, W)`` uint8."""
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    keys = (colors[:, 0].astype(np.int32) << 16) | (colors[:, 1].astype(np.int32) << 8) | colors[:, 2]
    lut = dict(zip(keys.tolist(), range(len(keys))))
    out = np.full(code.shape, ignore_index, dtype=np.uint8)
    for key, idx in lut.items():
        out[code == key] = idx
    return out


def common_layout_samples(data_dir: str | Path, split: str) -> list[Sample]:
    """Samples of the common layout: ``SPLIT/X.png`` with ``SPLIT_labels/X_L.png``."""
    data_dir = Path(data_dir)
    img_dir, lab_dir = data_dir / split, data_dir / f"{split}_labels"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise DatasetError(f"expected folders {img_dir} and {lab_dir} (common CamVid layout)")
    samples = []
    for img in sorted(img_dir.glob("*.png")):
        cand = [lab_dir / f"{img.stem}_L.png", lab_dir / img.name]
        lab = next((c for c in cand if c.is_file()), None)
        if lab is None:
            raise DatasetError(f"no label for {img} in {lab_dir} (tried {[c.name for c in cand]})")
        samples.append(Sample(img, lab))
    if not samples:
        raise DatasetError(f"no PNG images in {img_dir}")
    return samples


class CamVid:
    """CamVid frames and label maps as numpy arrays.

    Args:
        data_dir: dataset root.
        split: a split file (SegNet layout) or a split name (common layout, which needs
            ``class_dict.csv`` in ``data_dir``).
        num_classes: labels must lie in ``[0, num_classes)`` or equal ``ignore_index``.
        transform: optional callable ``(image, label) -> (image, label)``.

    Item ``i`` is ``(image (H, W, 3) uint8 RGB, label (H, W) uint8)`` before ``transform``.
    """

    def __init__(self, data_dir, split, num_classes: int = len(CLASSES),
                 ignore_index: int = IGNORE_INDEX, transform=None) -> None:
        data_dir = Path(data_dir)
        self.colors = None
        class_dict = data_dir / "class_dict.csv"
        split_path = Path(split)
        is_split_file = split_path.suffix == ".txt" or split_path.is_file()
        if not is_split_file and class_dict.is_file():
            names, self.colors = read_class_dict(class_dict)
            self.classes = tuple(names)
            num_classes = len(names)
            ignore_index = 255  # colours not in class_dict.csv
            self.samples = common_layout_samples(data_dir, str(split))
        else:
            self.classes = CLASSES[:num_classes] if num_classes <= len(CLASSES) else None
            self.samples = read_split(data_dir, split)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[i]
        try:
            image = np.asarray(Image.open(s.image).convert("RGB"))
            raw = Image.open(s.label)
        except OSError as exc:
            raise DatasetError(f"cannot read sample {i} ({s.image}, {s.label}): {exc}") from exc
        if self.colors is not None:
            label = rgb_to_ids(np.asarray(raw.convert("RGB")), self.colors, self.ignore_index)
        else:
            if raw.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(
                    f"label {s.label} has mode {raw.mode}; expected a single-channel map of "
                    "class ids (or use the common layout with class_dict.csv)"
                )
            label = np.asarray(raw).astype(np.uint8)
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"label {s.label} is {label.shape[::-1]} but image {s.image} is "
                f"{image.shape[1::-1]} (width x height); they must match"
            )
        bad = (label >= self.num_classes) & (label != self.ignore_index)
        if bad.any():
            raise DatasetError(
                f"label {s.label} holds values {sorted(set(np.unique(label[bad]).tolist()))} "
                f"outside the class range 0..{self.num_classes - 1} (ignore: {self.ignore_index})"
            )
        return image, label

    def __getitem__(self, i: int):
        image, label = self.load(i)
        if self.transform is not None:
            return self.transform(image, label)
        return image, label
