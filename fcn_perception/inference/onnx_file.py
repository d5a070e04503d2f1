"""ONNX model files without torch: reading them (card, metadata, I/O contract) and
where the export of a weights file is cached.

A robot that runs ONNX Runtime needs only this side: :func:`check_onnx` validates a
file against the task contract and gives its card; :func:`onnx_cache_path` finds the
cached export of a ``.safetensors`` file (keyed by its sha256) so that a cached export
loads without torch.  Writing exports (torch) is :mod:`fcn_perception.inference.export`.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fcn_perception.card import read_card, sha256_of, validate_card, verify_sha256
from fcn_perception.errors import ModelFileError, WeightsError
from fcn_perception.inference.contract import TensorSpec, validate_io

log = logging.getLogger("fcn_perception.inference")

EXPORT_VERSION = 4  # bump when the exported graph changes for the same weights
DEFAULT_OPSET = 17
CARD_KEY = "fcn_perception.card"
SHA_KEY = "fcn_perception.weights_sha256"


def cache_dir(sub: str = "") -> Path:
    """The cache folder: ``$FCN_PERCEPTION_CACHE``, else ``$XDG_CACHE_HOME/fcn_perception``
    or ``~/.cache/fcn_perception``; a temporary folder if that cannot be created."""
    root = os.environ.get("FCN_PERCEPTION_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "fcn_perception"
    path = path / sub if sub else path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / "fcn_perception_cache" / sub
        log.warning("cache folder %s is not writable (%s); using %s (set FCN_PERCEPTION_CACHE)",
                    path, exc, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        path = fallback
    return path


def segmentation_output(card: dict | None) -> str:
    """``"logits"`` when the card runs the network at a fixed size, else ``"labels"``."""
    return "logits" if ((card or {}).get("input") or {}).get("size") else "labels"


@dataclass(frozen=True)
class CacheEntry:
    """Where the export of a weights file is cached, and whether it is there."""

    path: Path
    digest: str  # the weights' sha256
    task: str
    seg_output: str | None  # labels or logits (segmentation)
    confidence: bool
    hit: bool


def onnx_cache_path(weights: str | Path, task: str | None = None, opset: int = DEFAULT_OPSET,
                    directory: str | Path | None = None, confidence: bool = False,
                    seg_output: str | None = None) -> CacheEntry:
    """The cache entry of ``weights``' ONNX export (see
    :func:`~fcn_perception.inference.export.cached_onnx`, which writes it on a miss).
    The weights' sha256 is verified against their card first, also on a hit."""
    weights = Path(weights)
    if not weights.is_file():
        raise WeightsError(f"weights file {weights} does not exist")
    card = read_card(weights)
    task = task or card["task"]
    if card["task"] != task:
        raise WeightsError(f"{weights} holds a {card['task']} model, not a {task} model")
    verify_sha256(weights, card)  # also when a cached export exists for these bytes
    digest = sha256_of(weights)
    folder = Path(directory) if directory else cache_dir("onnx")
    name = card["architecture"].get("name", task)
    kind = (seg_output or segmentation_output(card)) if task == "segmentation" else "det"
    confidence = confidence and kind == "labels"
    suffix = kind + ("-conf" if confidence else "")
    path = folder / f"{name}-{digest[:16]}-{suffix}-op{opset}-v{EXPORT_VERSION}.onnx"
    hit = False
    if path.is_file():
        try:
            hit = read_onnx_metadata(path).get(SHA_KEY) == digest
        except ModelFileError:
            pass
        if not hit:
            log.warning("cached ONNX %s is stale or unreadable: exporting again", path)
    return CacheEntry(path, digest, task, kind if task == "segmentation" else None,
                      confidence, hit)


def cached_onnx(weights: str | Path, task: str | None = None, **options) -> Path:
    """The cached ONNX export of ``weights``: without torch when it is cached, else
    exported now (:func:`fcn_perception.inference.export.cached_onnx`, torch)."""
    entry = onnx_cache_path(weights, task, **options)
    if entry.hit:
        return entry.path
    from fcn_perception.inference.export import cached_onnx as export_cached

    return export_cached(weights, task, **options)


def load_onnx_proto(path: str | Path, load_weights: bool = True):
    """``onnx.load`` with a clear error for missing or corrupt files."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX file {path} does not exist")
    try:
        return onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:
        raise ModelFileError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); re-export "
            "it with `fcn-perception export`"
        ) from exc


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    proto = load_onnx_proto(path, load_weights=False)
    return {p.key: p.value for p in proto.metadata_props}


def read_onnx_card(path: str | Path) -> dict:
    """The model card of an ONNX file: embedded metadata, else ``<stem>.json`` beside it."""
    path = Path(path)
    meta = read_onnx_metadata(path)
    if CARD_KEY in meta:
        try:
            card = json.loads(meta[CARD_KEY])
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{path}: embedded model card is not valid JSON: {exc}") from exc
        return validate_card(card, f"{path.name} (embedded in the ONNX file)")
    try:
        return read_card(path)
    except WeightsError as exc:
        raise ModelFileError(
            f"{path} carries no embedded model card (metadata key {CARD_KEY!r}) and {exc}"
        ) from exc


_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def onnx_io_specs(proto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (without initializers) and outputs as :class:`TensorSpec` lists."""
    inits = {i.name for i in proto.graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or -1)
                     for d in t.shape.dim)
        return TensorSpec(v.name, _ONNX_DTYPES.get(t.elem_type, f"onnx:{t.elem_type}"), dims)

    return ([spec(v) for v in proto.graph.input if v.name not in inits],
            [spec(v) for v in proto.graph.output])


def check_onnx(path: str | Path, task: str) -> dict:
    """Check an ONNX file against the ``task`` contract; return its card."""
    proto = load_onnx_proto(path, load_weights=False)
    ins, outs = onnx_io_specs(proto)
    validate_io(task, ins, outs, f"ONNX file {path}")
    card = read_onnx_card(path)
    if card.get("task", task) != task:
        raise ModelFileError(f"{path} holds a {card.get('task')} model, not a {task} model")
    return card
