"""The model card: what travels with a weights file, checked without torch.

Each shipped weights file has a model card, ``<stem>.json`` beside it, that says how to
build and feed the model::

    {
      "task": "segmentation" | "detection",
      "architecture": {"name": "fcn8s", "backbone": "efficientnet_lite0", "num_classes": 11, ...},
      "classes": ["Sky", ...],            # index = class id
      "palette": [[128, 128, 128], ...],  # RGB per class id
      "ignore_index": 11,                  # label value never predicted (may be null)
      "input": {"mean": [...], "std": [...], "size": null | [H, W]},
      "training": {...}, "metrics": {...},
      "weights": "fcn8s_efficientnet_lite0_camvid.safetensors", "sha256": "..."
    }

``input.size`` null means the network runs at the image's own resolution.

This module is the one home of the card's schema, of the architectures a card may name
(as data: :data:`ARCHITECTURES`, :data:`BACKBONES`, :data:`RFCN_DEFAULTS`; the modules
in :mod:`fcn_perception.models` build them) and of the sha256 policy.  It imports
neither torch nor the models, so an ONNX Runtime robot reads cards without them;
tensors are :mod:`fcn_perception.weights_io`'s.

Checks (each failure is one :class:`~fcn_perception.errors.WeightsError` naming the
file, the field and the fix):

* :func:`read_card` validates the card against its schema (:func:`validate_card`):
  types; ``classes``, ``architecture.num_classes`` and ``palette`` agree in length;
  ``input.mean``/``std`` are 3 finite numbers with std > 0; ``input.size`` is null or
  ``[H, W]`` within 1..:data:`MAX_INPUT_SIDE`; R-FCN options are the known ones with the
  right types.
* :func:`verify_sha256` checks weights against the card's ``sha256`` (weights_io's
  loader calls it).  Deliberately edited weights: :func:`allow_modified_weights` (the
  CLI's ``--allow-modified-weights``, the nodes' ``allow_modified_weights`` parameter) or
  ``$FCN_PERCEPTION_ALLOW_MODIFIED_WEIGHTS=1``; or rewrite the card with
  :func:`write_card`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

from fcn_perception.errors import WeightsError

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"
#: the shipped models by name, per task: what the nodes' ``model`` parameter (and
#: ``load_predictor(weights=...)``) accept besides a file (:func:`model_file`)
MODELS = {
    "segmentation": {
        "fast": PACKAGE_WEIGHTS / "fcn8s_efficientnet_lite0_camvid.safetensors",
        # the fast model's weights with the network at 1.5x the CamVid frame (input.size)
        "accurate": PACKAGE_WEIGHTS / "fcn8s_efficientnet_lite0_540x720_camvid.safetensors",
    },
    "detection": {
        "fast": PACKAGE_WEIGHTS / "rfcn_efficientnet_lite0_camvid.safetensors",
    },
}
DEFAULT_MODEL = "fast"
DEFAULT_WEIGHTS = {task: names[DEFAULT_MODEL] for task, names in MODELS.items()}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASKS = ("segmentation", "detection")
#: largest network input side a card may ask for (input.size)
MAX_INPUT_SIDE = 4096
#: most classes a card may declare (segmentation labels are published as mono8)
MAX_CLASSES = 255

#: FCN variants -> the stride of their coarsest score map's skip (``models.fcn``)
FCN_VARIANTS = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}
#: architecture names a card may give, per task (``models.build_model`` builds each)
ARCHITECTURES = {"segmentation": (*FCN_VARIANTS, "unet"), "detection": ("rfcn",)}
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
EFFICIENTNET_LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: backbone names (``models.backbones.build_backbone`` builds each)
BACKBONES = ("vgg16", *RESNETS, *EFFICIENTNET_LITES)
#: R-FCN's options and their defaults (``models.rfcn``; a card's ``architecture`` may
#: set any of them)
RFCN_DEFAULTS = {
    "name": "rfcn",
    "backbone": "efficientnet_lite0",
    "num_classes": 3,
    "neck": "fuse8",
    "feature_channels": 128,
    "head_channels": 256,
    "k": 3,
    "anchor_sizes": [18, 40, 100],
    "aspect_ratios": [0.55, 1.25, 3.4],
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 150,
    "rpn_nms_thresh": 0.7,
    "rpn_batch_size": 256,
    "rpn_positive_fraction": 0.5,
    "rpn_fg_iou": 0.7,
    "rpn_bg_iou": 0.3,
    "roi_batch_size": 128,
    "roi_positive_fraction": 0.25,
    "roi_fg_iou": 0.5,
    "ohem": False,
    "score_thresh": 0.05,
    "nms_thresh": 0.3,
    "max_detections": 100,
    "min_box_size": 1.0,
}

#: how architectures and backbones are written in tables and reports
TITLES = {"fcn8s": "FCN-8s", "fcn16s": "FCN-16s", "fcn32s": "FCN-32s", "unet": "U-Net",
          "rfcn": "R-FCN", "vgg16": "VGG16", "resnet18": "ResNet-18", "resnet34": "ResNet-34",
          "resnet50": "ResNet-50", "resnet101": "ResNet-101",
          "efficientnet_lite0": "EfficientNet-Lite0", "efficientnet_lite1": "EfficientNet-Lite1",
          "efficientnet_lite2": "EfficientNet-Lite2"}

ALLOW_MODIFIED_ENV = "FCN_PERCEPTION_ALLOW_MODIFIED_WEIGHTS"
_allowed_modified: set[Path] = set()
_allow_all_modified = False


def model_title(card: dict) -> str:
    """``"FCN-8s EfficientNet-Lite0"``: a card's architecture as tables write it."""
    arch = card.get("architecture") or {}
    name = TITLES.get(arch.get("name"), str(arch.get("name")))
    backbone = arch.get("backbone")
    return f"{name} {TITLES.get(backbone, backbone)}" if backbone else name


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_file(task: str, model: str | Path | None) -> Path:
    """The weights file ``model`` names for ``task``: a name of :data:`MODELS` (None or
    ``""``: :data:`DEFAULT_MODEL`), else a path.  A named model that is not installed, or a
    name that is neither a model nor a file, is one :class:`WeightsError` line."""
    names = MODELS[task]
    model = DEFAULT_MODEL if model is None or str(model) == "" else model
    if str(model) in names:
        path = names[str(model)]
        if not path.is_file():
            installed = [n for n in names if names[n].is_file()]
            fix = (f"use {' or '.join(installed)} or a weights file path" if installed
                   else "give a weights file path")
            raise WeightsError(f"model {model!r} ({task}) is {path}, which is not installed; {fix}")
        return path
    path = Path(model).expanduser()
    if not path.suffix and not path.exists():
        raise WeightsError(f"model {str(model)!r} is not a {task} model name "
                           f"({', '.join(names)}) nor a file")
    return path


