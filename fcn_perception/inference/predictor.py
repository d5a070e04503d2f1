"""One Predictor API for segmentation and detection over every backend.

    >>> import fcn_perception
    >>> seg = fcn_perception.load_predictor("segmentation")          # shipped weights
    >>> seg(rgb).labels                      # (H, W) uint8 class ids at input resolution
    >>> det = fcn_perception.load_predictor("detection", backend="onnxruntime-cpu")
    >>> r = det(rgb); r.boxes, r.scores, r.class_ids   # input pixels, x1 y1 x2 y2

A Predictor is preprocess (card mean/std, input geometry) -> backend -> postprocess.
``predictor(rgb, confidence=True)`` also gives the per-pixel confidence of a segmentation;
``predictor.predict_batch(frames)`` runs several frames (several cameras) as one batch;
``predictor.geometry`` (a :class:`~fcn_perception.inference.geometry.Geometry`: network
input size, aspect policy, region of interest) says how frames are fed to the network.
``weights`` may be a ``.safetensors``/``.pt`` file with its card beside it, an ``.onnx``
file (card embedded or beside it) or a TensorRT ``.engine``/``.plan`` (card beside it).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from fcn_perception.card import RFCN_DEFAULTS, model_file, read_card
from fcn_perception.errors import BackendUnavailable, ModelFileError, WeightsError
from fcn_perception.inference.backends import Backend, candidates, unavailable_reason
from fcn_perception.inference.calibration import DEFAULT_METHOD
from fcn_perception.inference.contract import check_task
from fcn_perception.inference.geometry import Geometry
from fcn_perception.inference.postprocess import detection_result, segmentation_result
from fcn_perception.inference.preprocess import InputSpec, check_image
from fcn_perception.inference.results import DetectionResult, SegmentationResult

log = logging.getLogger("fcn_perception.inference")

TORCH_SUFFIXES = (".safetensors", ".pt", ".pth")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ENGINE_OPTIONS = {"gpu", "profile", "calibration_images", "calibrator", "calibration_limit",
                  "cache_dir", "rebuild", "workspace"}


def resolve_weights(task: str, weights: str | Path | None) -> tuple[str, Path]:
    """``(kind, path)`` with kind ``"torch"``, ``"onnx"`` or ``"engine"``; ``weights`` is a
    file or a shipped model's name (:data:`fcn_perception.card.MODELS`; None: ``fast``)."""
    check_task(task)
    path = model_file(task, weights)
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        kind = "torch"
    elif suffix == ".onnx":
        kind = "onnx"
    elif suffix in ENGINE_SUFFIXES:
        kind = "engine"
    else:
        raise WeightsError(
            f"do not know how to load {path}: expected a weights file "
            f"({', '.join(TORCH_SUFFIXES)}), an ONNX file (.onnx) or a TensorRT engine "
            f"({', '.join(ENGINE_SUFFIXES)})"
        )
    if not path.is_file():
        what = {"torch": "weights file", "onnx": "ONNX file", "engine": "TensorRT engine"}[kind]
        error = WeightsError if kind == "torch" else ModelFileError
        raise error(f"{what} {path} does not exist")
    return kind, path


