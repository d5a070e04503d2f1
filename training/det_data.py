"""Detection datasets and transforms: boxes derived from label maps, or COCO JSON.

:func:`open_detection_split` picks the source from the split argument:

* a ``.json`` file: COCO annotations (:class:`fcn_perception.training.coco.CocoBoxes`),
  images under ``data``;
* otherwise a split of a dataset description (:mod:`fcn_perception.training.dataset_file`;
  without one, CamVid at ``data``): a split with ``coco: FILE.json`` gives COCO boxes, any
  other split's boxes come from its label maps by
  :func:`fcn_perception.evaluation.boxes.derive_boxes` (:class:`LabelMapBoxes`).

Items are ``(image uint8 (H, W, 3), boxes float32 (G, 4), labels int64 (G,))`` with
labels ``0..C-1``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from fcn_perception.errors import DatasetError
from fcn_perception.evaluation.boxes import (
    DEFAULT_CONNECTIVITY,
    DEFAULT_MIN_AREA,
    derivation_rule,
    derive_boxes,
)
from fcn_perception.training.coco import CocoBoxes
from fcn_perception.training.dataset_file import (
    DatasetFile,
    LabelledImages,
    camvid_dataset,
    default_palette,
)


class LabelMapBoxes:
    """A split's frames with boxes derived from its label maps (decoded once, in memory).

    Args:
        base: the split (:meth:`DatasetFile.open`).
        classes: class names of ``base`` to detect, in class-index order.
        min_area, connectivity: the derivation rule (:func:`derive_boxes`).
        limit: only the first ``limit`` samples.
    """

    def __init__(self, base: LabelledImages, classes: Sequence[str],
                 min_area: int = DEFAULT_MIN_AREA, connectivity: int = DEFAULT_CONNECTIVITY,
                 limit: int | None = None, progress: bool = True) -> None:
        names = list(base.classes)
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise DatasetError(f"detection classes {unknown} are not classes of "
                               f"{base.description.source} ({names})")
        self.classes = tuple(classes)
        self.label_ids = [names.index(c) for c in classes]
        self.rule = derivation_rule(self.classes, self.label_ids, min_area, connectivity)
        self.palette = [list(base.palette[i]) for i in self.label_ids]
        n = len(base) if limit is None else min(limit, len(base))
        self.images, self.targets = [], []
        for i in tqdm(range(n), desc="loading + deriving boxes", leave=False, disable=not progress):
            image, label = base.load(i)
            self.images.append(image)
            self.targets.append(derive_boxes(label, self.label_ids, min_area, connectivity))
        self.names = [s.image.name for s in base.samples[:n]]

    def __len__(self) -> int:
        return len(self.images)

    def boxes(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.targets[i]

    def load_image(self, i: int) -> np.ndarray:
        return self.images[i]

    def __getitem__(self, i: int):
        return (self.images[i], *self.targets[i])


def open_detection_split(data_dir, split, classes: Sequence[str] | None = None,
                         min_area: int | None = None, connectivity: int | None = None,
                         limit: int | None = None, dataset: DatasetFile | None = None):
    """A :class:`CocoBoxes` (``split`` is a .json, or a description's split with
    ``coco``) or :class:`LabelMapBoxes` of ``dataset`` (default: CamVid at ``data_dir``).

    ``classes``, ``min_area``, ``connectivity`` left None come from the description's
    ``detection`` block (then the defaults: all COCO categories, 100 pixels, 8)."""
    if str(split).endswith(".json"):
        return _coco(data_dir, split, classes, limit)
    desc = dataset or camvid_dataset(data_dir)
    spec = desc.split(split)
    if spec.coco is not None:
        root = desc.data_root()
        return _coco(root / spec.images, root / spec.coco, classes, limit)
    classes = classes or desc.detection.classes
    if not classes:
        raise DatasetError(f"dataset file {desc.source}: detection.classes: is not set; list "
                           "the classes to box (or pass --classes)")
    rule = desc.detection
    return LabelMapBoxes(desc.open(split), classes,
                         _first(min_area, rule.min_area, DEFAULT_MIN_AREA),
                         _first(connectivity, rule.connectivity, DEFAULT_CONNECTIVITY), limit)


def _first(*values):
    return next(v for v in values if v is not None)


def _coco(image_dir, annotation, classes, limit):
    ds = CocoBoxes(image_dir, annotation, classes)
    ds.rule = {"method": "COCO annotations", "file": str(annotation)}
    ds.palette = default_palette(len(ds.classes))
    if limit is not None:
        ds.images, ds.targets = ds.images[:limit], ds.targets[:limit]
    return ds


def augmentation_description(scale_range=(1.0, 1.0), jitter: float = 0.2) -> str:
    """The training augmentation in words, for the model card."""
    lo, hi = (float(v) for v in scale_range)
    scale = "native resolution" if (lo, hi) == (1.0, 1.0) else \
        f"frame resized by a factor in [{lo:g}, {hi:g}]"
    return f"horizontal flip, colour jitter {jitter:g}; {scale}"


class DetectionTransform:
    """``(image, boxes, labels) -> (float (3,H,W) normalised, {"boxes", "labels"})``.

    Training adds a random horizontal flip, colour jitter and, with ``scale_range``
    ``(lo, hi)``, a resize of the whole frame by a factor drawn uniformly from it (boxes
    follow); boxes that become empty are dropped.  ``(0.75, 1.25)`` keeps the mean
    pixel count (and so the epoch time) of native-resolution training.
    """

    def __init__(self, train: bool, mean, std, jitter: float = 0.2,
                 scale_range: tuple[float, float] = (1.0, 1.0)) -> None:
        lo, hi = (float(v) for v in scale_range)
        if not 0.0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < lo <= hi, got {scale_range}")
        self.scale_range = (lo, hi) if train else (1.0, 1.0)
        ops = []
        if train:
            ops += [v2.RandomHorizontalFlip(),
                    v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter,
                                   hue=0.02)]
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
                v2.SanitizeBoundingBoxes(min_size=1.0)]
        self.ops = v2.Compose(ops)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
        img = tv_tensors.Image(torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1))
        h, w = img.shape[-2:]
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(np.asarray(boxes, np.float32)),
                                              format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(np.asarray(labels, np.int64)),
        }
        lo, hi = self.scale_range
        if (lo, hi) != (1.0, 1.0):
            s = float(torch.empty(()).uniform_(lo, hi))
            size = [max(1, round(h * s)), max(1, round(w * s))]
            img, target = v2.Resize(size, antialias=True)(img, target)
        img, target = self.ops(img, target)
        return img.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor).reshape(-1, 4),
            "labels": target["labels"],
        }


class DetectionSet(Dataset):
    """A detection source with a transform, for the DataLoader."""

    def __init__(self, source, transform: DetectionTransform) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return self.transform(*self.source[i])


def collate(batch):
    """Stack images (zero-padding to the largest size) -> ``(images, targets, sizes)``."""
    images, targets = zip(*batch)
    sizes = [tuple(int(s) for s in im.shape[-2:]) for im in images]
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    out = images[0].new_zeros((len(images), 3, h, w))
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
    return out, list(targets), sizes


def image_tensor(image: np.ndarray, mean, std) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> normalised ``(3, H, W)`` float (evaluation)."""
    x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


def save_boxes_json(source, path: str | Path) -> None:
    """Write derived boxes as JSON (image name -> boxes/labels), for inspection."""
    import json

    rows = {}
    for i in range(len(source)):
        b, lab = source.boxes(i)
        name = source.names[i] if hasattr(source, "names") else str(i)
        rows[name] = {"boxes": b.tolist(), "labels": lab.tolist()}
    Path(path).write_text(json.dumps({"classes": list(source.classes), "images": rows}))
