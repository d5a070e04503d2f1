"""TensorRT 10 backend: build an engine from the exported ONNX, cache it, run it.

Build (:func:`build_engine`): ``trt.Builder`` -> ``INetworkDefinition`` (explicit batch)
filled by ``trt.OnnxParser``; ``IBuilderConfig`` with an optimisation profile for dynamic
height and width, FP16/INT8 flags, an INT8 calibrator (entropy or MinMax, see
:mod:`fcn_perception.inference.calibration`) and a persistent ``ITimingCache``; the
serialized engine is cached by :mod:`fcn_perception.inference.engine_cache`.

Run (:class:`TensorRTBackend`): torch CUDA tensors are the I/O buffers
(``set_tensor_address``), ``execute_async_v3`` on a private CUDA stream; the image is
uploaded as uint8 and normalised on the GPU.  I/O tensor names, dtypes and ranks are
checked against the task contract when the engine is loaded.

TensorRT is optional: everything imports it lazily, and :func:`tensorrt_unavailable`
says why it cannot be used here.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fcn_perception.errors import BackendUnavailable, ModelFileError
from fcn_perception.inference import engine_cache as ec
from fcn_perception.inference.backends import Backend, cuda_available
from fcn_perception.inference.contract import TensorSpec, validate_io
from fcn_perception.inference.preprocess import InputSpec, network_input_torch

log = logging.getLogger("fcn_perception.inference")

DEFAULT_WORKSPACE = 2 << 30


def tensorrt_unavailable() -> str | None:
    """None when TensorRT >= 10 and a CUDA GPU are usable, else the reason."""
    try:
        import tensorrt as trt
    except ImportError:
        return "the tensorrt Python package is not installed (pip install tensorrt)"
    except Exception as exc:  # broken CUDA libraries surface here
        return f"tensorrt failed to import ({type(exc).__name__}: {exc})"
    if int(trt.__version__.split(".")[0]) != 10:
        return (f"TensorRT {trt.__version__} is installed; this backend is written for the "
                "TensorRT 10 API (11 removed the FP16/INT8 builder flags and calibrators)")
    if not cuda_available():
        return "no CUDA GPU is visible to torch"
    return None


def _require_tensorrt():
    reason = tensorrt_unavailable()
    if reason:
        raise BackendUnavailable(f"tensorrt: {reason}")
    import tensorrt as trt

    return trt


def device_fields() -> tuple[str, str, str]:
    """``(TensorRT version, GPU name, compute capability)`` of this machine."""
    import tensorrt as trt
    import torch

    index = torch.cuda.current_device()
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


def build_engine(onnx_path: str | Path, precision: str, profile: ec.Profile,
                 calibrator=None, timing_cache: str | Path | None = None,
                 workspace: int = DEFAULT_WORKSPACE, task: str | None = None) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine (``bytes``)."""
    trt = _require_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX file {onnx_path} does not exist")
    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
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
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape("image", *profile.shapes())
    config.add_optimization_profile(opt_profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibrator is None:
            raise ValueError("an INT8 engine needs calibration images (calibration_images=...)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(opt_profile)
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    log.info("building a TensorRT %s engine from %s (profile %s); this takes minutes once",
             precision, onnx_path.name, profile)
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


def get_engine(onnx_path: str | Path, precision: str = "fp16", profile: ec.Profile | None = None,
               card: dict | None = None, task: str | None = None,
               cache_dir: str | Path | None = None, output: str | Path | None = None,
               calibration_images: str | Path | None = None, calibrator: str = "entropy",
               calibration_limit: int = 200, rebuild: bool = False,
               workspace: int = DEFAULT_WORKSPACE) -> tuple[Path, bool, str | None]:
    """The engine for ``onnx_path``: reused from the cache when its key matches, else built.

    Returns ``(engine path, built, reason it was built or None)``.
    """
    from fcn_perception.inference.export import cache_dir as default_cache
    from fcn_perception.weights_io import sha256_of

    _require_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX file {onnx_path} does not exist")
    card = card or {}
    task = task or card.get("task")
    profile = profile or ec.Profile.for_card(card)
    folder = Path(cache_dir) if cache_dir else default_cache("engines")
    trt_version, gpu, cc = device_fields()
    batches = None
    fingerprint = None
    if precision == "int8":
        from fcn_perception.inference.calibration import CalibrationBatches, list_images

        if calibration_images is None:
            raise ValueError("precision int8 needs calibration_images (a folder of images)")
        batches = CalibrationBatches(list_images(calibration_images, calibration_limit),
                                     InputSpec.from_card(card), profile.opt)
        fingerprint = batches.fingerprint(calibrator)
    fields = ec.engine_key(sha256_of(onnx_path), trt_version, gpu, cc, precision, profile,
                           fingerprint)
    path = Path(output) if output else ec.engine_path(folder, onnx_path, fields)
    reason = "rebuild requested" if rebuild else ec.rebuild_reason(path, fields)
    if reason is None:
        log.info("TensorRT engine %s is up to date", path)
        return path, False, None
    log.info("building TensorRT engine %s: %s", path, reason)
    calib = None
    if batches is not None:
        from fcn_perception.inference.calibration import make_calibrator

        calib = make_calibrator(calibrator, batches,
                                folder / f"calib-{fingerprint[:16]}-{fields['onnx_sha256'][:16]}.cache")
    data = build_engine(onnx_path, precision, profile, calib,
                        ec.timing_cache_path(folder, trt_version, gpu), workspace, task)
    ec.write_engine(path, data, fields, card=card or None)
    return path, True, reason


class _OutputAllocator:
    """Factory for a ``trt.IOutputAllocator`` backed by a growing torch CUDA buffer
    (used for outputs whose shape is only known after execution)."""

    @staticmethod
    def create():
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
                                              device="cuda")
                return self.buffer.data_ptr()

            def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
                return self.reallocate_output(tensor_name, memory, size, alignment)

            def notify_shape(self, tensor_name, shape):
                self.shape = tuple(shape)

        return Allocator()


class TensorRTBackend(Backend):
    """Run a serialized TensorRT engine that follows the task contract."""

    def __init__(self, engine_path: str | Path, task: str, spec: InputSpec,
                 precision: str | None = None) -> None:
        trt = _require_tensorrt()
        import torch

        self.torch = torch
        self.path = Path(engine_path)
        self.task = task
        self.spec = spec
        self.name = "tensorrt"
        meta = ec.read_sidecar(self.path) or {}
        self.precision = precision or meta.get("key", {}).get("precision", "unknown")
        if not self.path.is_file():
            raise ModelFileError(f"TensorRT engine {self.path} does not exist")
        self.runtime = trt.Runtime(_logger())
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            built = meta.get("key", {})
            raise ModelFileError(
                f"TensorRT {trt.__version__} could not load the engine {self.path} (built for "
                f"TensorRT {built.get('tensorrt', '?')} on {built.get('gpu', '?')}; this is "
                f"{device_fields()[1]}), or the file is corrupt. Rebuild it with "
                "`fcn-perception build-engine`."
            )
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
        self.profile_range = ((int(lo[2]), int(lo[3])), (int(hi[2]), int(hi[3])))
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._buffers: dict = {}
        self._allocators: dict = {}

    @classmethod
    def from_engine(cls, path: str | Path, task: str, spec: InputSpec) -> TensorRTBackend:
        return cls(path, task, spec)

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, task: str, spec: InputSpec,
                  precision: str = "fp16", card: dict | None = None,
                  profile: ec.Profile | str | None = None, **options) -> TensorRTBackend:
        if isinstance(profile, str):
            profile = ec.Profile.parse(profile)
        path, _, _ = get_engine(onnx_path, precision, profile, card=card, task=task, **options)
        return cls(path, task, spec, precision)

    def _torch_dtype(self, dtype: np.dtype):
        return self.torch.from_numpy(np.empty(0, dtype)).dtype

    def infer(self, rgb: np.ndarray, net_hw: tuple[int, int] | None = None) -> dict:
        """Contract outputs as torch CUDA tensors (fixed-shape outputs) or numpy."""
        torch = self.torch
        h, w = net_hw or rgb.shape[:2]
        (lo_h, lo_w), (hi_h, hi_w) = self.profile_range
        if not (lo_h <= h <= hi_h and lo_w <= w <= hi_w):
            raise ValueError(
                f"a {h}x{w} image is outside the TensorRT engine's profile "
                f"({lo_h}x{lo_w} to {hi_h}x{hi_w}); rebuild it with `fcn-perception "
                f"build-engine --profile MIN:OPT:MAX` covering this size"
            )
        ctx = self.context
        with torch.cuda.stream(self.stream):
            img = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy())
            x = network_input_torch(img.pin_memory().cuda(non_blocking=True), self.spec,
                                    (h, w))
            ctx.set_input_shape("image", tuple(x.shape))
            ctx.set_tensor_address("image", x.data_ptr())
            fixed = {}
            for name, dtype in self.outputs.items():
                shape = tuple(ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):  # data-dependent: TensorRT asks for memory
                    alloc = self._allocators.get(name)
                    if alloc is None:
                        alloc = self._allocators[name] = _OutputAllocator.create()
                        ctx.set_output_allocator(name, alloc)
                    continue
                key = (name, shape)
                buf = self._buffers.get(key)
                if buf is None:
                    buf = self._buffers[key] = torch.empty(shape, dtype=self._torch_dtype(dtype),
                                                           device="cuda")
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