class Predictor:
    """Callable: ``predictor(rgb)`` with ``rgb`` an ``(H, W, 3)`` uint8 array.

    Implements :class:`~fcn_perception.inference.interface.SegmentationPredictor` or
    :class:`~fcn_perception.inference.interface.DetectionPredictor` (by ``task``).
    Attributes: ``task``, ``card`` (the model card), ``classes``, ``palette``,
    ``backend`` (the :class:`~fcn_perception.inference.backends.Backend`),
    ``backend_name`` (e.g. ``"onnxruntime-cpu"``), ``precision``, ``source`` (the file it
    runs); for detection ``nms_threshold`` and the defaults ``score_threshold`` and
    ``max_detections`` that a call may override.  ``geometry``: how frames are fed to the
    network (default: the card's ``input.size``, resized, whole frame); it may be
    replaced at any time (:meth:`set_geometry`).
    """

    def __init__(self, task: str, backend: Backend, card: dict, source: Path,
                 score_threshold: float | None = None, max_detections: int | None = None,
                 geometry: Geometry | None = None):
        self.task = check_task(task)
        self.backend = backend
        self.card = card
        self.source = Path(source)
        self.spec = InputSpec.from_card(card)
        self.classes = list(card.get("classes", []))
        self.palette = card.get("palette")
        self.score_threshold = float(score_threshold or 0.0)
        self.max_detections = max_detections
        self.geometry = geometry or Geometry(size=self.spec.size)
        self.geometry = self._with_fill(self.geometry)

    def _with_fill(self, geometry: Geometry) -> Geometry:
        """Letterbox padding in the card's mean colour: zero after normalisation."""
        from dataclasses import replace

        fill = tuple(int(round(255 * m)) for m in self.spec.mean)
        return replace(geometry, fill=fill)

    def set_geometry(self, size: tuple[int, int] | None | str = "card", policy: str = "resize",
                     roi: tuple[int, int, int, int] | None = None) -> Geometry:
        """Feed frames at ``size`` (``"card"``: the card's ``input.size``; None: each
        region's own size) with aspect ``policy`` (``resize``, ``letterbox``, ``crop``),
        looking only at ``roi`` ``(x, y, width, height)`` (None: the whole frame).

        A network whose backend gives ``labels`` (cards with ``input.size`` null) has its
        labels resized nearest-neighbour from another ``size``; give ``input_size`` to
        :func:`load_predictor` instead to get the scores upsampled."""
        self.geometry = self._with_fill(Geometry(
            size=self.spec.size if size == "card" else size, policy=policy, roi=roi))
        return self.geometry

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def precision(self) -> str:
        return self.backend.precision

    @property
    def nms_threshold(self) -> float:
        return float(self.card.get("architecture", {}).get("nms_thresh",
                                                           RFCN_DEFAULTS["nms_thresh"]))

    def __repr__(self) -> str:
        return (f"Predictor(task={self.task!r}, backend={self.backend.describe()!r}, "
                f"source={str(self.source)!r})")

    def __call__(self, rgb: np.ndarray, *, score_threshold: float | None = None,
                 max_detections: int | None = None, confidence: bool = False
                 ) -> SegmentationResult | DetectionResult:
        """Labels (with ``confidence``: and the per-pixel confidence) or detections of one
        ``(H, W, 3)`` uint8 RGB frame, at its resolution."""
        return self.predict_batch([rgb], score_threshold=score_threshold,
                                  max_detections=max_detections, confidence=confidence)[0]

    def predict_batch(self, images: list[np.ndarray], *, score_threshold: float | None = None,
                      max_detections: int | None = None, confidence: bool = False
                      ) -> list[SegmentationResult | DetectionResult]:
        """One result per frame, the frames run as one batch where the backend can (all
        frames going to the same network input size: a fixed ``geometry.size``, or frames
        of one size); ``latency_ms`` of each is the whole call's.

        Raises ModelFileError when ``confidence`` is asked of a model file that cannot give
        it (an ONNX file or TensorRT engine exported without ``--confidence``)."""
        start = time.perf_counter()
        geometry = self.geometry
        prepared, groups = [], {}
        for i, rgb in enumerate(images):
            img = check_image(rgb)
            placement = geometry.place(img.shape[:2])
            net_img, net_hw = placement.network_image(img, geometry.fill)
            prepared.append((img.shape[:2], placement, net_img, net_hw))
            groups.setdefault(tuple(net_hw), []).append(i)
        want_conf = confidence and self.task == "segmentation"
        results: list = [None] * len(images)
        for net_hw, indices in groups.items():
            outputs = self.backend.infer_batch([prepared[i][2] for i in indices], net_hw,
                                               confidence=want_conf)
            for i, out in zip(indices, outputs):
                input_hw, placement, _, _ = prepared[i]
                place = None if placement.whole_frame else placement
                if self.task == "segmentation":
                    if want_conf and "logits" not in out and "confidence" not in out:
                        raise ModelFileError(
                            f"{self.backend_name} gives no 'confidence' output for "
                            f"{self.source.name}: export the ONNX with `fcn-perception "
                            "export --confidence` (and build TensorRT engines from it)")
                    results[i] = segmentation_result(out, input_hw, place, want_conf)
                else:
                    results[i] = detection_result(
                        out, input_hw, net_hw,
                        self.score_threshold if score_threshold is None else score_threshold,
                        self.max_detections if max_detections is None else max_detections,
                        placement=place)
        elapsed = (time.perf_counter() - start) * 1000.0
        for result in results:
            result.latency_ms = elapsed
        return results

    def warmup(self, height: int = 360, width: int = 480, runs: int = 1) -> None:
        """Run a blank frame (first runs allocate memory and pick kernels)."""
        frame = np.zeros((height, width, 3), np.uint8)
        for _ in range(runs):
            self(frame)


