"""Every error type fcn_perception raises.

The ``fcn-perception`` command prints a :class:`CommandError` or any ``ValueError`` (all
the others but :class:`BackendUnavailable`: bad input, a file, a message) as
``error: ...`` with exit status 2 and no traceback.  This module imports nothing, so
any module may use it.

* :class:`CommandError`: a user error on the command line
* :class:`DatasetError`: a dataset folder, split file or annotation file
* :class:`WeightsError`: a weights file or model card
* :class:`ModelFileError`: an ONNX file or TensorRT engine
* :class:`ImageError`: an image array given to a Predictor
* :class:`ConversionError`: an image message (``sensor_msgs/Image``, ``CompressedImage``);
  :class:`ImageTooLargeError` when it is larger than the size limit (a decompression bomb)
* :class:`ParameterError`: a node parameter, ``-p`` argument or parameters YAML file
* :class:`CheckpointError`: a training checkpoint (``last.pt``) that cannot be resumed
* :class:`BagError`: a rosbag2 bag
* :class:`BackendUnavailable`: a backend that cannot run on this machine

:func:`yaml_problem` words a YAML syntax error for such one-line messages.
"""
from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "BagError",
    "CommandError",
    "ConversionError",
    "CheckpointError",
    "DatasetError",
    "ImageError",
    "ImageTooLargeError",
    "ModelFileError",
    "ParameterError",
    "WeightsError",
    "yaml_problem",
]


class CommandError(Exception):
    """A user error: printed as ``error: ...`` with exit status 2, no traceback."""


class DatasetError(ValueError):
    """A dataset folder, split file or annotation file is missing or malformed."""


class WeightsError(ValueError):
    """A weights file or model card is missing, unreadable or does not fit."""


class ModelFileError(ValueError):
    """An ONNX file or TensorRT engine is missing, unreadable or does not fit the contract."""


class ImageError(ValueError):
    """An input image has the wrong type, dtype or shape."""


class ConversionError(ValueError):
    """An image message that cannot be turned into (or made from) an RGB image; the
    message says why, in words meant for a log line.

    Its text is cut to :attr:`MAX_LENGTH` characters: message fields come from any
    participant on the DDS domain and must not make 10 KB log lines."""

    MAX_LENGTH = 300

    def __init__(self, message: object = "", *args) -> None:
        text = str(message)
        if len(text) > self.MAX_LENGTH:
            text = f"{text[: self.MAX_LENGTH - 30]}... (cut from {len(text)} chars)"
        super().__init__(text, *args)


class ImageTooLargeError(ConversionError):
    """An image message whose (declared) size is above the limit: rejected before any
    pixel is decoded."""


class ParameterError(ValueError):
    """A node parameter, ``-p name:=value`` argument or parameters YAML file that is
    missing, malformed or of the wrong type."""


class CheckpointError(ValueError):
    """A training checkpoint that cannot be read or does not fit the run."""


class BagError(ValueError):
    """A bag that is missing, unreadable, or lacks what a command needs."""


def yaml_problem(exc: Exception) -> tuple[str, str]:
    """``(where, what)`` of a ``yaml.YAMLError`` for a one-line message, e.g.
    ``("line 3, column 5", "mapping values are not allowed here")``; ``where`` is empty
    when PyYAML gives no position."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return where, getattr(exc, "problem", None) or (str(exc).splitlines() or [""])[0]


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (a package, a GPU or an execution provider is missing)."""
