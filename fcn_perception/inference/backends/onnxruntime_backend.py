"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider.

CPU: all graph optimisations (``ORT_ENABLE_ALL``: conv+BN+ReLU fusion, NCHWc layouts),
one intra-op thread per physical core, sequential execution, normalisation into a reused
buffer; int8 Q/DQ graphs in the arithmetic that agrees with fp32 on any x86 CPU
(:mod:`fcn_perception.inference.int8_cpu`).  CUDA: I/O binding, with the uint8 image
uploaded and normalised on the GPU by torch when torch has CUDA (four times less to copy
than float32).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fcn_perception.errors import BackendUnavailable, ModelFileError
from fcn_perception.inference.backends import Backend, physical_cores, split_batch
from fcn_perception.inference.calibration import DEFAULT_METHOD
from fcn_perception.inference.contract import TensorSpec, validate_io
from fcn_perception.inference.preprocess import InputSpec, Preprocessor, network_input_torch

log = logging.getLogger("fcn_perception.inference")

_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(float16)": "float16", "tensor(int8)": "int8"}
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def session_options(num_threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = int(num_threads or physical_cores())
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # no CPU memory arena: the arena keeps the peak of the largest frame it has seen for
    # the session's life (+256 MB held after one 1080x1920 frame, measured); without it
    # ONNX Runtime frees each run's buffers and the next frame costs the same time within
    # the noise (docs/bench_transport.md)
    so.enable_cpu_mem_arena = False
    # intra-op threads sleep instead of spin-waiting between runs: in a node they share
    # the cores with DDS, the executor and decoding, and spinning ones took their time
    # (detection_node, 360x480 at 15 Hz, shared 2-core machine at load 7-12: inference
    # p50 468 / 525 ms spinning, 310 / 392 ms not; README "Cameras, DDS and lost frames")
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def io_specs(session) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(arg):
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        return TensorSpec(arg.name, _ORT_TYPES.get(arg.type, arg.type), shape)

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def _is_int8(path: Path) -> bool:
    """Whether ``path`` is already an int8 Q/DQ graph (False if it cannot be read: the
    session then says what is wrong)."""
    import onnx

    from fcn_perception.inference.int8_cpu import int8_format

    try:
        return int8_format(onnx.load(str(path), load_external_data=False)) is not None
    except Exception:  # noqa: BLE001
        return False


def _configure_int8(options, path: Path) -> str | None:
    """For an int8 Q/DQ graph, set ``options`` to the arithmetic that agrees with fp32 on
    any x86 CPU and return its name (:mod:`fcn_perception.inference.int8_cpu`); None for
    other graphs (and unreadable files: the session then says what is wrong)."""
    import onnx

    from fcn_perception.inference.int8_cpu import configure_session, int8_format

    try:
        fmt = int8_format(onnx.load(str(path), load_external_data=False))
    except Exception:  # noqa: BLE001 -- reported by InferenceSession below
        return None
    return None if fmt is None else configure_session(options, fmt, path)


class OnnxRuntimeBackend(Backend):
    """Run an ONNX file that follows the task contract."""

    int8_arithmetic: str | None = None

    def __init__(self, onnx_path: str | Path, task: str, spec: InputSpec, device: str = "cpu",
                 precision: str | None = None, num_threads: int | None = None,
                 trt_cache_dir: str | Path | None = None,
                 calibration_images: str | Path | None = None,
                 calibrator: str = DEFAULT_METHOD, gpu: int | None = None,
                 confidence_onnx=None) -> None:
        """``confidence_onnx``: for a segmentation graph that outputs ``labels`` only, a
        callable giving the ONNX variant that also outputs ``confidence`` (see
        :func:`~fcn_perception.inference.export.cached_onnx`): it is loaded into a second
        session the first time confidence is asked for, so frames without it do not pay
        for it (ONNX Runtime computes every output of a graph)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime is not installed") from exc
        if device not in PROVIDERS:
            raise ValueError(f"onnxruntime device must be one of {sorted(PROVIDERS)}")
        self.precision = precision or "fp32"
        if self.precision == "fp16" and device != "tensorrt":
            raise BackendUnavailable(
                f"onnxruntime-{device} runs fp32 (or int8 on the CPU); fp16 needs the tensorrt, "
                "onnxruntime-tensorrt or torch-cuda backend"
            )
        if self.precision == "int8" and device == "cuda":
            raise BackendUnavailable("onnxruntime-cuda has no int8 path here; use tensorrt")
        wanted = PROVIDERS[device][0]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailable(
                f"onnxruntime-{device}: this onnxruntime has no {wanted} "
                f"(available: {ort.get_available_providers()})"
            )
        self.path = Path(onnx_path)
        self.task = task
        self.device = device
        self.name = f"onnxruntime-{device}"
        providers: list = list(PROVIDERS[device])
        self.gpu = int(gpu or 0)
        if device != "cpu":
            providers[-2] = ("CUDAExecutionProvider", {"device_id": self.gpu})
        if device == "tensorrt":
            opts = {"device_id": self.gpu, "trt_fp16_enable": self.precision == "fp16",
                    "trt_int8_enable": self.precision == "int8",
                    "trt_engine_cache_enable": True, "trt_timing_cache_enable": True}
            if trt_cache_dir:
                opts["trt_engine_cache_path"] = str(trt_cache_dir)
                opts["trt_timing_cache_path"] = str(trt_cache_dir)
            providers[0] = (providers[0], opts)
        if not self.path.is_file():
            raise ModelFileError(f"ONNX file {self.path} does not exist")
        if self.precision == "int8" and device == "cpu" and not _is_int8(self.path):
            from fcn_perception.inference.quantize import (
                check_int8_task,
                int8_needs_a_quantized_onnx,
                quantized_onnx,
            )

            if calibration_images is None:
                raise ValueError(int8_needs_a_quantized_onnx(self.path))
            check_int8_task(task)
            self.path = quantized_onnx(self.path, calibration_images, spec, calibrator)
        options = session_options(num_threads)
        #: int8 Q/DQ graph on the CPU: how it is evaluated (int8_cpu.ARITHMETICS), else None
        self.int8_arithmetic = _configure_int8(options, self.path) if device == "cpu" else None
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:
            raise ModelFileError(
                f"onnxruntime could not load {self.path} ({type(exc).__name__}: {exc}); "
                "re-export it with `fcn-perception export`"
            ) from exc
        active = self.session.get_providers()
        if wanted not in active:
            raise BackendUnavailable(
                f"onnxruntime-{device}: {wanted} did not load (active providers: {active}); "
                "check the CUDA/cuDNN libraries onnxruntime-gpu needs"
            )
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("fcn_perception.precision") in ("fp16", "int8"):
            self.precision = meta["fcn_perception.precision"]  # what the graph computes in
        ins, outs = io_specs(self.session)
        validate_io(task, ins, outs, f"ONNX file {self.path}")
        names = [o.name for o in outs]
        if task == "segmentation":
            # one output: the scores when the network runs at a reduced size, else labels
            want = "logits" if (spec.size and "logits" in names) or "labels" not in names \
                else "labels"
            names = [want]
        self.output_names = names
        self._graph_outputs = [o.name for o in outs]
        self._batch_axis_dynamic = not (isinstance(ins[0].shape[0], int) and ins[0].shape[0] > 0)
        self._providers, self._num_threads = providers, num_threads
        self._confidence_onnx = confidence_onnx
        self._confidence_session = None
        self.pre = Preprocessor(spec)
        self.spec = spec
        self._use_torch_cuda = False
        if device != "cpu":
            try:
                import torch

                self._use_torch_cuda = torch.cuda.is_available()
            except ImportError:
                pass

    def describe(self) -> str:
        if self.int8_arithmetic:
            return f"{self.name} (int8, {self.int8_arithmetic})"
        return super().describe()

    def _session_for(self, confidence: bool):
        """``(session, output names)`` for a frame with or without confidence."""
        if not confidence or self.task != "segmentation" or self.output_names != ["labels"]:
            return self.session, self.output_names
        names = ["labels", "confidence"]
        if "confidence" in self._graph_outputs:
            return self.session, names
        if self._confidence_session is None:
            if self._confidence_onnx is None:
                raise ModelFileError(
                    f"ONNX file {self.path} has no 'confidence' output: export it with "
                    "`fcn-perception export --confidence` (or give the weights file)")
            import onnxruntime as ort

            path = Path(self._confidence_onnx())
            log.info("loading %s for the confidence output", path.name)
            session = ort.InferenceSession(str(path), session_options(self._num_threads),
                                           providers=self._providers)
            validate_io(self.task, *io_specs(session), f"ONNX file {path}")
            self._confidence_session = session
        return self._confidence_session, names

    def infer_batch(self, images: list[np.ndarray], net_hw: tuple[int, int] | None = None,
                    confidence: bool = False) -> list[dict]:
        """CPU segmentation: one run over the frames (all resized to ``net_hw`` or of one
        size) when the graph's batch axis is dynamic; otherwise one frame at a time."""
        if (self.device != "cpu" or self.task != "segmentation" or len(images) == 1
                or not self._batch_axis_dynamic):
            return [self.infer(img, net_hw, confidence) for img in images]
        h, w = net_hw or images[0].shape[:2]
        x = np.empty((len(images), 3, h, w), np.float32)
        for i, img in enumerate(images):
            if tuple(img.shape[:2]) == (h, w):
                self.pre.normalize(img, x[i:i + 1])
            else:
                x[i:i + 1] = self.pre.network_input(img, (h, w))
        session, names = self._session_for(confidence)
        return split_batch(dict(zip(names, session.run(names, {"image": x}))), len(images))

    def infer(self, rgb: np.ndarray, net_hw: tuple[int, int] | None = None,
              confidence: bool = False) -> dict:
        session, names = self._session_for(confidence)
        if self.device == "cpu":
            x = self.pre.network_input(rgb, net_hw)
            return dict(zip(names, session.run(names, {"image": x})))
        binding = session.io_binding()
        if self._use_torch_cuda:
            import torch

            img = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy())
            x = network_input_torch(img.pin_memory().to(f"cuda:{self.gpu}", non_blocking=True),
                                    self.spec, net_hw)
            binding.bind_input("image", "cuda", self.gpu, np.float32, tuple(x.shape),
                               x.data_ptr())
            torch.cuda.current_stream(self.gpu).synchronize()
        else:
            binding.bind_cpu_input("image", self.pre.network_input(rgb, net_hw))
        for name in names:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))