def _card_for(kind: str, path: Path, task: str) -> dict:
    if kind == "torch":
        card = read_card(path)
    elif kind == "onnx":
        from fcn_perception.inference.onnx_file import check_onnx

        card = check_onnx(path, task)
    else:
        from fcn_perception.inference.engine_cache import read_sidecar

        card = (read_sidecar(path) or {}).get("card")
        if card is None:
            try:
                card = read_card(path)
            except WeightsError as exc:
                raise ModelFileError(
                    f"TensorRT engine {path} needs its model card: the sidecar "
                    f"{path.name}.json written by `fcn-perception build-engine`, or {exc}"
                ) from exc
    if card.get("task", task) != task:
        raise WeightsError(f"{path} holds a {card.get('task')} model, not a {task} model")
    return card


def build_backend(name: str, task: str, kind: str, path: Path, card: dict,
                  precision: str | None = None, num_threads: int | None = None,
                  **trt_options) -> Backend:
    """Construct concrete backend ``name`` for a resolved model file (``card``, possibly
    with another ``input.size`` than the file's, decides labels vs logits)."""
    spec = InputSpec.from_card(card)
    from fcn_perception.inference.onnx_file import segmentation_output

    seg_output = segmentation_output(card) if task == "segmentation" else None
    if name.startswith("torch"):
        if kind != "torch":
            raise BackendUnavailable(
                f"{name} needs a weights file ({', '.join(TORCH_SUFFIXES)}), not {path.name}"
            )
        from fcn_perception.inference.backends.torch_backend import TorchBackend
        from fcn_perception.inference.export import load_model

        model, _ = load_model(path, task)
        if num_threads and name == "torch-cpu":
            import torch

            torch.set_num_threads(int(num_threads))
        device = name.split("-", 1)[1]
        if device == "cuda" and trt_options.get("gpu") is not None:
            device = f"cuda:{int(trt_options['gpu'])}"
        return TorchBackend(model, task, spec, device=device, precision=precision)
    if kind == "engine" and name != "tensorrt":
        raise BackendUnavailable(f"{name} cannot run a TensorRT engine ({path.name})")
    if name.startswith("onnxruntime"):
        reason = unavailable_reason(name)
        if reason:
            raise BackendUnavailable(f"{name}: {reason}")
        from fcn_perception.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
        from fcn_perception.inference.onnx_file import cached_onnx

        onnx_path = path if kind == "onnx" else cached_onnx(path, task, seg_output=seg_output)
        confidence_onnx = None
        if kind == "torch" and seg_output == "labels" and precision in (None, "fp32"):
            def confidence_onnx():  # exported (once, cached) when first asked for
                return cached_onnx(path, task, seg_output=seg_output, confidence=True)
        return OnnxRuntimeBackend(onnx_path, task, spec, device=name.split("-", 1)[1],
                                  precision=precision, num_threads=num_threads,
                                  calibration_images=trt_options.get("calibration_images"),
                                  calibrator=trt_options.get("calibrator", DEFAULT_METHOD),
                                  gpu=trt_options.get("gpu"), confidence_onnx=confidence_onnx)
    if name == "tensorrt":
        reason = unavailable_reason(name)
        if reason:
            raise BackendUnavailable(f"tensorrt: {reason}")
        from fcn_perception.inference.backends.tensorrt_backend import TensorRTBackend

        if kind == "engine":
            return TensorRTBackend.from_engine(path, task, spec, gpu=trt_options.get("gpu"))
        from fcn_perception.inference.export import cached_onnx

        onnx_path = path if kind == "onnx" else cached_onnx(path, task, seg_output=seg_output)
        return TensorRTBackend.from_onnx(onnx_path, task, spec, precision=precision or "fp16",
                                         card=card, **trt_options)
    raise ValueError(f"unknown backend {name!r}")


