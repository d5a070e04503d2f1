"""The dataset description file: one YAML that says where a labelled data set's images and
label maps are, what its classes are called and how its label values map to them.  Training
reads every data set through it: CamVid is ``datasets/camvid.yaml``, a Cityscapes-layout
data set ``datasets/cityscapes.yaml``, a robot team's own data a file like this::

    name: warehouse                  # recorded in the model card
    root: /data/warehouse            # the paths below are read from here; relative: from
                                     # this file's folder; null: given with --data
    classes: [ground, wall, robot, box]       # index = class id the model outputs
    palette: [[128, 64, 128], [70, 70, 70], [220, 20, 60], [0, 0, 142]]  # optional, RGB
    ignore_index: 255                # label value never scored (>= the number of classes)
    label_map: {7: 0, 12: 1, 24: 2, 26: 3}    # optional: raw label value -> class id;
                                     # other values -> ignore_index
    label_format: ids                # ids: single-channel PNGs; rgb: RGB-coded labels,
                                     # palette colours -> class ids, others ignored
    image_suffix: _leftImg8bit.png   # folder splits: image names end with this (default .png)
    label_suffix: _gtFine_labelIds.png  # ... and the label beside it with this (default .png)
    splits:
      train: lists/train.txt         # a list file: lines "IMAGE LABEL", relative to root
      val:                           # or two folders, searched recursively and paired by
        images: leftImg8bit/val      # relative path: images/a/x<image_suffix> ->
        labels: gtFine/val           # labels/a/x<label_suffix>
    detection:                       # optional, for `train detection`
      classes: [robot, box]          # boxes = connected components of these classes
      min_area: 100                  # smallest component (pixels) that becomes a box
      connectivity: 8

A split may instead give COCO boxes for detection: ``{images: DIR, coco: FILE.json}``.

Every problem is one :class:`~fcn_perception.errors.DatasetError` naming the file, the
field and the fix (``dataset file F: FIELD: PROBLEM; FIX``).
"""
from __future__ import annotations

import colorsys
import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from fcn_perception.errors import DatasetError, yaml_problem
from fcn_perception.evaluation.camvid import Sample, read_class_dict, read_split, rgb_to_ids

DATASETS = Path(__file__).resolve().parent / "datasets"
CAMVID_FILE = DATASETS / "camvid.yaml"
MAX_CLASSES = 255  # segmentation labels are published as mono8
KEYS = ("name", "root", "classes", "palette", "ignore_index", "label_map", "label_format",
        "image_suffix", "label_suffix", "splits", "detection")
LABEL_FORMATS = ("ids", "rgb")
SPLIT_KEYS = ("images", "labels", "image_suffix", "label_suffix", "coco")
DETECTION_KEYS = ("classes", "min_area", "connectivity")


@dataclass(frozen=True)
class SplitSpec:
    """One split: a list file, or an image folder with a label folder (or COCO JSON)."""

    name: str
    list_file: Path | None = None
    images: Path | None = None
    labels: Path | None = None
    coco: Path | None = None
    image_suffix: str = ".png"
    label_suffix: str = ".png"


@dataclass(frozen=True)
class DetectionSpec:
    classes: tuple[str, ...] | None = None
    min_area: int | None = None
    connectivity: int | None = None


@dataclass(frozen=True)
class DatasetFile:
    """A validated dataset description (:func:`read_dataset_file`)."""

    source: str                    # the YAML file, for messages
    name: str
    root: Path | None
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    label_map: dict[int, int] | None
    label_format: str
    splits: dict[str, SplitSpec]
    detection: DetectionSpec = field(default_factory=DetectionSpec)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_root(self, root: str | Path | None) -> DatasetFile:
        """This description read from ``root`` (``--data``) when given."""
        return self if root is None else replace(self, root=Path(root))

    def data_root(self) -> Path:
        if self.root is None:
            raise DatasetError(f"dataset file {self.source}: root: is not set; pass the data "
                               "folder with --data, or set root in the file")
        if not self.root.is_dir():
            raise DatasetError(f"dataset file {self.source}: root: folder {self.root} does not "
                               "exist; fix root (relative paths are read from the file's "
                               "folder) or pass --data")
        return self.root

    def split(self, name: str | Path) -> SplitSpec:
        """The split called ``name``, else ``name`` taken as a list file (relative to root)."""
        if str(name) in self.splits:
            return self.splits[str(name)]
        if str(name).endswith(".txt") or Path(name).is_file():
            return SplitSpec(str(name), list_file=Path(name))
        raise DatasetError(f"dataset file {self.source}: splits: has no split {str(name)!r} "
                           f"(it has {', '.join(self.splits) or 'none'}); name one of them or "
                           "give a list file (.txt)")

    def samples(self, name: str | Path) -> list[Sample]:
        spec, root = self.split(name), self.data_root()
        if spec.list_file is not None:
            return read_split(root, spec.list_file)
        if spec.labels is None:
            raise DatasetError(f"dataset file {self.source}: splits.{spec.name}: has no labels "
                               "folder (only COCO boxes); add labels: FOLDER for segmentation")
        return _paired_samples(root / spec.images, root / spec.labels, spec.image_suffix,
                               spec.label_suffix)

    def open(self, name: str | Path) -> LabelledImages:
        return LabelledImages(self, name)


