"""How ONNX Runtime's CPU provider evaluates an int8 Q/DQ graph, so that it agrees with
fp32 on every x86 CPU.

With its default settings ONNX Runtime fuses ``DequantizeLinear -> Conv ->
QuantizeLinear`` into int8 kernels.  On x86 CPUs without VNNI (AVX2 only: e.g. AMD EPYC
before Zen 4, Intel before Cascade Lake) those kernels multiply uint8 by int8 with
``vpmaddubsw``, whose 16-bit intermediate saturates.  Measured on an AMD EPYC (AVX2, no
AVX-512/VNNI), onnxruntime 1.32, the shipped FCN-8s Lite0 on CamVid val: the TensorRT
format (int8 activations) agreed with fp32 on 0.77 of the labels, the ONNX Runtime format
(uint8 activations) on 0.977; the same CPU with either of the two settings below: 0.985
and 0.988.  On a CPU with VNNI the default kernels were exact: a check that passes there
says nothing about an AVX2 machine.

Two arithmetics, both exact on every x86 CPU:

``float-qdq``     ONNX Runtime's Q/DQ fusion off (``session.disable_quant_qdq``): every
                  QuantizeLinear / DequantizeLinear runs as its own float op and the
                  convolutions run in fp32 on the de-quantised values; the fp32 graph
                  optimisations stay on.  This is TensorRT's int8 arithmetic (int8
                  products summed exactly in int32, then rescaled) up to fp32 rounding, so
                  the TensorRT-format graph -- made for TensorRT -- is run and checked
                  this way.  Not faster than fp32 on the CPU.
``int8-kernels``  the fused int8 kernels with ``session.x64quantprecision`` (ONNX Runtime's
                  switch from U8S8 to U8U8 multiplication on x64 CPUs without VNNI; no
                  effect on CPUs with VNNI): the fast CPU path, for the ONNX Runtime format
                  (``--int8-format onnxruntime``, what the onnxruntime-cpu backend
                  quantises to itself).

:func:`configure_session` applies the one a graph's format calls for; the onnxruntime
backend (``int8_arithmetic``), ``fcn-perception export --check-images`` and
scripts/precision_parity.py name it beside their numbers.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("fcn_perception.inference")

FLOAT_QDQ = "float-qdq"
INT8_KERNELS = "int8-kernels"
ARITHMETICS = {
    FLOAT_QDQ: "Q/DQ evaluated in float, as TensorRT computes it (ONNX Runtime CPU, QDQ "
               "fusion off)",
    INT8_KERNELS: "ONNX Runtime's int8 CPU kernels, U8U8 where the CPU has no VNNI "
                  "(session.x64quantprecision)",
}
#: the int8 graph format (fcn_perception.int8_format metadata) -> how the CPU runs it
FOR_FORMAT = {"tensorrt": FLOAT_QDQ, "onnxruntime": INT8_KERNELS}
_SESSION_CONFIG = {FLOAT_QDQ: {"session.disable_quant_qdq": "1"},
                   INT8_KERNELS: {"session.x64quantprecision": "1"}}
_told: set[str] = set()  # files whose TensorRT format was explained (log once per file)


def int8_format(proto) -> str | None:
    """``"tensorrt"`` (int8 activations), ``"onnxruntime"`` (uint8 activations) or None
    (no QuantizeLinear: not an int8 Q/DQ graph) for an ``onnx.ModelProto`` (weights need
    not be loaded).  Our exports say it in their metadata; other files are recognised by
    their activation zero points' type (none given: uint8, the ONNX default)."""
    from onnx import TensorProto

    from fcn_perception.inference.quantize import FORMAT_KEY

    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(FORMAT_KEY) in FOR_FORMAT:
        return meta[FORMAT_KEY]
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    signed = None
    for node in proto.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        zp = node.input[2] if len(node.input) > 2 else ""
        signed = bool(signed) or inits.get(zp, TensorProto.UINT8) == TensorProto.INT8
    if signed is None:
        return None
    return "tensorrt" if signed else "onnxruntime"


def configure_session(options, fmt: str, path: str | Path | None = None) -> str:
    """Set ONNX Runtime ``options`` (a ``SessionOptions``) to run an int8 graph of format
    ``fmt`` exactly (see the module docstring); return the arithmetic's name.  Logs once
    per file what it does with a TensorRT-format graph and how to get the fast one."""
    arithmetic = FOR_FORMAT[fmt]
    for key, value in _SESSION_CONFIG[arithmetic].items():
        options.add_session_config_entry(key, value)
    name = str(Path(path).resolve()) if path is not None else "the graph"
    if fmt == "tensorrt" and name not in _told:
        _told.add(name)
        log.info("%s is int8 in the TensorRT format (signed activations): onnxruntime-cpu "
                 "evaluates its Q/DQ in float, as TensorRT computes it (agrees with fp32; "
                 "not faster than fp32). Fast CPU int8: `fcn-perception export --precision "
                 "int8 --int8-format onnxruntime`", Path(name).name)
    return arithmetic
