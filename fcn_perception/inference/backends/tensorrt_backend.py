"""TensorRT backend (TensorRT 10.3+ and 11.x): build an engine from the ONNX export,
cache it, run it.

Which ONNX is built and with which flags is decided by
:func:`fcn_perception.inference.tensorrt_plan.build_plan` from what the installed
``tensorrt`` module has (:class:`~fcn_perception.inference.tensorrt_plan.TensorRTApi`),
never from its version string: fp16 builds the fp16 ONNX
(:mod:`fcn_perception.inference.fp16`) and int8 the Q/DQ ONNX in TensorRT format
(:mod:`fcn_perception.inference.quantize`), both strongly typed (TensorRT 10 asked with
``STRONGLY_TYPED``, TensorRT 11 always); no implicit calibrator is used.

Build (:func:`get_engine`, :func:`build_engine`): ``trt.Builder`` -> network parsed by
``trt.OnnxParser`` -> ``IBuilderConfig`` with the optimisation profile (batch and
height/width ranges) and a persistent timing cache; the serialized engine is cached by
:mod:`fcn_perception.inference.engine_cache` under a key that names the ONNX variant.

Run (:class:`TensorRTBackend`): torch CUDA tensors on the chosen GPU are the I/O buffers
(``set_tensor_address``), ``execute_async_v3`` on a private CUDA stream; the image is
uploaded as uint8 and normalised on the GPU.  I/O tensor names, dtypes and ranks are
checked against the task contract when the engine is loaded.

TensorRT is optional: everything imports it lazily, and :func:`tensorrt_unavailable`
says why it cannot be used here.  None of this has run on a GPU in this project yet
(see the README's "GPU and TensorRT status" and ``scripts/gpu_check.sh``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fcn_perception.errors import BackendUnavailable, ModelFileError
from fcn_perception.inference import engine_cache as ec
from fcn_perception.inference.backends import Backend, cuda_available
from fcn_perception.inference.calibration import DEFAULT_LIMIT, DEFAULT_METHOD
from fcn_perception.inference.contract import TensorSpec, validate_io
from fcn_perception.inference.preprocess import InputSpec, network_input_torch
from fcn_perception.inference.tensorrt_plan import BuildPlan, TensorRTApi, build_plan

log = logging.getLogger("fcn_perception.inference")

DEFAULT_WORKSPACE = 2 << 30


def tensorrt_unavailable() -> str | None:
    """None when a TensorRT with the API this backend uses and a CUDA GPU are usable,
    else the reason."""
    try:
        import tensorrt as trt
    except ImportError:
        return "the tensorrt Python package is not installed (pip install tensorrt)"
    except Exception as exc:  # broken CUDA libraries surface here
        return f"tensorrt failed to import ({type(exc).__name__}: {exc})"
    missing = TensorRTApi.from_module(trt).missing()
    if missing:
        return (f"TensorRT {trt.__version__} lacks {', '.join(missing)} (this backend needs "
                "TensorRT 10.3 or newer)")
    if not cuda_available():
        return "no CUDA GPU is visible to torch"
    return None


def _require_tensorrt():
    reason = tensorrt_unavailable()
    if reason:
        raise BackendUnavailable(f"tensorrt: {reason}")
    import tensorrt as trt

    return trt


def device_fields(gpu: int | None = None) -> tuple[str, str, str]:
    """``(TensorRT version, GPU name, compute capability)`` of GPU ``gpu`` (default: the
    current one)."""
    import tensorrt as trt
    import torch

    index = torch.cuda.current_device() if gpu is None else int(gpu)
    major, minor = torch.cuda.get_device_capability(index)
    return trt.__version__, torch.cuda.get_device_name(index), f"{major}.{minor}"


_LOGGER = None


def _logger():
    global _LOGGER
    import tensorrt as trt

    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _np_dtype_name(trt_dtype) -> str:
    import tensorrt as trt

    return np.dtype(trt.nptype(trt_dtype)).name


def _flag_bits(enum, names) -> int:
    bits = 0
    for name in names:
        bits |= 1 << int(getattr(enum, name))
    return bits


def build_engine(onnx_path: str | Path, plan: BuildPlan, timing_cache: str | Path | None = None,
                 workspace: int = DEFAULT_WORKSPACE, task: str | None = None) -> bytes:
    """Parse ``onnx_path`` (the plan's ONNX variant) and build a serialized engine."""
    trt = _require_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX file {onnx_path} does not exist")
    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_flag_bits(trt.NetworkDefinitionCreationFlag,
                                                plan.network_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    if task is not None:
        ins = [network.get_input(i) for i in range(network.num_inputs)]
        outs = [network.get_output(i) for i in range(network.num_outputs)]
        validate_io(task,
                    [TensorSpec(t.name, _np_dtype_name(t.dtype), tuple(t.shape)) for t in ins],
                    [TensorSpec(t.name, _np_dtype_name(t.dtype), tuple(t.shape)) for t in outs],
                    f"ONNX file {onnx_path}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape("image", *plan.profile.shapes())
    config.add_optimization_profile(opt_profile)
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    log.info("building a TensorRT engine: %s; this takes minutes once", plan.describe())
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} "
                           "(see the TensorRT log above)")
    if timing_cache is not None:
        data = bytes(config.get_timing_cache().serialize())
        tmp = Path(timing_cache).with_name(f".{Path(timing_cache).name}.{os.getpid()}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, timing_cache)
    return bytes(serialized)


def plan_onnx(onnx_path: str | Path, plan: BuildPlan, card: dict,
              calibration_images: str | Path | None = None, calibrator: str = DEFAULT_METHOD,
              calibration_limit: int = DEFAULT_LIMIT) -> Path:
    """The ONNX file the plan builds, made from ``onnx_path`` when that is fp32.

    An ONNX that already is the plan's variant is used as it is (an int8 one must be in
    TensorRT's Q/DQ format); fp16 is converted from fp32 once and cached; int8 is
    quantised from fp32 on ``calibration_images`` (cached by the frames and method).
    """
    from fcn_perception.inference.export import fp16_onnx, load_onnx_proto, onnx_variant
    from fcn_perception.inference.quantize import quantized_onnx, tensorrt_problems

    onnx_path = Path(onnx_path)
    have = onnx_variant(onnx_path)
    if have == plan.onnx_variant:
        if have == "int8-qdq":
            problems = tensorrt_problems(load_onnx_proto(onnx_path))
            if problems:
                raise ModelFileError(
                    f"{onnx_path} is a Q/DQ ONNX that TensorRT cannot build ({problems[0]}; "
                    f"{len(problems)} such nodes): it is in ONNX Runtime's format. Export "
                    "it with `fcn-perception export --precision int8 --int8-format tensorrt`, "
                    "or give the fp32 ONNX and --calibration-images")
        return onnx_path
    if have != "fp32":
        raise ModelFileError(
            f"{onnx_path} is a {have} ONNX, but a {plan.precision} engine builds the "
            f"{plan.onnx_variant} one: give the fp32 export (`fcn-perception export`)")
    if plan.onnx_variant == "fp16":
        return fp16_onnx(onnx_path)
    if calibration_images is None:
        from fcn_perception.inference.quantize import int8_needs_a_quantized_onnx

        raise ValueError(int8_needs_a_quantized_onnx(onnx_path))
    return quantized_onnx(onnx_path, calibration_images, InputSpec.from_card(card),
                          calibrator, calibration_limit, fmt="tensorrt")


def get_engine(onnx_path: str | Path, precision: str = "fp16", profile: ec.Profile | None = None,
               card: dict | None = None, task: str | None = None,
               cache_dir: str | Path | None = None, output: str | Path | None = None,
               calibration_images: str | Path | None = None, calibrator: str = DEFAULT_METHOD,
               calibration_limit: int = DEFAULT_LIMIT, rebuild: bool = False,
               workspace: int = DEFAULT_WORKSPACE, gpu: int | None = None
               ) -> tuple[Path, bool, str | None]:
    """The engine for ``onnx_path``: reused from the cache when its key matches, else built.

    Returns ``(engine path, built, reason it was built or None)``.
    """
    import torch

    from fcn_perception.card import sha256_of
    from fcn_perception.inference.export import cache_dir as default_cache

    trt = _require_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX file {onnx_path} does not exist")
    card = card or {}
    task = task or card.get("task")
    profile = profile or ec.Profile.for_card(card)
    if task == "detection" and profile.max_batch != 1:
        raise ValueError("detection engines take batch 1 only (profile max_batch 1)")
    if precision == "int8":
        from fcn_perception.inference.quantize import check_int8_task

        check_int8_task(task)
    plan = build_plan(TensorRTApi.from_module(trt), precision, profile)
    source = plan_onnx(onnx_path, plan, card, calibration_images, calibrator,
                       calibration_limit)
    folder = Path(cache_dir) if cache_dir else default_cache("engines")
    trt_version, gpu_name, cc = device_fields(gpu)
    fields = ec.engine_key(sha256_of(source), trt_version, gpu_name, cc, precision, profile,
                           plan.onnx_variant, plan.key_fields())
    path = Path(output) if output else ec.engine_path(folder, source, fields)
    reason = "rebuild requested" if rebuild else ec.rebuild_reason(path, fields)
    if reason is None:
        log.info("TensorRT engine %s is up to date", path)
        return path, False, None
    log.info("building TensorRT engine %s: %s", path, reason)
    with torch.cuda.device(torch.cuda.current_device() if gpu is None else int(gpu)):
        data = build_engine(source, plan, ec.timing_cache_path(folder, trt_version, gpu_name),
                            workspace, task)
    ec.write_engine(path, data, fields, card=card or None,
                    extra={"onnx": str(source), "plan": plan.describe()})
    return path, True, reason


class _OutputAllocator:
    """Factory for a ``trt.IOutputAllocator`` backed by a growing torch CUDA buffer
    (used for outputs whose shape is only known after execution)."""

    @staticmethod
    def create(device):
        import tensorrt as trt
        import torch

        class Allocator(trt.IOutputAllocator):
            def __init__(self) -> None:
                trt.IOutputAllocator.__init__(self)
                self.buffer = None
                self.shape = None

            def reallocate_output(self, tensor_name, memory, size, alignment):
                if self.buffer is None or self.buffer.numel() < size:
                    self.buffer = torch.empty(max(int(size), 1), dtype=torch.uint8,
                                              device=device)
                return self.buffer.data_ptr()

            def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
                return self.reallocate_output(tensor_name, memory, size, alignment)

            def notify_shape(self, tensor_name, shape):
                self.shape = tuple(shape)

        return Allocator()


class TensorRTBackend(Backend):
    """Run a serialized TensorRT engine that follows the task contract, on GPU ``gpu``
    (default: the current CUDA device)."""

    def __init__(self, engine_path: str | Path, task: str, spec: InputSpec,
                 precision: str | None = None, gpu: int | None = None) -> None:
        trt = _require_tensorrt()
        import torch

        self.torch = torch
        self.path = Path(engine_path)
        self.task = task
        self.spec = spec
        self.name = "tensorrt"
        self.device = torch.device("cuda", torch.cuda.current_device() if gpu is None
                                   else int(gpu))
        meta = ec.read_sidecar(self.path) or {}
        self.precision = precision or meta.get("key", {}).get("precision", "unknown")
        if not self.path.is_file():
            raise ModelFileError(f"TensorRT engine {self.path} does not exist")
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(_logger())
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                built = meta.get("key", {})
                raise ModelFileError(
                    f"TensorRT {trt.__version__} could not load the engine {self.path} "
                    f"(built for TensorRT {built.get('tensorrt', '?')} on "
                    f"{built.get('gpu', '?')}; this is {device_fields(self.device.index)[1]}"
                    "), or the file is corrupt. Rebuild it with `fcn-perception build-engine`."
                )
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins, outs = [], []
        for name in names:
            spec_ = TensorSpec(name, _np_dtype_name(self.engine.get_tensor_dtype(name)),
                               tuple(self.engine.get_tensor_shape(name)))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (ins if is_input else outs).append(spec_)
        validate_io(task, ins, outs, f"TensorRT engine {self.path}")
        self.outputs = {s.name: np.dtype(s.dtype) for s in outs}
        lo, _, hi = self.engine.get_tensor_profile_shape("image", 0)
        self.max_batch = int(hi[0])
        self.profile_range = ((int(lo[2]), int(lo[3])), (int(hi[2]), int(hi[3])))
        self._buffers: dict = {}
        self._allocators: dict = {}

    @classmethod
    def from_engine(cls, path: str | Path, task: str, spec: InputSpec,
                    gpu: int | None = None) -> TensorRTBackend:
        return cls(path, task, spec, gpu=gpu)

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, task: str, spec: InputSpec,
                  precision: str = "fp16", card: dict | None = None,
                  profile: ec.Profile | str | None = None, gpu: int | None = None,
                  **options) -> TensorRTBackend:
        if isinstance(profile, str):
            profile = ec.Profile.parse(profile)
        path, _, _ = get_engine(onnx_path, precision, profile, card=card, task=task, gpu=gpu,
                                **options)
        return cls(path, task, spec, precision, gpu=gpu)

    def _torch_dtype(self, dtype: np.dtype):
        return self.torch.from_numpy(np.empty(0, dtype)).dtype

    def infer(self, rgb: np.ndarray, net_hw: tuple[int, int] | None = None,
              confidence: bool = False) -> dict:
        """Contract outputs as torch CUDA tensors (fixed-shape outputs) or numpy: every
        output of the engine (``confidence`` too when it was built from an ONNX exported
        with ``--confidence``; TensorRT computes every output, so ``confidence`` changes
        nothing here)."""
        torch = self.torch
        h, w = net_hw or rgb.shape[:2]
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            img = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy())
            x = network_input_torch(img.pin_memory().to(self.device, non_blocking=True),
                                    self.spec, (h, w))
            return self.run(x)

    def run(self, x) -> dict:
        """Run a normalised ``(N, 3, H, W)`` float32 CUDA tensor on this backend's GPU."""
        torch = self.torch
        n, _, h, w = x.shape
        (lo_h, lo_w), (hi_h, hi_w) = self.profile_range
        if not (lo_h <= h <= hi_h and lo_w <= w <= hi_w) or n > self.max_batch:
            raise ValueError(
                f"a batch of {n} {h}x{w} images is outside the TensorRT engine's profile "
                f"({lo_h}x{lo_w} to {hi_h}x{hi_w}, batch up to {self.max_batch}); rebuild it "
                "with `fcn-perception build-engine --profile MIN:OPT:MAX --max-batch N`"
            )
        ctx = self.context
        x = x.to(self.device, torch.float32).contiguous()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # x is ready
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            ctx.set_input_shape("image", tuple(x.shape))
            ctx.set_tensor_address("image", x.data_ptr())
            fixed = {}
            for name, dtype in self.outputs.items():
                shape = tuple(ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):  # data-dependent: TensorRT asks for memory
                    alloc = self._allocators.get(name)
                    if alloc is None:
                        alloc = self._allocators[name] = _OutputAllocator.create(self.device)
                        ctx.set_output_allocator(name, alloc)
                    continue
                key = (name, shape)
                buf = self._buffers.get(key)
                if buf is None:
                    buf = self._buffers[key] = torch.empty(
                        shape, dtype=self._torch_dtype(dtype), device=self.device)
                ctx.set_tensor_address(name, buf.data_ptr())
                fixed[name] = buf
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed for {self.path}")
        self.stream.synchronize()
        result = dict(fixed)  # stays on the GPU: postprocessing (upsampling) runs there
        for name, alloc in self._allocators.items():
            dtype = self.outputs[name]
            count = int(np.prod(alloc.shape)) if alloc.shape else 1
            raw = alloc.buffer[:count * dtype.itemsize].cpu().numpy()
            result[name] = raw.view(dtype).reshape(alloc.shape)
        return result