def card_path_for(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def read_card(weights: str | Path) -> dict:
    """Load the model card beside ``weights`` and validate it (:func:`validate_card`)."""
    path = card_path_for(weights)
    if not path.is_file():
        raise WeightsError(
            f"model card {path} not found: every weights file needs a JSON card beside it "
            "(see fcn_perception/card.py for its keys)"
        )
    try:
        card = json.loads(path.read_bytes())
    except OSError as exc:
        raise WeightsError(f"model card {path} cannot be read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise WeightsError(
            f"model card {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); fix the syntax or rewrite it with fcn_perception.card.write_card"
        ) from exc
    except ValueError as exc:  # not UTF-8/16/32 text
        raise WeightsError(f"model card {path} is not a JSON text file ({exc}); "
                           "restore it or rewrite it with fcn_perception.card.write_card") from exc
    return validate_card(card, path)


class _CardProblem(Exception):
    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(field)
        self.field, self.problem, self.fix = field, problem, fix


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _show(value, limit: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool)) \
        or value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _need(ok: bool, field: str, problem: str, fix: str) -> None:
    if not ok:
        raise _CardProblem(field, problem, fix)


def validate_card(card, source: str | Path = "<card>") -> dict:
    """Check a model card against the schema; return it, or raise :class:`WeightsError`
    ``model card SOURCE: FIELD: PROBLEM; FIX``."""
    try:
        _check_card(card)
    except _CardProblem as p:
        where = f"model card {source}" + (f": {p.field}" if p.field else "")
        raise WeightsError(f"{where} {p.problem}; {p.fix}") from None
    return card


