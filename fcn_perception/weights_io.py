"""Safe loading and saving of weights, and the model card that travels with them.

Weights are ``.safetensors`` files (or, for users' own files, ``.pt``/``.pth`` loaded
with ``torch.load(weights_only=True)``).  Each shipped weights file has a model card,
``<stem>.json`` beside it, that says how to build and feed the model::

    {
      "task": "segmentation" | "detection",
      "architecture": {"name": "fcn8s", "backbone": "resnet18", "num_classes": 11, ...},
      "classes": ["Sky", ...],            # index = class id
      "palette": [[128, 128, 128], ...],  # RGB per class id
      "ignore_index": 11,                  # label value never predicted (may be null)
      "input": {"mean": [...], "std": [...], "size": null | [H, W]},
      "training": {...}, "metrics": {...},
      "weights": "fcn8s_resnet18_camvid.safetensors", "sha256": "..."
    }

``input.size`` null means the network runs at the image's own resolution.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from fcn_perception.errors import WeightsError

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = {
    "segmentation": PACKAGE_WEIGHTS / "fcn8s_resnet18_camvid.safetensors",
    "detection": PACKAGE_WEIGHTS / "rfcn_resnet18_camvid.safetensors",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, without running pickles."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsError(
                f"{path} is not a readable safetensors file ({exc}); re-export it with "
                "safetensors.torch.save_file"
            ) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path} could not be loaded safely with torch.load(weights_only=True) ({exc}); "
            "save a plain state dict (or .safetensors) instead"
        ) from exc
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # a training checkpoint
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (name -> tensor)")
    return obj


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path, half: bool = False) -> None:
    from safetensors.torch import save_file

    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
        for k, v in state.items()
    }
    save_file(tensors, str(path))


def card_path_for(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def read_card(weights: str | Path) -> dict:
    """Load the model card beside ``weights`` and check its required keys."""
    path = card_path_for(weights)
    if not path.is_file():
        raise WeightsError(
            f"model card {path} not found: every weights file needs a JSON card beside it "
            "(see fcn_perception/weights_io.py for its keys)"
        )
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"model card {path} is not valid JSON: {exc}") from exc
    missing = [k for k in ("task", "architecture", "classes", "input") if k not in card]
    if missing:
        raise WeightsError(f"model card {path} lacks the keys {missing}")
    return card


def write_card(card: dict, weights: str | Path) -> Path:
    card = dict(card, weights=Path(weights).name, sha256=sha256_of(weights))
    path = card_path_for(weights)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def load_weights_into(model: torch.nn.Module, weights: str | Path, card: dict | None = None):
    """Load ``weights`` into ``model`` strictly, saying what does not fit."""
    state = load_state_dict(weights)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        arch = (card or {}).get("architecture", "the requested architecture")
        detail = "; ".join(
            f"{what}: {names[:4]}{'...' if len(names) > 4 else ''}"
            for what, names in (("missing", missing), ("unexpected", unexpected),
                                ("shape mismatch", mismatched)) if names
        )
        raise WeightsError(
            f"weights {weights} do not fit {arch} ({detail}). Check that the model card "
            "beside the weights names the architecture they were trained with."
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model
