"""The tensor contract every backend speaks, and checks that say what was expected.

Exported ONNX graphs, TensorRT engines and the torch backend all take and give the
same named tensors, so one pre/post-processing path serves every backend:

Segmentation
    input  ``image``  float32 ``(N, 3, H, W)``, normalised with the card's mean/std
    output ``labels`` integer ``(N, H, W)``, class ids (argmax is part of the graph;
                      uint8 from our exporter, any integer type is accepted) -- for
                      networks that run at the input's own size (card ``input.size``
                      null); or
           ``logits`` float32 ``(N, C, H, W)`` class scores -- for networks run at a
                      fixed reduced size: the Predictor upsamples the scores bilinearly
                      to the frame's size and takes the argmax there.
           ``confidence`` float32 ``(N, H, W)``, optional beside ``labels``: the top
                      class's softmax probability per pixel (the ``--confidence``
                      export; with ``logits`` the Predictor computes it itself).

Detection (batch 1, :class:`fcn_perception.models.rfcn.RFCNExport`)
    input  ``image``          float32 ``(1, 3, H, W)`` normalised
    output ``boxes``          float32 ``(D, 4)`` ``x1, y1, x2, y2`` in network-input pixels
           ``scores``         float32 ``(D,)``, 0 in padding rows
           ``labels``         int64 ``(D,)``, class index, -1 in padding rows
           ``num_detections`` int64 ``()``, valid rows (optional)
           ``class_scores``   float32 ``(D, C)``, each detection's class distribution
                              (softmax over the foreground classes; optional)

``D`` is fixed (the model card's ``max_detections``, 100 by default); a leading batch
axis of size 1 on the detection outputs is accepted too.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fcn_perception.card import TASKS
from fcn_perception.errors import ModelFileError

INPUT_NAME = "image"
OUTPUTS = {
    "segmentation": ("labels", "logits", "confidence"),
    "detection": ("boxes", "scores", "labels", "num_detections", "class_scores"),
}
REQUIRED_OUTPUTS = {
    "segmentation": ("labels",),
    "detection": ("boxes", "scores", "labels"),
}
EXPECTED_TEXT = {
    "segmentation": "input 'image' float32 (N, 3, H, W); output 'labels' integer (N, H, W) "
    "(optionally with 'confidence' float32 (N, H, W)) or 'logits' float32 (N, C, H, W)",
    "detection": "input 'image' float32 (1, 3, H, W); outputs 'boxes' float32 (D, 4), "
    "'scores' float32 (D,), 'labels' int64 (D,) and optionally 'num_detections' int64 () "
    "and 'class_scores' float32 (D, C)",
}


@dataclass(frozen=True)
class TensorSpec:
    """A named graph input or output as a backend reports it (``-1``/str for dynamic dims)."""

    name: str
    dtype: str  # "float32", "uint8", "int64", ...
    shape: tuple

    def __str__(self) -> str:
        dims = ", ".join("?" if (d is None or isinstance(d, str) or d < 0) else str(d)
                         for d in self.shape)
        return f"{self.name!r} {self.dtype} ({dims})"


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return task


def _fmt(specs: Iterable[TensorSpec]) -> str:
    return ", ".join(str(s) for s in specs) or "none"


def validate_io(task: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                source: str) -> None:
    """Raise :class:`ModelFileError` unless ``inputs``/``outputs`` fit the ``task`` contract.

    ``source`` names the file in the message (an ONNX path or an engine path).
    """
    check_task(task)
    problems = []
    in_names = [s.name for s in inputs]
    if in_names != [INPUT_NAME]:
        problems.append(f"inputs are [{_fmt(inputs)}], expected exactly one named "
                        f"{INPUT_NAME!r}")
    else:
        spec = inputs[0]
        if spec.dtype != "float32":
            problems.append(f"input {INPUT_NAME!r} is {spec.dtype}, expected float32")
        if len(spec.shape) != 4:
            problems.append(f"input {INPUT_NAME!r} has rank {len(spec.shape)}, expected 4 "
                            "(N, 3, H, W)")
        elif isinstance(spec.shape[1], int) and spec.shape[1] not in (-1, 3):
            problems.append(f"input {INPUT_NAME!r} has {spec.shape[1]} channels, expected 3")
    out = {s.name: s for s in outputs}
    if task == "segmentation" and "logits" in out and "labels" not in out:
        logits = out["logits"]
        if not logits.dtype.startswith("float"):
            problems.append(f"output {logits} should be float class scores")
        if len(logits.shape) != 4:
            problems.append(f"output 'logits' has rank {len(logits.shape)}, expected 4 "
                            "(N, C, H, W)")
    else:
        missing = [n for n in REQUIRED_OUTPUTS[task] if n not in out]
        if missing:
            problems.append(f"outputs are [{_fmt(outputs)}], missing {missing}")
        elif task == "segmentation":
            lab = out["labels"]
            if not (lab.dtype.startswith("int") or lab.dtype.startswith("uint")):
                problems.append(f"output 'labels' is {lab.dtype}, expected an integer type "
                                "(the argmax class ids; name float scores 'logits')")
            if len(lab.shape) != 3:
                problems.append(f"output 'labels' has rank {len(lab.shape)}, expected 3 "
                                "(N, H, W)")
            conf = out.get("confidence")
            if conf is not None and (not conf.dtype.startswith("float") or len(conf.shape) != 3):
                problems.append(f"output {conf} does not fit 'confidence' float32 (N, H, W)")
        else:
            box, score, lab = out["boxes"], out["scores"], out["labels"]
            if box.dtype != "float32" or len(box.shape) not in (2, 3) or (
                    isinstance(box.shape[-1], int) and box.shape[-1] not in (-1, 4)):
                problems.append(f"output {box} does not fit 'boxes' float32 (D, 4)")
            if score.dtype != "float32" or len(score.shape) not in (1, 2):
                problems.append(f"output {score} does not fit 'scores' float32 (D,)")
            if not lab.dtype.startswith("int") or len(lab.shape) not in (1, 2):
                problems.append(f"output {lab} does not fit 'labels' int64 (D,)")
    if problems:
        raise ModelFileError(
            f"{source} does not fit the {task} contract: " + "; ".join(problems)
            + f". Expected {EXPECTED_TEXT[task]}. Export models with "
            "`fcn-perception export` to get a graph in this form."
        )
