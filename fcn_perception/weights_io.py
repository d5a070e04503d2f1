"""Weights as tensors: safe loading and saving of state dicts, and loading them into a
model with the card's checks.

Weights are ``.safetensors`` files (or, for users' own files, ``.pt``/``.pth`` loaded
with ``torch.load(weights_only=True)``).  The card that travels with them (schema,
sha256 policy, architectures) is :mod:`fcn_perception.card`, which needs no torch;
this module is the torch side: :func:`load_weights_into` verifies the sha256 against
the card (:func:`fcn_perception.card.verify_sha256`), refuses NaN/infinite tensors and
says which names or shapes do not fit.
"""
from __future__ import annotations

from pathlib import Path

import torch

from fcn_perception.card import verify_sha256
from fcn_perception.errors import WeightsError


def _reason(exc: Exception, limit: int = 120) -> str:
    """The first sentence of an exception's text, cut to ``limit`` characters."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, without running pickles."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist"
                           + (" (it is a folder)" if path.is_dir() else ""))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsError(
                f"{path} is not a readable safetensors file ({_reason(exc)}); re-export it "
                "with safetensors.torch.save_file"
            ) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path} could not be loaded safely with torch.load(weights_only=True) "
            f"({_reason(exc)}); save a plain state dict (or .safetensors) instead"
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


def check_finite(state: dict[str, torch.Tensor], weights: str | Path) -> None:
    """Raise :class:`WeightsError` naming the first tensor holding NaN or infinity."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(
                f"weights {weights}: tensor {name} holds {bad} NaN/infinite values; the file "
                "is corrupt: restore it or re-export it from a good checkpoint"
            )


def load_weights_into(model: torch.nn.Module, weights: str | Path, card: dict | None = None,
                      allow_modified: bool | None = None):
    """Load ``weights`` into ``model`` strictly, saying what does not fit.

    With ``card``, the weights' sha256 must match the card's (unless ``allow_modified``,
    or :func:`modified_weights_allowed` when it is None).  NaN/inf values are refused."""
    if card is not None:
        verify_sha256(weights, card, allow_modified)
    state = load_state_dict(weights)
    check_finite(state, weights)
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
