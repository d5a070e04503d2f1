"""How to build a TensorRT engine with the TensorRT that is installed: a pure decision.

TensorRT 10 and 11 differ in how precision is chosen:

* TensorRT 10 (JetPack 6 ships 10.3) is *weakly typed* by default: ``BuilderFlag.FP16``
  and ``BuilderFlag.INT8`` let the builder pick lower precisions, and implicit INT8
  needs a calibrator.  It can also build *strongly typed* networks
  (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), where the ONNX graph's own
  types decide.
* TensorRT 11 is always strongly typed: the FP16/INT8 builder flags and the INT8
  calibrators are gone, and ``STRONGLY_TYPED`` is "Deprecated in TensorRT 11.0.
  Strongly typed mode is always enabled".

So precision comes from the ONNX variant that is built:

========  ==============  =====================================================
precision  ONNX variant   how
========  ==============  =====================================================
fp32      ``fp32``        strongly typed (``STRONGLY_TYPED`` where it is a choice)
fp16      ``fp16``        :mod:`fcn_perception.inference.fp16`: fp16 trunk, fp32
                          post-processing; strongly typed
int8      ``int8-qdq``    explicit Q/DQ (:mod:`fcn_perception.inference.quantize`,
                          TensorRT format: symmetric int8, fp32 bias); strongly typed
========  ==============  =====================================================

Strong typing on TensorRT 10 too keeps what the graph keeps in fp32 (softmax, PSRoI's
cumulative sums, box decoding, NMS) in fp32; weakly typed with ``BuilderFlag.FP16`` the
builder could run them in fp16.  The weak-typing flags (``FP16``; ``INT8`` for Q/DQ)
are used only by a TensorRT that cannot type strongly (older than 9, which the backend
does not otherwise support).

No calibrator is ever used (int8 ranges are in the Q/DQ graph), and nothing parses
version strings: :class:`TensorRTApi` records which names the module has, and
:func:`build_plan` decides from those.  Both are plain data, so the decision is tested
against the names of the real TensorRT 10.3 and 11.4 bindings (``test/data/tensorrt_api``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fcn_perception.inference.engine_cache import Profile

PRECISIONS = ("fp32", "fp16", "int8")
VARIANTS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-qdq"}

#: the names this package may consult, per TensorRT class (``module``: top level);
#: test_tensorrt_plan.py checks that the backend uses no other
CANDIDATES = {
    "module": ("Builder", "Runtime", "Logger", "OnnxParser", "IOutputAllocator",
               "BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType",
               "TensorIOMode", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "nptype"),
    "BuilderFlag": ("FP16", "INT8", "TF32", "OBEY_PRECISION_CONSTRAINTS",
                    "PREFER_PRECISION_CONSTRAINTS"),
    "NetworkDefinitionCreationFlag": ("EXPLICIT_BATCH", "STRONGLY_TYPED"),
    "MemoryPoolType": ("WORKSPACE",),
    "TensorIOMode": ("INPUT",),
    "Builder": ("create_network", "create_builder_config", "create_optimization_profile",
                "build_serialized_network"),
    "INetworkDefinition": ("num_inputs", "num_outputs", "get_input", "get_output"),
    "OnnxParser": ("parse", "num_errors", "get_error"),
    "IOptimizationProfile": ("set_shape",),
    "IBuilderConfig": ("set_flag", "set_memory_pool_limit", "add_optimization_profile",
                       "create_timing_cache", "set_timing_cache", "get_timing_cache",
                       "int8_calibrator", "set_calibration_profile"),
    "Runtime": ("deserialize_cuda_engine",),
    "IExecutionContext": ("execute_async_v3", "set_tensor_address", "set_input_shape",
                          "set_output_allocator", "get_tensor_shape"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode",
                    "get_tensor_dtype", "get_tensor_shape", "get_tensor_profile_shape",
                    "create_execution_context"),
}
#: what the backend cannot work without (TensorRT >= 10's name-based I/O API)
REQUIRED = {
    "module": ("Builder", "Runtime", "Logger", "OnnxParser", "MemoryPoolType", "TensorIOMode",
               "nptype"),
    "Builder": CANDIDATES["Builder"],
    "INetworkDefinition": CANDIDATES["INetworkDefinition"],
    "OnnxParser": CANDIDATES["OnnxParser"],
    "IBuilderConfig": ("set_flag", "set_memory_pool_limit", "add_optimization_profile",
                       "create_timing_cache", "set_timing_cache", "get_timing_cache"),
    "Runtime": CANDIDATES["Runtime"],
    "IExecutionContext": ("execute_async_v3", "set_tensor_address", "set_input_shape"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode",
                    "get_tensor_dtype", "get_tensor_profile_shape"),
}


@dataclass(frozen=True)
class TensorRTApi:
    """Which of :data:`CANDIDATES` a TensorRT module has (``names[class]``), and its
    version (for messages and the engine key only, never for decisions)."""

    version: str
    names: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_names(cls, version: str, names: dict[str, list[str]]) -> TensorRTApi:
        return cls(str(version), {k: frozenset(names.get(k, ())) for k in CANDIDATES})

    @classmethod
    def from_module(cls, trt) -> TensorRTApi:
        """Read the names from an imported ``tensorrt`` module."""
        found = {}
        for owner, candidates in CANDIDATES.items():
            obj = trt if owner == "module" else getattr(trt, owner, None)
            if obj is None:
                found[owner] = frozenset()
            elif hasattr(obj, "__members__"):  # pybind11 enums
                found[owner] = frozenset(n for n in candidates if n in obj.__members__)
            else:
                found[owner] = frozenset(n for n in candidates if hasattr(obj, n))
        return cls(str(getattr(trt, "__version__", "?")), found)

    def has(self, owner: str, name: str) -> bool:
        return name in self.names.get(owner, ())

    @property
    def weakly_typed(self) -> bool:
        """The builder may choose lower precisions itself (``BuilderFlag.FP16`` exists)."""
        return self.has("BuilderFlag", "FP16")

    @property
    def strongly_typed(self) -> bool:
        """Networks can be strongly typed: always (no weak typing) or on request."""
        return not self.weakly_typed or self.has("NetworkDefinitionCreationFlag",
                                                 "STRONGLY_TYPED")

    def missing(self) -> list[str]:
        """``Class.name`` of every :data:`REQUIRED` name this module lacks."""
        return [f"{owner}.{n}" if owner != "module" else n
                for owner, names in REQUIRED.items() for n in names if not self.has(owner, n)]


@dataclass(frozen=True)
class BuildPlan:
    """What :func:`~fcn_perception.inference.backends.tensorrt_backend.build_engine` does.

    ``onnx_variant``: which ONNX is parsed (``fp32``, ``fp16``, ``int8-qdq``);
    ``network_flags``: ``NetworkDefinitionCreationFlag`` names; ``builder_flags``:
    ``BuilderFlag`` names; ``typing``: ``strong`` or ``weak``; ``profile``: the
    optimisation profile of input ``image``.
    """

    precision: str
    onnx_variant: str
    typing: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    profile: Profile

    def key_fields(self) -> dict:
        """The plan's part of the engine-cache key."""
        return {"onnx_variant": self.onnx_variant, "typing": self.typing,
                "network_flags": list(self.network_flags),
                "builder_flags": list(self.builder_flags)}

    def describe(self) -> str:
        flags = [f"NetworkDefinitionCreationFlag.{f}" for f in self.network_flags]
        flags += [f"BuilderFlag.{f}" for f in self.builder_flags]
        return (f"{self.precision} from the {self.onnx_variant} ONNX, {self.typing}ly typed"
                f"{' (' + ', '.join(flags) + ')' if flags else ''}, profile {self.profile}")


