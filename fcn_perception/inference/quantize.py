"""INT8 by explicit quantisation: a calibrated Q/DQ ONNX graph, for ONNX Runtime or
TensorRT.

:func:`quantized_onnx` calibrates activation ranges on a folder of images
(:mod:`fcn_perception.inference.calibration`), then inserts ``QuantizeLinear`` /
``DequantizeLinear`` pairs with ``onnxruntime.quantization.quantize_static``: per-channel
int8 weights, per-tensor activations.  Only the convolutional trunk is quantised -- the
nodes :func:`fcn_perception.inference.fp16.fp16_nodes` puts in fp16 -- so the argmax
input, box decoding, PSRoI pooling, softmax and NMS stay float32.

Two formats of the same quantisation, because the two runtimes want different ones:

``tensorrt``     int8 activations with zero point 0 (symmetric) and fp32 biases:
                 TensorRT (10 and 11) accepts only symmetric int8 Q/DQ on the GPU.  ONNX
                 Runtime's CPU backend evaluates its Q/DQ in float, as TensorRT computes
                 it (:mod:`fcn_perception.inference.int8_cpu`: its fused int8 kernels
                 lose a quarter of the labels on CPUs without VNNI); not faster than fp32.
``onnxruntime``  uint8 activations (asymmetric) and int32 biases: what ONNX Runtime's
                 CPU kernels fuse into QLinearConv (its fast path, run with U8U8
                 multiplication on CPUs without VNNI); TensorRT rejects it
                 (:func:`tensorrt_problems` says why).

Quantisation changes the numbers: compare with fp32 before use (``fcn-perception
export --precision int8 --check-images DIR``, :mod:`fcn_perception.inference.agreement`).
Detection is not quantised: int8 R-FCN reproduced too few of fp32's boxes at IoU >= 0.9
(``scripts/precision_parity.py`` measures it, docs/onnx_precision.json); fp16 does.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import onnx

from fcn_perception.inference.calibration import (
    DEFAULT_LIMIT,
    DEFAULT_METHOD,
    METHODS,
    CalibrationBatches,
    list_images,
)
from fcn_perception.inference.fp16 import PRECISION_KEY, fp16_nodes
from fcn_perception.inference.preprocess import InputSpec

log = logging.getLogger("fcn_perception.inference")

FORMATS = ("tensorrt", "onnxruntime")
#: tasks whose int8 graphs agree with fp32 well enough (see the module docstring)
INT8_TASKS = ("segmentation",)
FORMAT_KEY = "fcn_perception.int8_format"
CALIBRATION_KEY = "fcn_perception.calibration"
QUANTIZE_VERSION = 2  # bump when the quantised graph changes for the same inputs


def _settings(fmt: str) -> dict:
    from onnxruntime.quantization import QuantType

    if fmt == "tensorrt":
        return {"activation_type": QuantType.QInt8,
                "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True,
                                  "QuantizeBias": False}}
    return {"activation_type": QuantType.QUInt8,
            "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True}}


def quantized_onnx(onnx_path: str | Path, calibration_images: str | Path, spec: InputSpec,
                   method: str = DEFAULT_METHOD, limit: int = DEFAULT_LIMIT,
                   output: str | Path | None = None, fmt: str = "onnxruntime",
                   directory: str | Path | None = None) -> Path:
    """The int8 Q/DQ version of fp32 ``onnx_path``, calibrated on ``calibration_images``.

    Written to ``output``, else cached in ``directory`` (default: the ONNX cache folder)
    as ``<stem>-int8-<fmt>-<key>.onnx``, keyed by the fp32 model's sha256, the
    calibration frames, the method and the format.  ``fmt``: ``tensorrt`` or
    ``onnxruntime`` (see the module docstring).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fcn_perception.card import sha256_of
    from fcn_perception.inference.export import cache_dir

    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    if fmt not in FORMATS:
        raise ValueError(f"int8 format must be one of {FORMATS}, got {fmt!r}")
    onnx_path = Path(onnx_path)
    images = list_images(calibration_images, limit)
    hw = spec.size
    if hw is None:  # native-size network: calibrate at the first image's size
        from PIL import Image

        with Image.open(images[0]) as im:
            hw = (im.height, im.width)
    batches = CalibrationBatches(images, spec, hw)
    fingerprint = batches.fingerprint(method)
    key = hashlib.sha256(f"{sha256_of(onnx_path)}|{fingerprint}|{fmt}|{QUANTIZE_VERSION}"
                         .encode()).hexdigest()
    folder = Path(directory) if directory else cache_dir("onnx")
    path = Path(output) if output else folder / f"{onnx_path.stem}-int8-{fmt}-{key[:16]}.onnx"
    if path.is_file() and not output:
        return path
    log.info("quantising %s to int8 for %s (%s calibration on %d images at %dx%d)",
             onnx_path.name, fmt, method, len(images), *hw)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    pre = tmp.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        for i, node in enumerate(model.graph.node):  # the trunk is selected by node name
            node.name = node.name or f"node_{i}_{node.op_type}"
        onnx.save(model, str(pre))
        trunk = [model.graph.node[i].name for i in sorted(fp16_nodes(model))]
        quantize_static(
            str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
            weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=trunk,
            calibrate_method={"minmax": CalibrationMethod.MinMax,
                              "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            **_settings(fmt))
        _copy_metadata(onnx_path, tmp, {PRECISION_KEY: "int8", FORMAT_KEY: fmt,
                                        CALIBRATION_KEY: f"{method}:{fingerprint}"})
        os.replace(tmp, path)
    finally:
        for p in (tmp, pre):
            p.unlink(missing_ok=True)
    return path


def int8_needs_a_quantized_onnx(path: str | Path) -> str:
    """What to do when int8 is asked of a float model and no calibration frames were
    given (a node has no parameter for them: it runs a quantised file)."""
    return (f"int8 runs a calibrated int8 ONNX and {Path(path).name} is not one: make it "
            "with `fcn-perception export --weights W --precision int8 --calibration-images "
            "DIR` (frames like the ones it will see) and run that file (a node's model "
            "parameter, load_predictor's weights), or give the frames to the command that "
            "takes them (`fcn-perception build-engine --calibration-images DIR`, "
            "load_predictor(..., calibration_images=DIR))")


def check_int8_task(task: str | None) -> None:
    """Raise ValueError when ``task`` has no int8 path (detection).  Called where users ask
    for int8 (export, build-engine, the onnxruntime and tensorrt backends);
    :func:`quantized_onnx` itself quantises any graph (scripts/precision_parity.py
    measures the detector's)."""
    if task is not None and task not in INT8_TASKS:
        raise ValueError(
            f"int8 is for {', '.join(INT8_TASKS)} only: the int8 {task} graph reproduces too "
            "few of fp32's boxes at IoU >= 0.9 (docs/onnx_precision.json); use fp16 (TensorRT) "
            "or fp32")


def _copy_metadata(src: Path, dst: Path, extra: dict[str, str]) -> None:
    meta = onnx.load(str(src), load_external_data=False).metadata_props
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    for p in meta:
        if p.key not in extra:
            entry = model.metadata_props.add()
            entry.key, entry.value = p.key, p.value
    for key, value in extra.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))


def tensorrt_problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT cannot build ``model``'s Q/DQ nodes (empty when it can): TensorRT
    takes int8 (or fp8/int4) Q/DQ with zero points 0 only, and no int32 (bias) input."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None:
            if zp.data_type == TensorProto.UINT8:
                problems.append(f"{node.name}: uint8 zero point")
            elif numpy_helper.to_array(zp).any():
                problems.append(f"{node.name}: non-zero zero point")
        src = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and src is not None \
                and src.data_type == TensorProto.INT32:
            problems.append(f"{node.name}: int32 input (a quantised bias)")
    return problems
