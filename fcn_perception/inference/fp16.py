"""fp16 ONNX: the convolutional trunk in half precision, the numerically sensitive rest
in float32.

:func:`convert_to_fp16` rewrites an exported fp32 graph (``image`` float32 in, the
contract's outputs out, unchanged) so that

* every node from which a convolution can be reached through float tensors -- the
  backbone, the neck, the FCN score layers, the RPN and position-sensitive convs --
  computes in float16, with its weights stored in float16;
* everything after the last convolutions stays float32: the argmax input of the
  segmentation graph, the RPN's box decoding and NMS, PSRoI pooling (an integral
  image: a cumulative sum, far too long for fp16's 11-bit mantissa), voting, softmax,
  box decoding and the per-class NMS of the detector;
* ``Cast`` nodes sit exactly on the edges between the two regions (one per tensor).

The result is what TensorRT builds *strongly typed* (TensorRT 10's
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, TensorRT 11's only mode): the graph's
own types decide each layer's precision.  ONNX Runtime's CPU provider runs it too (its
fp16 Conv, Clip, Add, Resize kernels), which is how the tests check it against fp32.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRECISION_KEY = "fcn_perception.precision"
FP16_VERSION = 1  # bump when the conversion changes
TRUNK_OPS = {"Conv", "ConvTranspose"}
#: ops allowed in the fp16 region (all have float16 kernels in ONNX and TensorRT)
FP16_OPS = TRUNK_OPS | {
    "Add", "Sub", "Mul", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish",
    "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Pad",
    "Resize", "DepthToSpace", "SpaceToDepth", "Slice", "Reshape", "Transpose", "Flatten",
    "Squeeze", "Unsqueeze", "Split", "Identity", "Gemm", "MatMul",
}
#: ops that read only their input's shape: never given a cast
SHAPE_OPS = {"Shape", "Size"}
#: float inputs that are data (converted); the others (Resize's roi and scales) stay float32
DATA_INPUTS = {"Resize": (0,), "Pad": (0, 2), "Clip": (0, 1, 2)}


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the float32 tensors of ``model`` (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    names = {v.name for v in (*g.value_info, *g.input, *g.output)
             if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    names |= {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}
    for node in g.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and value.data_type == TensorProto.FLOAT:
                names.add(node.output[0])
    return names


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    idx = DATA_INPUTS.get(node.op_type)
    return [name for i, name in enumerate(node.input)
            if name and (idx is None or i in idx)]


def fp16_nodes(model: onnx.ModelProto) -> set[int]:
    """Indices of the nodes that run in float16: the convolutions and every node of
    :data:`FP16_OPS` that feeds one through float tensors."""
    graph = model.graph
    floats = _float_tensors(model)
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output}
    chosen: set[int] = set()
    stack = [i for i, n in enumerate(graph.node) if n.op_type in TRUNK_OPS]
    while stack:
        i = stack.pop()
        if i in chosen:
            continue
        chosen.add(i)
        for name in _data_inputs(graph.node[i]):
            j = producer.get(name)
            if j is not None and name in floats and graph.node[j].op_type in FP16_OPS:
                stack.append(j)
    return chosen


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of fp32 ``model`` (see the module docstring); I/O types unchanged."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    floats = _float_tensors(model)
    half = fp16_nodes(model)
    nodes = list(graph.node)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in nodes if n.op_type == "Constant"}
    outputs = {o.name for o in graph.output}

    def only_fp16_data(name: str) -> bool:
        """Every use of ``name`` is a data input of an fp16 node (and not a graph output)."""
        return name not in outputs and all(
            (j in half and name in _data_inputs(nodes[j])) or nodes[j].op_type in SHAPE_OPS
            for j in consumers.get(name, []))

    # 1. constants used only as fp16 data become float16 themselves
    converted = set()
    for name in {x for i in half for x in _data_inputs(nodes[i]) if x in floats}:
        if not only_fp16_data(name):
            continue
        if name in inits:
            inits[name].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(inits[name]).astype(np.float16), name))
            converted.add(name)
        elif name in constants:
            attr = next(a for a in constants[name].attribute if a.name == "value")
            attr.t.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
            converted.add(name)
    is_fp16 = {name for i in half for name in nodes[i].output if name in floats} | converted

    # 2. casts on the boundary edges, emitted in topological order
    new_nodes: list[onnx.NodeProto] = []
    to_half: dict[str, str] = {}
    to_float: dict[str, str] = {}
    renamed_outputs: dict[str, str] = {}

    def cast(src: str, dst: str, to: int) -> None:
        new_nodes.append(helper.make_node("Cast", [src], [dst], to=to, name=f"{dst}_cast"))

    for i, node in enumerate(nodes):
        data = set(_data_inputs(node))
        for k, name in enumerate(node.input):
            if name not in floats or node.op_type in SHAPE_OPS:
                continue
            if i in half and name in data and name not in is_fp16:
                if name not in to_half:
                    to_half[name] = f"{name}__fp16"
                    cast(name, to_half[name], TensorProto.FLOAT16)
                node.input[k] = to_half[name]
            elif (i not in half or name not in data) and name in is_fp16:
                if name not in to_float:
                    to_float[name] = f"{name}__fp32"
                    cast(name, to_float[name], TensorProto.FLOAT)
                node.input[k] = to_float[name]
        new_nodes.append(node)
        for k, name in enumerate(node.output):
            if name in outputs and name in is_fp16:  # keep the output's name and type
                node.output[k] = renamed_outputs[name] = f"{name}__fp16"
                cast(node.output[k], name, TensorProto.FLOAT)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    entry = next((p for p in model.metadata_props if p.key == PRECISION_KEY), None)
    if entry is None:
        entry = model.metadata_props.add()
        entry.key = PRECISION_KEY
    entry.value = "fp16"
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def precision_of(model: onnx.ModelProto) -> str:
    """``fp32``, ``fp16`` or ``int8``: what the graph computes in (its metadata, else
    its contents: QuantizeLinear nodes, float16 initializers)."""
    for p in model.metadata_props:
        if p.key == PRECISION_KEY:
            return p.value
    ops = {n.op_type for n in model.graph.node}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops:
        return "int8"
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"