def _check_card(card) -> None:
    keys = "task, architecture, classes, input"
    _need(isinstance(card, dict), "", f"is {_show(card)}, not a JSON object",
          f"it needs the keys {keys} (see fcn_perception/card.py)")
    missing = [k for k in ("task", "architecture", "classes", "input") if k not in card]
    _need(not missing, "", f"lacks the keys {missing}", f"add them (the keys are {keys})")
    task = card["task"]
    _need(task in TASKS, "task", f"is {_show(task)}", "use \"segmentation\" or \"detection\"")

    arch = card["architecture"]
    _need(isinstance(arch, dict), "architecture", f"is {_show(arch)}, not an object",
          'write it as {"name": ..., "backbone": ..., "num_classes": N}')
    name = arch.get("name")
    known = ARCHITECTURES[task]
    _need(name in known, "architecture.name", f"is {_show(name)} (task {task})",
          f"use one of {', '.join(known)}")
    num = arch.get("num_classes")
    _need(_is_int(num) and 1 <= num <= MAX_CLASSES, "architecture.num_classes",
          f"is {_show(num)}", f"use the number of classes the weights output (1..{MAX_CLASSES})")
    if "backbone" in arch:
        _need(arch["backbone"] in BACKBONES, "architecture.backbone",
              f"is {_show(arch['backbone'])}", f"use one of {', '.join(BACKBONES)}")
    for key in ("width", "depth"):
        if key in arch:
            _need(_is_int(arch[key]) and 1 <= arch[key] <= 1024, f"architecture.{key}",
                  f"is {_show(arch[key])}", "use a positive integer")
    if name == "rfcn":
        _check_rfcn(arch)

    classes = card["classes"]
    _need(isinstance(classes, list) and all(isinstance(c, str) and c for c in classes),
          "classes", f"is {_show(classes)}, not a list of class names",
          'write one name per class id, e.g. ["Sky", "Building", ...]')
    _need(len(classes) == num, "classes",
          f"has {len(classes)} names but architecture.num_classes is {num}",
          "list one name per output class")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    _need(not dupes, "classes", f"names {dupes} more than once", "give each class its own name")

    palette = card.get("palette")
    if palette is not None:
        _need(isinstance(palette, list) and all(
            isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
            for c in palette), "palette", f"is {_show(palette)}",
            "write one [R, G, B] triple of integers 0..255 per class (or null)")
        _need(len(palette) == len(classes), "palette",
              f"has {len(palette)} colours for {len(classes)} classes",
              "give one colour per class (or null for the default palette)")

    ignore = card.get("ignore_index")
    if ignore is not None:
        _need(_is_int(ignore) and 0 <= ignore <= 255, "ignore_index", f"is {_show(ignore)}",
              "use null or the label value (0..255) that marks unlabelled pixels")
        if task == "segmentation":
            _need(ignore >= num, "ignore_index",
                  f"is {ignore}, a class id (num_classes {num})",
                  f"use null or a value >= {num}: that class would never be scored")

    block = card["input"]
    _need(isinstance(block, dict), "input", f"is {_show(block)}, not an object",
          'write {"mean": [r, g, b], "std": [r, g, b], "size": null or [H, W]}')
    for key, positive in (("mean", False), ("std", True)):
        if key in block:
            v = block[key]
            _need(isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v),
                  f"input.{key}", f"is {_show(v)}",
                  "write 3 finite numbers (per channel, on the 0..1 scale)")
            if positive:
                _need(min(v) > 0, f"input.{key}", f"is {_show(v)}",
                      "every std must be > 0 (ImageNet: [0.229, 0.224, 0.225])")
    size = block.get("size")
    if size is not None:
        _need(isinstance(size, list) and len(size) == 2 and all(_is_int(x) for x in size)
              and all(1 <= x <= MAX_INPUT_SIDE for x in size), "input.size",
              f"is {_show(size)}",
              f"use null (the image's own size) or [H, W] with 1..{MAX_INPUT_SIDE} each")

    if card.get("sha256") is not None:
        sha = card["sha256"]
        _need(isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) is not None,
              "sha256", f"is {_show(sha)}, not 64 hex digits",
              "rewrite the card with fcn_perception.card.write_card (or remove the key)")
    if card.get("weights") is not None:
        _need(isinstance(card["weights"], str), "weights", f"is {_show(card['weights'])}",
              "write the weights file's name")
    for key in ("training", "metrics"):
        if card.get(key) is not None:
            _need(isinstance(card[key], dict), key, f"is {_show(card[key])}, not an object",
                  "write an object or remove the key")