class LabelledImages:
    """Frames and label maps of one split; item ``i`` is ``(image (H, W, 3) uint8 RGB,
    label (H, W) uint8 class ids, ignore_index where unlabelled)``."""

    def __init__(self, description: DatasetFile, split: str | Path) -> None:
        self.description = description
        self.split = str(split)
        self.samples = description.samples(split)
        self.classes = description.classes
        self.num_classes = description.num_classes
        self.ignore_index = description.ignore_index
        self.palette = description.palette
        self._lut = _label_lut(description.label_map, description.ignore_index)
        self._colors = np.asarray(description.palette, np.uint8) \
            if description.label_format == "rgb" else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.load(i)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[i]
        try:
            image = np.asarray(Image.open(s.image).convert("RGB"))
            raw = Image.open(s.label)
            raw.load()
        except OSError as exc:
            raise DatasetError(f"cannot read sample {i} ({s.image}, {s.label}): {exc}") from exc
        if self._colors is not None:
            label = rgb_to_ids(np.asarray(raw.convert("RGB")), self._colors, self.ignore_index)
        else:
            if raw.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(
                    f"label {s.label} has mode {raw.mode}; expected a single-channel map of "
                    f"label values (or set label_format: rgb in {self.description.source})")
            values = np.asarray(raw)
            if self._lut is not None:
                label = np.full(values.shape, self.ignore_index, np.uint8)
                inside = (values >= 0) & (values < len(self._lut))
                label[inside] = self._lut[values[inside]]
            else:
                bad = (values >= self.num_classes) & (values != self.ignore_index)
                if bad.any():
                    raise DatasetError(
                        f"label {s.label} holds values {sorted(np.unique(values[bad]).tolist())[:8]}"
                        f" outside the classes 0..{self.num_classes - 1} (ignore "
                        f"{self.ignore_index}); map them with label_map in "
                        f"{self.description.source}")
                label = values.astype(np.uint8)
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"label {s.label} is {label.shape[::-1]} but image {s.image} is "
                f"{image.shape[1::-1]} (width x height); they must match")
        return image, label


