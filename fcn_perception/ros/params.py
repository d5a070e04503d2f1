"""The nodes' parameters: names, defaults, ranges, descriptions and validation.

Plain data so that the launch-file test, the README table and the nodes read the same
specs.  :func:`descriptor` (which imports ``rcl_interfaces``) turns a spec into a
``ParameterDescriptor`` with its range.

Parameters marked ``runtime`` take effect on the next frame when set with
``ros2 param set`` (with a ROS 2 install); the others are read when the node is
configured (weights, backend, device, precision, input transport and QoS: the
subscription and publishers are created at configure and only gated by activate): cycle
the lifecycle (deactivate/cleanup/configure/activate) to apply a change.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fcn_perception.inference import backends
from fcn_perception.inference.contract import check_task
from fcn_perception.inference.geometry import MAX_NETWORK_PIXELS, POLICIES, Geometry


def kind_of(value) -> str:
    """The parameter kind of a Python value: ``bool``, ``int``, ``float``, ``string``,
    ``string_array`` (a list or tuple), ``null`` (None), else the type's name."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "string_array"
    return "null" if value is None else type(value).__name__


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # regular expression a string value must match
    runtime: bool = False

    @property
    def kind(self) -> str:
        """``bool``, ``int``, ``float``, ``string`` or ``string_array``."""
        return kind_of(self.default)

    def range_text(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.minimum is not None or self.maximum is not None:
            return f"[{self.minimum}, {self.maximum}]"
        if self.pattern:
            return self.pattern
        return ""

    def validate(self, value: Any) -> str | None:
        """``None`` when ``value`` is acceptable, else the reason it is not."""
        kind = self.kind
        ok_type = {
            "bool": lambda v: isinstance(v, bool),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "string": lambda v: isinstance(v, str),
            "string_array": lambda v: isinstance(v, (list, tuple))
            and all(isinstance(x, str) for x in v),
        }[kind]
        if not ok_type(value):
            return f"{self.name} must be a {kind}, got {value!r}"
        if kind in ("int", "float"):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{self.name} must be finite, got {value!r}"
            if self.minimum is not None and value < self.minimum:
                return f"{self.name}={value} is below the minimum {self.minimum}"
            if self.maximum is not None and value > self.maximum:
                return f"{self.name}={value} is above the maximum {self.maximum}"
        if kind == "string":
            if self.choices and value not in self.choices:
                return f"{self.name}={value!r} is not one of {', '.join(self.choices)}"
            if self.pattern and not re.fullmatch(self.pattern, value):
                return f"{self.name}={value!r} does not match {self.pattern}"
        return None

    def prefixed(self, prefix: str) -> ParamSpec:
        return replace(self, name=f"{prefix}.{self.name}") if prefix else self


NODE_PARAMS = (
    ParamSpec("autostart", True, "configure and activate when the node starts (false: wait "
              "for lifecycle transitions)"),
    ParamSpec("input_transport", "raw", "raw: subscribe to `image` (sensor_msgs/Image); "
              "compressed: to `image/compressed` (sensor_msgs/CompressedImage, JPEG/PNG)",
              choices=("raw", "compressed")),
    ParamSpec("qos_reliability", "auto", "input subscription reliability: auto (what the "
              "camera's publishers offer: reliable when all of them are, else best effort; "
              "followed when publishers come and go), best_effort (sensor-data QoS; matches "
              "every publisher) or reliable (only reliable publishers)",
              choices=("auto", "best_effort", "reliable")),
    ParamSpec("qos_depth", 5, "input subscription history depth", minimum=1, maximum=100),
    ParamSpec("no_frame_warning_s", 5.0, "warn once per camera when no publisher "
              "has appeared this many seconds after activation, and when a publisher has "
              "sent no frame this many seconds after it appeared (0: never)", minimum=0.0, maximum=3600.0),
    ParamSpec("max_input_pixels", 4096 * 4096, "larger images (width x height; for JPEG/PNG "
              "the size their header declares) are rejected before decoding, counted in "
              "diagnostics (decompression bombs)", minimum=1, maximum=16384 * 16384,
              runtime=True),
    ParamSpec("expected_rate", 0.0, "frames per second the outputs should keep up with; "
              "diagnostics WARN below 90% of it (0: off)", minimum=0.0, maximum=1000.0,
              runtime=True),
    ParamSpec("image_topics", [], "several cameras on one model: one input topic per camera "
              "(sensor_msgs/Image; with input_transport compressed, <topic>/compressed); each "
              "camera's outputs are published under its topic's namespace (/cam1/image_raw -> "
              "/cam1/segmentation/labels, /cam1/detections, ...) with its header; the "
              "waiting frames are batched into one inference, cameras served in turn. Empty: "
              "the single input `image`"),
    ParamSpec("max_batch", 0, "with image_topics: most frames per inference batch (0: one "
              "from every camera with a frame waiting)", minimum=0, maximum=64),
    ParamSpec("spatial_inputs", "none", "none; camera_info: also subscribe to `camera_info` "
              "(sensor_msgs/CameraInfo) and pass it on beside the outputs "
              "(segmentation/camera_info, detections/camera_info); depth: also to `depth` "
              "(sensor_msgs/Image 32FC1 m or 16UC1 mm, registered to the colour camera) for "
              "detections_3d and segmentation/points. Each colour frame waits for its "
              "camera_info/depth (approximate time sync); one camera (not with image_topics)",
              choices=("none", "camera_info", "depth")),
    ParamSpec("sync_queue_size", 10, "spatial_inputs: messages kept per input while waiting "
              "for partners (message_filters' queue_size)", minimum=1, maximum=100),
    ParamSpec("sync_slop", 0.05, "spatial_inputs: most seconds between the stamps of a "
              "colour frame and its camera_info/depth (message_filters' slop)",
              minimum=0.0, maximum=10.0),
)

DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]+)?"