def build_plan(api: TensorRTApi, precision: str, profile: Profile) -> BuildPlan:
    """The plan for ``precision`` with the TensorRT that ``api`` describes.

    Raises ValueError for an unknown precision or a TensorRT that lacks what the
    backend needs (:meth:`TensorRTApi.missing`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    missing = api.missing()
    if missing:
        raise ValueError(f"TensorRT {api.version} lacks {', '.join(missing)}: the tensorrt "
                         "backend needs TensorRT 10.3 or newer")
    variant = VARIANTS[precision]
    if api.strongly_typed:
        # the graph's types decide, so the fp32 post-processing stays fp32 (weak typing
        # with FP16 could run softmax, PSRoI's cumulative sums or NMS in fp16).
        # STRONGLY_TYPED is requested only where typing is a choice: TensorRT 11
        # deprecates it (always on).
        flags = ("STRONGLY_TYPED",) if api.weakly_typed else ()
        return BuildPlan(precision, variant, "strong", flags, (), profile)
    # a TensorRT without strong typing (older than 9): the weak-typing flags
    if precision == "fp16":
        return BuildPlan(precision, "fp32", "weak", (), ("FP16",), profile)
    if precision == "int8":  # explicit Q/DQ still needs INT8 in weak typing
        return BuildPlan(precision, variant, "weak", (), ("INT8",), profile)
    return BuildPlan(precision, variant, "weak", (), (), profile)