def _check_rfcn(arch: dict) -> None:
    unknown = sorted(set(arch) - set(RFCN_DEFAULTS))
    if unknown:
        import difflib

        close = sorted({m for k in unknown for m in difflib.get_close_matches(k, RFCN_DEFAULTS, 2)})
        hint = f"did you mean {', '.join(close)}? " if close else ""
        _need(False, "architecture", f"has unknown R-FCN options {_show(unknown)}",
              f"remove them ({hint}the options are fcn_perception.card.RFCN_DEFAULTS)")
    for key, value in arch.items():
        default, field = RFCN_DEFAULTS[key], f"architecture.{key}"
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = _is_int(value) and value >= 0, "a non-negative integer"
        elif isinstance(default, float):
            ok, want = _is_number(value) and value >= 0, "a non-negative number"
            if ok and any(t in key for t in ("iou", "thresh", "fraction")):
                ok, want = value <= 1, "a number in [0, 1]"
        elif isinstance(default, list):
            ok = (isinstance(value, list) and len(value) > 0
                  and all(_is_number(v) and v > 0 for v in value))
            want = "a non-empty list of positive numbers"
        else:
            ok, want = isinstance(value, str), "a string"
        _need(ok, field, f"is {_show(value)}", f"use {want} (default {_show(default)})")


def allow_modified_weights(path: str | Path | None = None) -> None:
    """Accept weights whose sha256 differs from their card's: ``path`` (resolved), or
    every file when None.  For weights edited on purpose (pruned, fine-tuned in place)."""
    global _allow_all_modified
    if path is None:
        _allow_all_modified = True
    else:
        _allowed_modified.add(Path(path).expanduser().resolve())


def modified_weights_allowed(path: str | Path) -> bool:
    if _allow_all_modified or os.environ.get(ALLOW_MODIFIED_ENV, "").lower() in (
            "1", "true", "yes", "on"):
        return True
    return Path(path).expanduser().resolve() in _allowed_modified


def verify_sha256(weights: str | Path, card: dict, allow_modified: bool | None = None) -> None:
    """Raise :class:`WeightsError` when ``weights`` do not hash to the card's ``sha256``
    (cards without one are not checked)."""
    expected = card.get("sha256") if isinstance(card, dict) else None
    if not expected:
        return
    if allow_modified is None:
        allow_modified = modified_weights_allowed(weights)
    if allow_modified:
        return
    actual = sha256_of(weights)
    if actual != expected:
        raise WeightsError(
            f"weights {weights} do not match the sha256 in their card {card_path_for(weights).name} "
            f"({actual[:12]}... vs {expected[:12]}...): the file is corrupt or was edited; "
            "restore it, or if edited on purpose pass --allow-modified-weights "
            "(node parameter allow_modified_weights:=true)"
        )


def write_card(card: dict, weights: str | Path) -> Path:
    card = dict(card, weights=Path(weights).name, sha256=sha256_of(weights))
    path = card_path_for(weights)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
