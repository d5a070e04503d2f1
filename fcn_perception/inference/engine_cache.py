"""TensorRT engine cache: a key, a place on disk, and the rebuild decision.

An engine only runs on the TensorRT version and GPU it was built for, and only for the
precision and input-shape profile it was built with.  Its cache key is therefore::

    sha256(the ONNX file built) + which ONNX variant it is (fp32, fp16, int8-qdq)
    + TensorRT version + GPU name + compute capability + precision
    + optimisation profile + the build plan's typing and flags

(an int8 engine is built from a Q/DQ ONNX, whose sha256 covers its calibration).

Engines live in ``<cache>/engines/<onnx stem>-<precision>-<key[:16]>.engine`` with a JSON
sidecar (``.engine.json``) recording the key's fields and the engine's own sha256.  An
engine is rebuilt only when the key changes, the file is missing, or the file no longer
matches its sidecar (a torn or corrupt write); :func:`rebuild_reason` says which.

Nothing here imports TensorRT: the key and the decision are testable anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from fcn_perception.card import sha256_of

KEY_VERSION = 2
_HW = re.compile(r"^\s*(\d+)\s*[xX,]\s*(\d+)\s*$")


def parse_hw(text: str) -> tuple[int, int]:
    m = _HW.match(str(text))
    if not m:
        raise ValueError(f"expected a size HEIGHTxWIDTH such as 360x480, got {text!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if h < 1 or w < 1:
        raise ValueError(f"size {text!r} must be positive")
    return h, w


@dataclass(frozen=True)
class Profile:
    """An optimisation profile for input ``image`` ``(N, 3, H, W)``: min/opt/max ``(H, W)``,
    and batches 1 to ``max_batch`` (opt 1; detection graphs take batch 1 only)."""

    min: tuple[int, int] = (64, 64)
    opt: tuple[int, int] = (360, 480)
    max: tuple[int, int] = (1088, 1920)
    max_batch: int = 1

    def __post_init__(self) -> None:
        if int(self.max_batch) < 1:
            raise ValueError(f"profile max_batch must be >= 1, got {self.max_batch}")
        for i, axis in enumerate(("height", "width")):
            if not self.min[i] <= self.opt[i] <= self.max[i]:
                raise ValueError(
                    f"profile {self}: {axis} must satisfy min <= opt <= max "
                    f"({self.min[i]}, {self.opt[i]}, {self.max[i]})"
                )

    @classmethod
    def parse(cls, text: str, max_batch: int = 1) -> Profile:
        """``"MINHxMINW:OPTHxOPTW:MAXHxMAXW"`` or a single ``"HxW"`` (a fixed shape)."""
        parts = str(text).split(":")
        if len(parts) == 1:
            hw = parse_hw(parts[0])
            return cls(hw, hw, hw, max_batch)
        if len(parts) != 3:
            raise ValueError(f"expected a profile MIN:OPT:MAX such as 64x64:360x480:1088x1920, "
                             f"got {text!r}")
        return cls(*(parse_hw(p) for p in parts), max_batch)

    @classmethod
    def for_card(cls, card: dict, max_batch: int = 1) -> Profile:
        """A fixed profile when the card resizes to ``input.size``, else the default range."""
        size = (card.get("input") or {}).get("size")
        if size:
            hw = (int(size[0]), int(size[1]))
            return cls(hw, hw, hw, max_batch)
        return cls(max_batch=max_batch)

    def shapes(self) -> tuple[tuple, tuple, tuple]:
        """``(min, opt, max)`` ``(N, 3, H, W)`` shapes of input ``image``."""
        return ((1, 3, *self.min), (1, 3, *self.opt), (int(self.max_batch), 3, *self.max))

    def contains(self, hw: tuple[int, int]) -> bool:
        return all(self.min[i] <= hw[i] <= self.max[i] for i in range(2))

    def __str__(self) -> str:
        text = ":".join(f"{h}x{w}" for h, w in (self.min, self.opt, self.max))
        return text + (f" (batch 1-{self.max_batch})" if self.max_batch > 1 else "")


def engine_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str,
               precision: str, profile: Profile, onnx_variant: str,
               plan: dict | None = None) -> dict:
    """The fields an engine depends on.  ``onnx_variant``: ``fp32``, ``fp16`` or
    ``int8-qdq`` (the file built); ``plan``: :meth:`BuildPlan.key_fields` (typing, flags)."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if onnx_variant not in ("fp32", "fp16", "int8-qdq"):
        raise ValueError(f"onnx_variant must be fp32, fp16 or int8-qdq, got {onnx_variant!r}")
    return {
        "key_version": KEY_VERSION,
        "onnx_sha256": onnx_sha256,
        "onnx_variant": onnx_variant,
        "tensorrt": str(trt_version),
        "gpu": str(gpu_name),
        "compute_capability": str(compute_capability),
        "precision": precision,
        "profile": {k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in asdict(profile).items()},
        "plan": dict(plan or {}),
    }


def key_digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def engine_path(directory: str | Path, onnx_path: str | Path, fields: dict) -> Path:
    stem = Path(onnx_path).stem
    return Path(directory) / f"{stem}-{fields['precision']}-{key_digest(fields)[:16]}.engine"


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | Path) -> dict | None:
    try:
        return json.loads(sidecar_path(engine).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def rebuild_reason(engine: str | Path, fields: dict) -> str | None:
    """None when ``engine`` can be reused for ``fields``; otherwise why it must be built."""
    engine = Path(engine)
    if not engine.is_file():
        return f"no engine at {engine}"
    meta = read_sidecar(engine)
    if meta is None:
        return f"{sidecar_path(engine).name} (the engine's key) is missing or unreadable"
    old = meta.get("key", {})
    changed = sorted(k for k in set(old) | set(fields) if old.get(k) != fields.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {fields.get(k)!r}" for k in changed)
        return f"the key changed ({detail})"
    if meta.get("engine_sha256") != sha256_of(engine):
        return f"{engine.name} does not match the sha256 in its sidecar (corrupt or replaced)"
    return None


def write_engine(engine: str | Path, data: bytes, fields: dict, card: dict | None = None,
                 extra: dict | None = None) -> Path:
    """Write engine bytes and sidecar atomically (a crash never leaves a half engine)."""
    engine = Path(engine)
    engine.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine.with_name(f".{engine.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, engine)
    meta = {"key": fields, "key_digest": key_digest(fields),
            "engine_sha256": hashlib.sha256(bytes(data)).hexdigest(), **(extra or {})}
    if card is not None:
        meta["card"] = card
    side = sidecar_path(engine)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, side)
    return engine


def timing_cache_path(directory: str | Path, trt_version: str, gpu_name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{trt_version}-{gpu_name}")
    return Path(directory) / f"timing-{safe}.cache"