# ----------------------------------------------------------------------------- reading
def read_dataset_file(path: str | Path, root: str | Path | None = None) -> DatasetFile:
    """Read and validate a dataset description; ``root`` (``--data``) replaces its root."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} not found; give the path of a YAML "
                           f"description (example: {CAMVID_FILE})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc)
        where = f" ({where})" if where else ""
        raise DatasetError(f"dataset file {path}: is not valid YAML{where}: {problem}; fix "
                           "the syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"dataset file {path}: cannot be read ({exc}); give a YAML text "
                           "file") from None
    return parse_description(data, path, root)


def parse_description(data, source: str | Path, root: str | Path | None = None) -> DatasetFile:
    """Validate a description already parsed from YAML (``source``: its file, for
    messages; relative roots are read from its folder)."""
    source = Path(source)
    where = f"dataset file {source}"

    def need(ok, fld: str, problem: str, fix: str) -> None:
        if not ok:
            raise DatasetError(f"{where}: {fld}: {problem}; {fix}")

    need(isinstance(data, dict), "(top level)", f"is {_show(data)}, not a mapping",
         "write the keys classes, splits, ... (see training/datasets/camvid.yaml)")
    unknown = [k for k in data if k not in KEYS]
    need(not unknown, str(unknown[0]) if unknown else "", "is not a known key",
         _did_you_mean(unknown[0] if unknown else "", KEYS))

    classes = data.get("classes")
    need(isinstance(classes, list) and classes and all(isinstance(c, str) and c.strip()
                                                       for c in classes),
         "classes", f"is {_show(classes)}", "write a list of class names, index = class id, "
         "e.g. [ground, wall, robot]")
    need(len(classes) <= MAX_CLASSES, "classes", f"has {len(classes)} names",
         f"use at most {MAX_CLASSES} classes")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    need(not dupes, "classes", f"names {dupes} more than once", "give each class its own name")
    k = len(classes)

    palette = data.get("palette")
    if palette is None:
        palette = default_palette(k)
    need(isinstance(palette, list) and all(
        isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
        for c in palette), "palette", f"is {_show(palette)}",
        "write one [R, G, B] triple of integers 0..255 per class, or leave it out")
    need(len(palette) == k, "palette", f"has {len(palette)} colours for {k} classes",
         "give one colour per class, or leave it out for distinct defaults")

    ignore = data.get("ignore_index", 255)
    need(_is_int(ignore) and k <= ignore <= 255, "ignore_index", f"is {_show(ignore)}",
         f"use the label value of unlabelled pixels, {k}..255 (not a class id)")

    fmt = data.get("label_format", "ids")
    need(fmt in LABEL_FORMATS, "label_format", f"is {_show(fmt)}",
         "use ids (single-channel class-id PNGs) or rgb (palette-coloured labels)")

    label_map = data.get("label_map")
    if label_map is not None:
        need(isinstance(label_map, dict) and label_map, "label_map", f"is {_show(label_map)}",
             "write raw label value: class id pairs, e.g. {7: 0, 8: 1}")
        for raw, cid in label_map.items():
            need(_is_int(raw) and 0 <= raw <= 65535, f"label_map.{raw}",
                 "is not a label value", "keys are the label values in the files (0..65535)")
            need(_is_int(cid) and (0 <= cid < k or cid == ignore), f"label_map.{raw}",
                 f"maps to {_show(cid)}", f"map to a class id 0..{k - 1} or to ignore_index "
                 f"{ignore}")
        need(fmt == "ids", "label_map", "is given with label_format rgb",
             "use label_map with single-channel (ids) labels only")

    suffixes = {}
    for key in ("image_suffix", "label_suffix"):
        value = data.get(key, ".png")
        need(isinstance(value, str) and value, key, f"is {_show(value)}",
             "write the end of the file names, e.g. .png or _gtFine_labelIds.png")
        suffixes[key] = value

    base = source.parent
    root_value = data.get("root")
    need(root_value is None or isinstance(root_value, str), "root", f"is {_show(root_value)}",
         "write a folder path (relative: from this file's folder) or null (--data)")
    root_path = Path(root) if root is not None else (
        None if root_value is None else base / Path(root_value).expanduser())

    splits_data = data.get("splits")
    need(isinstance(splits_data, dict) and splits_data, "splits", f"is {_show(splits_data)}",
         "map split names to a list file or {images: FOLDER, labels: FOLDER}, e.g. "
         "{train: train.txt, val: val.txt}")
    splits = {}
    for name, spec in splits_data.items():
        fld = f"splits.{name}"
        if isinstance(spec, str) and spec:
            splits[str(name)] = SplitSpec(str(name), list_file=Path(spec))
            continue
        need(isinstance(spec, dict), fld, f"is {_show(spec)}",
             "write a list file path or {images: FOLDER, labels: FOLDER}")
        bad = [key for key in spec if key not in SPLIT_KEYS]
        need(not bad, f"{fld}.{bad[0] if bad else ''}", "is not a known key",
             _did_you_mean(bad[0] if bad else "", SPLIT_KEYS))
        for key in ("images", "labels", "coco", "image_suffix", "label_suffix"):
            need(spec.get(key) is None or isinstance(spec[key], str) and spec[key],
                 f"{fld}.{key}", f"is {_show(spec.get(key))}", "write a path (or a suffix) as a string")
        need(spec.get("images") is not None, f"{fld}.images", "is missing",
             "name the image folder (relative to root)")
        need(spec.get("labels") is not None or spec.get("coco") is not None, fld,
             "has neither labels nor coco", "add labels: FOLDER (label maps) or coco: FILE.json")
        splits[str(name)] = SplitSpec(
            str(name), images=Path(spec["images"]),
            labels=Path(spec["labels"]) if spec.get("labels") else None,
            coco=Path(spec["coco"]) if spec.get("coco") else None,
            image_suffix=spec.get("image_suffix", suffixes["image_suffix"]),
            label_suffix=spec.get("label_suffix", suffixes["label_suffix"]))

    det = data.get("detection") or {}
    need(isinstance(det, dict), "detection", f"is {_show(det)}",
         "write {classes: [NAME, ...], min_area: N, connectivity: 8}")
    bad = [key for key in det if key not in DETECTION_KEYS]
    need(not bad, f"detection.{bad[0] if bad else ''}", "is not a known key",
         _did_you_mean(bad[0] if bad else "", DETECTION_KEYS))
    det_classes = det.get("classes")
    if det_classes is not None:
        need(isinstance(det_classes, list) and det_classes
             and all(isinstance(c, str) for c in det_classes),
             "detection.classes", f"is {_show(det_classes)}",
             "list the class names to box, e.g. [robot, box]")
        missing = [c for c in det_classes if c not in classes]
        need(not missing, "detection.classes", f"names {missing}, which are not in classes",
             f"use names from classes ({', '.join(classes)})")
    if det.get("min_area") is not None:
        need(_is_int(det["min_area"]) and det["min_area"] >= 1, "detection.min_area",
             f"is {_show(det['min_area'])}", "use a positive number of pixels")
    if det.get("connectivity") is not None:
        need(det["connectivity"] in (4, 8), "detection.connectivity",
             f"is {_show(det['connectivity'])}", "use 4 or 8")
    detection = DetectionSpec(tuple(det_classes) if det_classes else None,
                              det.get("min_area"), det.get("connectivity"))

    name = data.get("name", source.stem)
    need(isinstance(name, str), "name", f"is {_show(name)}", "write a short name")
    return DatasetFile(str(source), name, root_path, tuple(classes),
                       tuple(tuple(int(v) for v in c) for c in palette), int(ignore),
                       {int(a): int(b) for a, b in label_map.items()} if label_map else None,
                       fmt, splits, detection)


def camvid_dataset(data_dir: str | Path) -> DatasetFile:
    """The description of a CamVid folder (``--data``): ``datasets/camvid.yaml`` read from
    ``data_dir``; a folder in the common layout (``class_dict.csv``, ``SPLIT/X.png`` with
    ``SPLIT_labels/X_L.png``, RGB-coded) gets its classes and colours from the CSV."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"dataset folder {data_dir} does not exist")
    desc = read_dataset_file(CAMVID_FILE, root=data_dir)
    class_dict = data_dir / "class_dict.csv"
    if not class_dict.is_file():
        return desc
    names, colors = read_class_dict(class_dict)
    splits = {s: SplitSpec(s, images=Path(s), labels=Path(f"{s}_labels"), label_suffix="_L.png")
              for s in ("train", "val", "test") if (data_dir / s).is_dir()}
    return replace(desc, source=str(class_dict), classes=tuple(names),
                   palette=tuple(tuple(int(v) for v in c) for c in colors), ignore_index=255,
                   label_format="rgb", splits=splits)


