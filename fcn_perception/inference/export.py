"""ONNX export with the backends' tensor contract, the model card embedded, checked.

* :func:`export_onnx` writes one self-contained ``.onnx`` (opset >= 17) with dynamic
  height and width, runs ``onnx.checker`` and strict shape inference, and stores the
  model card JSON in the graph's ``metadata_props`` (key ``fcn_perception.card``) so the
  file alone is enough for :func:`fcn_perception.load_predictor`.
* :func:`cached_onnx` exports a weights file once into the cache folder
  (``$FCN_PERCEPTION_CACHE``, else ``~/.cache/fcn_perception``), keyed by the weights'
  sha256, so ONNX-based backends work from a plain ``.safetensors`` file.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from fcn_perception.card import read_card, sha256_of
from fcn_perception.errors import WeightsError
from fcn_perception.inference.contract import INPUT_NAME, OUTPUTS, check_task

# the torch-free ONNX file readers live in onnx_file; imported here for export's own use
# and for the callers that import them from export
from fcn_perception.inference.onnx_file import (  # noqa: F401
    CARD_KEY,
    DEFAULT_OPSET,
    EXPORT_VERSION,
    SHA_KEY,
    cache_dir,
    check_onnx,
    load_onnx_proto,
    onnx_cache_path,
    onnx_io_specs,
    read_onnx_card,
    read_onnx_metadata,
    segmentation_output,
)
from fcn_perception.weights_io import load_weights_into

log = logging.getLogger("fcn_perception.inference")


class SegmentationExport(nn.Module):
    """``image (N, 3, H, W)`` -> ``labels (N, H, W)`` uint8 (the argmax in the graph, so
    backends move one byte per pixel instead of ``C`` floats), or with ``logits=True`` the
    ``(N, C, H, W)`` scores (for networks run at a reduced size, whose scores the
    Predictor upsamples to the frame's size before the argmax).

    ``confidence=True`` (labels only; or ``forward(image, confidence=True)``) also gives
    ``confidence (N, H, W)`` float32, the top class's softmax probability per pixel."""

    def __init__(self, model: nn.Module, logits: bool = False, confidence: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.logits = logits
        self.confidence = confidence and not logits

    def forward(self, image: torch.Tensor, confidence: bool | None = None):
        scores = self.model(image)
        if self.logits:
            return scores
        labels = scores.argmax(1).to(torch.uint8)
        if not (self.confidence if confidence is None else confidence):
            return labels
        from fcn_perception.inference.optimize import top_probability

        return labels, top_probability(scores.float())


def export_module(model: nn.Module, task: str, optimize: bool = True,
                  seg_output: str = "labels", confidence: bool = False) -> nn.Module:
    """Wrap ``model`` so its outputs are the contract's tensors for ``task``.

    ``optimize`` (default) first applies the exact rewrites of
    :mod:`fcn_perception.inference.optimize` to a copy of the model (transposed
    convolutions as sub-pixel convolutions).  ``seg_output``: ``"labels"`` or ``"logits"``;
    ``confidence`` adds the ``confidence`` output to a ``labels`` graph (segmentation
    modules also take ``forward(image, confidence=True)`` in eager mode).
    """
    if seg_output not in ("labels", "logits"):
        raise ValueError(f"seg_output must be 'labels' or 'logits', got {seg_output!r}")
    check_task(task)
    if optimize:
        import copy

        from fcn_perception.inference.optimize import replace_transposed_convs

        model = copy.deepcopy(model).eval()
        replace_transposed_convs(model)
    if task == "segmentation":
        from fcn_perception.models.fcn import FCN

        if optimize and isinstance(model, FCN) and seg_output == "labels":
            from fcn_perception.inference.optimize import FCNLabels

            return FCNLabels(model, confidence=confidence)
        return SegmentationExport(model, logits=seg_output == "logits", confidence=confidence)
    from fcn_perception.models.rfcn import RFCNExport

    return RFCNExport(model)


def load_model(weights: str | Path, task: str | None = None) -> tuple[nn.Module, dict]:
    """Build the model a weights file's card describes and load the weights (eval mode)."""
    from fcn_perception.models import build_model

    weights = Path(weights)
    if not weights.is_file():
        raise WeightsError(f"weights file {weights} does not exist")
    card = read_card(weights)
    if task is not None and card["task"] != task:
        raise WeightsError(
            f"{weights} holds a {card['task']} model (its card says task={card['task']!r}), "
            f"but a {task} model was asked for"
        )
    model = build_model(card["architecture"])
    load_weights_into(model, weights, card)
    return model.eval(), card


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def export_onnx(model: nn.Module, task: str, path: str | Path, card: dict | None = None,
                opset: int = DEFAULT_OPSET, height: int | None = None, width: int | None = None,
                weights_sha256: str | None = None, seg_output: str | None = None,
                confidence: bool = False) -> Path:
    """Export ``model`` for ``task`` to ``path`` (dynamic H and W; N too for segmentation).

    Segmentation graphs output ``labels`` (uint8) or, when the card runs the network at a
    fixed ``input.size`` (or ``seg_output="logits"``), ``logits``.  ``confidence`` adds a
    second output to a ``labels`` graph, ``confidence`` float32 ``(N, H, W)`` (the top
    class's softmax probability; ONNX Runtime and TensorRT compute every output, so it is
    a separate variant).  Tracing uses the card's size, else 360x480 (any size runs
    afterwards).

    The graph is checked with ``onnx.checker`` (full check) and strict shape inference;
    ``card`` (the model card dict) is embedded as metadata.  Returns ``path``.
    """
    import onnx

    check_task(task)
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: use 17 or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg_output = seg_output or segmentation_output(card)
    size = ((card or {}).get("input") or {}).get("size") or (360, 480)
    height, width = int(height or size[0]), int(width or size[1])
    confidence = bool(confidence) and task == "segmentation" and seg_output == "labels"
    wrapper = export_module(model, task, seg_output=seg_output, confidence=confidence).eval()
    dummy = torch.zeros(1, 3, height, width)
    outputs = list(OUTPUTS[task])
    if task == "segmentation":
        outputs = [seg_output, "confidence"] if confidence else [seg_output]
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                seg_output: ({0: "batch", 2: "height", 3: "width"} if seg_output == "logits"
                             else {0: "batch", 1: "height", 2: "width"})}
        if confidence:
            axes["confidence"] = {0: "batch", 1: "height", 2: "width"}
    else:
        axes = {INPUT_NAME: {2: "height", 3: "width"}}
    tmp = _atomic_path(path)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_axes=axes, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        meta = {"fcn_perception.task": task, "fcn_perception.export_version": str(EXPORT_VERSION)}
        if card is not None:
            meta[CARD_KEY] = json.dumps(card)
        if weights_sha256:
            meta[SHA_KEY] = weights_sha256
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "fcn_perception"
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cached_onnx(weights: str | Path, task: str | None = None, opset: int = DEFAULT_OPSET,
                directory: str | Path | None = None, confidence: bool = False,
                seg_output: str | None = None) -> Path:
    """The ONNX export of ``weights``, made once and cached under its sha256
    (``confidence``: the segmentation variant that also outputs ``confidence``;
    ``seg_output``: ``labels`` or ``logits`` instead of what the card's size implies);
    where it is cached: :func:`~fcn_perception.inference.onnx_file.onnx_cache_path`."""
    entry = onnx_cache_path(weights, task, opset, directory, confidence, seg_output)
    if entry.hit:
        return entry.path
    log.info("exporting %s to ONNX (%s, opset %d) -> %s", Path(weights).name, entry.task,
             opset, entry.path)
    model, card = load_model(weights, entry.task)
    return export_onnx(model, entry.task, entry.path, card=card, opset=opset,
                       weights_sha256=entry.digest, confidence=entry.confidence,
                       seg_output=entry.seg_output)


def onnx_variant(path: str | Path) -> str:
    """``fp32``, ``fp16`` or ``int8-qdq``: which variant of the export an ONNX file is."""
    from fcn_perception.inference.fp16 import precision_of

    precision = precision_of(load_onnx_proto(path, load_weights=False))
    return "int8-qdq" if precision == "int8" else precision


def fp16_onnx(onnx_path: str | Path, output: str | Path | None = None,
              directory: str | Path | None = None) -> Path:
    """The fp16 version of fp32 ``onnx_path`` (:mod:`fcn_perception.inference.fp16`):
    written to ``output``, else cached in ``directory`` (default: the ONNX cache folder)
    as ``<stem>-fp16-<sha256[:16]>.onnx``."""
    import onnx

    from fcn_perception.inference.fp16 import FP16_VERSION, convert_to_fp16

    onnx_path = Path(onnx_path)
    if output is None:
        folder = Path(directory) if directory else cache_dir("onnx")
        digest = sha256_of(onnx_path)[:16]
        output = folder / f"{onnx_path.stem}-fp16-{digest}-v{FP16_VERSION}.onnx"
        if output.is_file():
            return output
    output = Path(output)
    log.info("converting %s to fp16 -> %s", onnx_path.name, output)
    model = convert_to_fp16(load_onnx_proto(onnx_path))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_path(output)
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