def _cannot_run(name: str, kind: str, path: Path) -> str | None:
    """Why backend ``name`` cannot run a ``kind`` model file here (None: try it)."""
    reason = unavailable_reason(name)
    if reason is None and name.startswith("torch") and kind != "torch":
        reason = f"needs a weights file ({', '.join(TORCH_SUFFIXES)}), not {path.name}"
    if reason is None and kind == "engine" and name != "tensorrt":
        reason = f"cannot run a TensorRT engine ({path.name})"
    return None if reason is None else f"{name}: {reason}"


def load_predictor(task: str, backend: str = "auto", weights: str | Path | None = None,
                   precision: str | None = None, num_threads: int | None = None,
                   score_threshold: float | None = None, max_detections: int | None = None,
                   device: str = "auto", input_size: tuple[int, int] | None = None,
                   aspect: str = "resize", roi: tuple[int, int, int, int] | None = None,
                   **trt_options) -> Predictor:
    """Build a :class:`Predictor` on the first of the backends that ``backend`` and
    ``device`` allow (:func:`~fcn_perception.inference.backends.candidates`) that starts.

    Args:
        task: ``"segmentation"`` or ``"detection"``.
        backend: ``"auto"`` or a name from :mod:`fcn_perception.inference.backends`.
            ``auto`` tries TensorRT, ONNX Runtime CUDA, torch CUDA, then ONNX Runtime CPU
            (torch CPU if onnxruntime is missing) and logs its choice; ``torch`` and
            ``onnxruntime`` try CUDA, then the CPU.
        weights: model file, or a shipped model's name (``fast``, ``accurate``:
            :data:`fcn_perception.card.MODELS`); None: ``fast``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"`` (None: the backend's default:
            fp16 for TensorRT and torch CUDA, fp32 elsewhere).
        num_threads: CPU threads (default: the physical cores).
        score_threshold, max_detections: detection defaults on top of the model's own
            (a call may pass others).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``: only backends running there.
        input_size: ``(height, width)`` the network runs at instead of the card's
            ``input.size`` (the backends then give scores, upsampled to the frame).
        aspect: ``"resize"`` (stretch), ``"letterbox"`` (fit, pad) or ``"crop"`` (centre
            crop) when a frame's aspect differs from the network input's.
        roi: ``(x, y, width, height)``: only this part of each frame is looked at (width
            or height 0: to the frame's edge); the rest gets label 255 and no boxes.
        trt_options: ``calibration_images`` (a folder; int8 on TensorRT or onnxruntime-cpu)
            and ``calibrator`` (``"minmax"``, ``"entropy"`` or ``"percentile"``); ``gpu``
            (a CUDA device index) for the CUDA and TensorRT backends; for TensorRT also
            ``profile`` (an
            :class:`~fcn_perception.inference.engine_cache.Profile` or
            ``"MINxMIN:OPTxOPT:MAXxMAX"``), ``cache_dir``, ``rebuild``.
    """
    check_task(task)
    unknown = sorted(set(trt_options) - ENGINE_OPTIONS)
    if unknown:
        raise TypeError(f"load_predictor got unknown options {unknown}; engine/calibration "
                        f"options are {sorted(ENGINE_OPTIONS)}")
    names = candidates(backend, device)
    kind, path = resolve_weights(task, weights)
    card = _card_for(kind, path, task)
    if input_size is not None:  # the backends read the network size from the card
        size = [int(input_size[0]), int(input_size[1])]
        card = {**card, "input": {**(card.get("input") or {}), "size": size}}
    geometry = Geometry(size=InputSpec.from_card(card).size, policy=aspect, roi=roi)
    kwargs = dict(precision=precision, num_threads=num_threads, **trt_options)
    failures = []
    for name in names:
        reason = _cannot_run(name, kind, path)
        if reason is None:
            try:
                chosen = build_backend(name, task, kind, path, card, **kwargs)
                break
            except BackendUnavailable as exc:
                reason = str(exc)
                if len(names) > 1:
                    log.warning("backend %s: %s could not start (%s); trying the next",
                                backend, name, exc)
        failures.append(reason)
    else:
        if len(names) == 1:
            raise BackendUnavailable(failures[0])
        raise BackendUnavailable(f"backend {backend} found nothing that runs {path}: "
                                 + "; ".join(failures))
    if len(names) > 1:
        log.info("backend %s -> %s for %s (%s)%s", backend, chosen.describe(), task, path.name,
                 "".join(f"; skipped {r}" for r in failures))
    return Predictor(task, chosen, card, path, score_threshold=score_threshold,
                     max_detections=max_detections, geometry=geometry)