def add_dataset_args(p, coco: bool = False) -> None:
    """``--dataset``, ``--data``, ``--train-split``, ``--val-split`` (training commands)."""
    extra = " (or a COCO .json; images under --data)" if coco else ""
    p.add_argument("--dataset", default=None, metavar="FILE.yaml",
                   help="dataset description (classes, palette, ignore index, splits; see "
                        "training/datasets/*.yaml); default: CamVid at --data")
    p.add_argument("--data", default=None, metavar="FOLDER",
                   help="CamVid folder (SegNet or common layout); with --dataset: the data "
                        "set's root folder, replacing the file's root")
    p.add_argument("--train-split", default="train",
                   help=f"a split of the description, or a list file (.txt){extra}")
    p.add_argument("--val-split", default="val", help="as --train-split")


def dataset_from_args(args) -> DatasetFile:
    """The description ``--dataset`` (rooted at ``--data`` when given), else CamVid at
    ``--data``."""
    from fcn_perception.errors import CommandError

    if args.dataset:
        return read_dataset_file(args.dataset, root=args.data)
    if args.data:
        return camvid_dataset(args.data)
    raise CommandError("give --dataset FILE.yaml (a dataset description) or --data FOLDER "
                       "(CamVid)")


def default_palette(n: int) -> list[list[int]]:
    """``n`` distinct colours (hues evenly spaced)."""
    return [[int(255 * v) for v in colorsys.hsv_to_rgb(i / max(n, 1), 0.8, 0.95)]
            for i in range(n)]


def _paired_samples(images: Path, labels: Path, image_suffix: str,
                    label_suffix: str) -> list[Sample]:
    """``images/**/X<image_suffix>`` paired with ``labels/**/X<label_suffix>``."""
    for folder in (images, labels):
        if not folder.is_dir():
            raise DatasetError(f"folder {folder} does not exist; check root and the split's "
                               "images/labels paths")
    samples, missing = [], []
    for img in sorted(p for p in images.rglob(f"*{image_suffix}") if p.is_file()):
        rel = img.relative_to(images)
        lab = labels / rel.parent / (img.name[: -len(image_suffix)] + label_suffix)
        if lab.is_file():
            samples.append(Sample(img, lab))
        else:
            missing.append(str(lab))
    if missing:
        raise DatasetError(f"{len(missing)} image(s) in {images} have no label, e.g. "
                           f"{missing[:2]}; check label_suffix ({label_suffix!r})")
    if not samples:
        raise DatasetError(f"no images ending in {image_suffix!r} under {images}; check "
                           "image_suffix")
    return samples


def _label_lut(label_map: dict[int, int] | None, ignore: int) -> np.ndarray | None:
    if not label_map:
        return None
    lut = np.full(max(256, max(label_map) + 1), ignore, np.uint8)
    for raw, cid in label_map.items():
        lut[raw] = cid
    return lut


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _show(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(str(key), known, 1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{hint}the keys are {', '.join(known)}"