PREDICTOR_PARAMS = (
    ParamSpec("model", "fast", "which model: fast (EfficientNet-Lite0, the default), "
              "accurate (segmentation: the same FCN-8s at 540x720, slower) or a model file: "
              ".safetensors/.pt (model card beside it), .onnx or a TensorRT .engine"),
    ParamSpec("backend", "auto", "inference backend; auto: the first that starts of "
              "tensorrt, onnxruntime-cuda, torch-cuda, onnxruntime-cpu, torch-cpu",
              choices=backends.NAMES),
    ParamSpec("device", "auto", "auto, cpu, cuda or cuda:N: cpu/cuda narrow the backend "
              "choice; cuda:N also runs on GPU N", pattern=DEVICE_PATTERN),
    ParamSpec("precision", "auto", "auto: the backend's default (fp16 on TensorRT and torch "
              "CUDA, fp32 elsewhere); int8: set model to an int8 ONNX made by "
              "`fcn-perception export --precision int8 --calibration-images DIR` "
              "(tensorrt, onnxruntime-cpu)", choices=("auto", "fp32", "fp16", "int8")),
    ParamSpec("force_engine_rebuild", False, "tensorrt: build the engine again at configure "
              "even when the cached one's key matches (a weights .engine is used as it is)"),
    ParamSpec("allow_modified_weights", False, "load weights whose sha256 differs from their "
              "model card's (edited on purpose); otherwise such weights are refused"),
    ParamSpec("network_height", 0, "network input height in pixels (0: the model card's "
              "input size; a card without one runs at each frame's own size); set with "
              "network_width", minimum=0, maximum=8192),
    ParamSpec("network_width", 0, "network input width in pixels (0: the model card's)",
              minimum=0, maximum=8192),
    ParamSpec("max_network_pixels", MAX_NETWORK_PIXELS, "when the network runs at each "
              "frame's own size (card input size none, network_height 0): larger frames "
              "(or ROIs) are scaled down to this many pixels, aspect kept, and the outputs "
              "mapped back to the frame, so one frame's memory is bounded (default 1920x1080:"
              " about 260 MB above the node's own on the CPU)", minimum=4096,
              maximum=16384 * 16384, runtime=True),
    ParamSpec("aspect_policy", "resize", "how a frame (or ROI) whose aspect differs from the "
              "network input's is fitted: resize (stretch), letterbox (scale to fit, pad "
              "with the mean colour) or crop (centre crop; the sides get label 255, no "
              "boxes); outputs are always in input-image pixels", choices=POLICIES,
              runtime=True),
    ParamSpec("roi_x", 0, "region of interest, left edge in input pixels", minimum=0,
              maximum=65535, runtime=True),
    ParamSpec("roi_y", 0, "region of interest, top edge in input pixels", minimum=0,
              maximum=65535, runtime=True),
    ParamSpec("roi_width", 0, "region of interest width (0: to the right edge); outside the "
              "ROI labels are 255, confidence 0, no boxes", minimum=0, maximum=65535,
              runtime=True),
    ParamSpec("roi_height", 0, "region of interest height (0: to the bottom edge)",
              minimum=0, maximum=65535, runtime=True),
)


