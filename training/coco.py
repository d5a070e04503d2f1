"""COCO-format box annotations (``instances_*.json``), so R-FCN trains on real boxes.

Used keys: ``images`` (``id``, ``file_name``, ``height``, ``width``), ``annotations``
(``image_id``, ``category_id``, ``bbox`` = ``[x, y, w, h]`` pixels, ``iscrowd``) and
``categories`` (``id``, ``name``).  Categories are mapped, in the order of their ids,
to detection classes ``0..C-1``; ``classes`` can select and order a subset by name.
Crowd boxes and boxes with zero width or height are skipped.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fcn_perception.errors import DatasetError


class CocoBoxes:
    """Images and boxes of a COCO JSON; item ``i`` is ``(image uint8 (H,W,3), boxes, labels)``.

    Args:
        image_dir: folder the ``file_name`` entries are relative to.
        annotation: the JSON file (absolute, or relative to ``image_dir``).
        classes: category names to keep, in class-index order (default: all).
    """

    def __init__(self, image_dir: str | Path, annotation: str | Path,
                 classes: Sequence[str] | None = None) -> None:
        self.image_dir = Path(image_dir)
        path = Path(annotation)
        if not path.is_file() and not path.is_absolute():
            path = self.image_dir / path
        if not path.is_file():
            raise DatasetError(f"COCO annotation file {annotation} not found (also looked in "
                               f"{self.image_dir})")
        try:
            data = json.loads(path.read_text())
            cats = sorted(data["categories"], key=lambda c: c["id"])
            images = data["images"]
            anns = data.get("annotations", [])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path} is not a COCO detection JSON ({exc}); expected keys "
                               "images, annotations, categories") from exc
        names = {c["id"]: c["name"] for c in cats}
        if classes is None:
            classes = [c["name"] for c in cats]
        unknown = [n for n in classes if n not in names.values()]
        if unknown:
            raise DatasetError(f"{path}: no categories named {unknown}; it has "
                               f"{sorted(names.values())}")
        index = {n: i for i, n in enumerate(classes)}
        cat_to_class = {cid: index[n] for cid, n in names.items() if n in index}
        self.classes = tuple(classes)
        self.images = sorted(images, key=lambda im: im["id"])
        per_image: dict[int, list] = {im["id"]: [] for im in self.images}
        for a in anns:
            cls = cat_to_class.get(a.get("category_id"))
            if cls is None or a.get("iscrowd", 0) or a["image_id"] not in per_image:
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            if w > 0 and h > 0:
                per_image[a["image_id"]].append((x, y, x + w, y + h, cls))
        self.targets = []
        for im in self.images:
            rows = np.asarray(per_image[im["id"]], dtype=np.float64).reshape(-1, 5)
            self.targets.append((rows[:, :4].astype(np.float32), rows[:, 4].astype(np.int64)))

    def __len__(self) -> int:
        return len(self.images)

    def boxes(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.targets[i]

    def load_image(self, i: int) -> np.ndarray:
        from PIL import Image

        p = self.image_dir / self.images[i]["file_name"]
        try:
            return np.asarray(Image.open(p).convert("RGB"))
        except OSError as exc:
            raise DatasetError(f"cannot read image {p}: {exc}") from exc

    def __getitem__(self, i: int):
        return (self.load_image(i), *self.targets[i])