def parse_device(device: str) -> tuple[str, int | None]:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` -> ``(kind, GPU index or None)``."""
    m = re.fullmatch(DEVICE_PATTERN, str(device))
    if m is None:
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N "
                         "(N a GPU index, e.g. cuda:0)")
    kind, _, index = str(device).partition(":")
    return kind, int(index) if index else None


def backend_candidates(backend: str, device: str) -> list[str]:
    """The backends the ``backend`` and ``device`` parameters allow, in the order the
    predictor tries them (:func:`fcn_perception.inference.backends.candidates`).

    Raises ValueError when the two contradict each other (``tensorrt`` on ``cpu``)."""
    return list(backends.candidates(backend, parse_device(device)[0]))


def predictor_options(param: Callable[[str], Any]) -> dict[str, Any]:
    """``load_predictor`` keyword arguments from a task's predictor parameters
    (``param(name)`` gives the value of ``model``, ``backend``, ...)."""
    kind, gpu = parse_device(param("device"))
    precision = param("precision")
    options = {"backend": param("backend"), "device": kind, "weights": param("model"),
               "precision": None if precision == "auto" else precision}
    if gpu is not None:
        options["gpu"] = gpu
    if param("force_engine_rebuild"):
        options["rebuild"] = True
    height, width = int(param("network_height")), int(param("network_width"))
    if (height > 0) != (width > 0):
        raise ValueError(f"set both network_height and network_width (got {height}x{width}); "
                         "0 for both uses the model card's input size")
    if height > 0:
        options["input_size"] = (height, width)
    geometry = geometry_options(param)
    if geometry["aspect"] != "resize":
        options["aspect"] = geometry["aspect"]
    if geometry["roi"] is not None:
        options["roi"] = geometry["roi"]
    return options


def geometry_options(param: Callable[[str], Any]) -> dict[str, Any]:
    """``aspect`` and ``roi`` (``load_predictor``'s names) from the runtime geometry
    parameters; ``roi`` None when all four are 0."""
    roi = tuple(int(param(f"roi_{k}")) for k in ("x", "y", "width", "height"))
    return {"aspect": param("aspect_policy"), "roi": None if roi == (0, 0, 0, 0) else roi}


ROI_PARAMS = ("roi_x", "roi_y", "roi_width", "roi_height")


def roi_problem(param: Callable[[str], Any], name: str, value,
                frame_sizes: list[tuple[int, int]]) -> str | None:
    """Why setting ROI parameter ``name`` to ``value`` (the others as ``param`` gives
    them) would make every frame of the sizes seen so far (``(height, width)``) fail,
    else None (also when no frame has been seen yet)."""
    if name not in ROI_PARAMS or not frame_sizes:
        return None
    roi = tuple(int(value) if k == name else int(param(k)) for k in ROI_PARAMS)
    for hw in frame_sizes:
        try:
            Geometry(roi=roi).region_of(hw)
        except ValueError as exc:
            return (f"{name}={value} refused: {exc} (the last frame received); the ROI's "
                    "x, y must lie inside the frame")
    return None


TASK_PARAMS = {
    "segmentation": (
        ParamSpec("overlay_alpha", 0.5, "weight of the class colours in segmentation/overlay",
                  minimum=0.0, maximum=1.0, runtime=True),
        ParamSpec("confidence_encoding", "mono8", "segmentation/confidence: mono8 (the top "
                  "class's softmax probability x 255, rounded) or 32FC1 (the probability in "
                  "[0, 1])", choices=("mono8", "32FC1"), runtime=True),
        ParamSpec("points_stride", 4, "segmentation/points (spatial_inputs depth): one point "
                  "every this many depth pixels in each direction", minimum=1, maximum=64,
                  runtime=True),
        ParamSpec("points_confidence", False, "segmentation/points also carry a float32 "
                  "`confidence` field (costs the softmax)", runtime=True),
    ),
    "detection": (
        ParamSpec("score_threshold", 0.5, "detections scoring below are not published (with "
                  "tracking, except those continuing a confirmed track, down to "
                  "track_low_threshold)", minimum=0.0, maximum=1.0, runtime=True),
        ParamSpec("nms_threshold", 0.3, "per-class NMS IoU threshold; below the model's own "
                  "(card nms_thresh, 0.3) suppresses more, above it changes nothing",
                  minimum=0.0, maximum=1.0, runtime=True),
        ParamSpec("max_detections", 100, "most detections published per frame",
                  minimum=1, maximum=1000, runtime=True),
        ParamSpec("classes", [], "class names to publish (empty: all); names from the model "
                  "card", runtime=True),
        ParamSpec("tracking", True, "give each detection a track id (Detection2D.id, "
                  "ByteTrack: stable while the object is seen, kept through track_buffer "
                  "missed frames, unique within the run)", runtime=True),
        ParamSpec("track_buffer", 30, "tracking: frames a lost track waits to be found again",
                  minimum=0, maximum=10000, runtime=True),
        ParamSpec("track_low_threshold", 0.1, "tracking: detections scoring between this and "
                  "score_threshold may continue a confirmed track (ByteTrack's second "
                  "association); set it to score_threshold to publish none below that",
                  minimum=0.0, maximum=1.0, runtime=True),
        ParamSpec("depth_box_fraction", 0.5, "detections_3d: the depth of a box is the "
                  "median of the valid depths in its central region, this fraction of its "
                  "width and height", minimum=0.01, maximum=1.0, runtime=True),
    ),
}


def task_specs(task: str, prefix: str = "") -> list[ParamSpec]:
    """The predictor and task parameters of ``task``, optionally under ``prefix.``."""
    check_task(task)
    return [s.prefixed(prefix) for s in (*PREDICTOR_PARAMS, *TASK_PARAMS[task])]


def node_specs(tasks: tuple[str, ...]) -> list[ParamSpec]:
    """Every parameter a node serving ``tasks`` declares.  With one task the task's
    parameters are unprefixed (``weights``); with several each is under its task name
    (``segmentation.model``, ``detection.score_threshold``)."""
    specs = list(NODE_PARAMS)
    for task in tasks:
        specs += task_specs(task, prefix=task if len(tasks) > 1 else "")
    return specs


NODES = {
    "segmentation_node": ("segmentation",),
    "detection_node": ("detection",),
    "perception_node": ("segmentation", "detection"),
}


def validate_classes(names, known: list[str]) -> str | None:
    unknown = [n for n in names if n not in known]
    if unknown:
        return f"classes {unknown} are not in the model's classes {known}"
    return None


def descriptor(spec: ParamSpec):
    """A ``rcl_interfaces/ParameterDescriptor`` for ``spec`` (type, range, description)."""
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    types = {
        "bool": ParameterType.PARAMETER_BOOL,
        "int": ParameterType.PARAMETER_INTEGER,
        "float": ParameterType.PARAMETER_DOUBLE,
        "string": ParameterType.PARAMETER_STRING,
        "string_array": ParameterType.PARAMETER_STRING_ARRAY,
    }
    text = spec.description
    if spec.range_text() and spec.kind == "string":
        text += f" [{spec.range_text()}]"
    text += " (runtime)" if spec.runtime else " (applied at configure/activate)"
    desc = ParameterDescriptor(name=spec.name, type=types[spec.kind], description=text)
    if spec.kind == "float" and (spec.minimum is not None or spec.maximum is not None):
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
    elif spec.kind == "int" and (spec.minimum is not None or spec.maximum is not None):
        desc.integer_range = [IntegerRange(
            from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    return desc


def help_text(executable: str) -> str:
    """What ``<executable> --help`` prints: usage, then every parameter with its type,
    default, range and when it applies."""
    import textwrap

    lines = [f"usage: {executable} [--help] [--ros-args -p NAME:=VALUE ... "
             "--params-file FILE -r image:=TOPIC ...]", "",
             f"fcn_perception {executable}: a ROS 2 lifecycle node "
             f"({' and '.join(NODES[executable])}).  Parameters:", ""]
    for spec in node_specs(NODES[executable]):
        extra = (f", one of {spec.range_text()}" if spec.choices else
                 f", matching {spec.pattern}" if spec.pattern else
                 f", range {spec.range_text()}" if spec.range_text() else "")
        when = "runtime" if spec.runtime else "at configure/activate"
        lines.append(f"  {spec.name} ({spec.kind}, default "
                     f"{_markdown_value(spec.default)}{extra}; {when})")
        lines += textwrap.wrap(spec.description, 84, initial_indent="      ",
                               subsequent_indent="      ")
    lines += ["", "Topics and examples: the README's \"ROS 2 nodes\" section."]
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's parameter table, from the specs: the node's, the predictor's, then
    each task's (marked with the task; prefixed ``<task>.`` in ``perception_node``)."""
    rows = ["| parameter | type | default | range | applied | description |",
            "|---|---|---|---|---|---|"]
    specs = [(s, "") for s in (*NODE_PARAMS, *PREDICTOR_PARAMS)]
    specs += [(s, f" ({task})") for task, task_params in TASK_PARAMS.items() for s in task_params]
    for s, task in specs:
        kind = "string[]" if s.kind == "string_array" else s.kind
        cells = [f"`{s.name}`{task}", kind, f"`{_markdown_value(s.default)}`", s.range_text(),
                 "runtime" if s.runtime else "configure/activate", s.description]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def _markdown_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value) + "]"
    return '""' if value == "" else str(value)


if __name__ == "__main__":  # python -m fcn_perception.ros.params > the README's table
    print(markdown_table())
