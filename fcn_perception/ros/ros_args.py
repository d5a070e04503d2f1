"""Checks of a node's ``--ros-args`` before ``rclpy.init``: parameters files and ``-p``.

rclpy turns a bad parameters file or a ``-p`` value of the wrong type into an RCLError
or an InvalidParameterTypeException with a traceback.  :func:`check_ros_args` reads the
same arguments first, as rcl would, and raises one
:class:`~fcn_perception.errors.ParameterError` that names the file (or argument), the
parameter and the fix:

* ``--params-file F``: F must exist and be YAML mapping node names (``/**``, ``node``,
  ``/ns/node``, or namespaces nested as mappings) to ``{ros__parameters: {...}}``;
* every value meant for this node (a matching section, ``-p name:=value`` or
  ``-p node:name:=value``) must have the declared parameter's type -- a float parameter
  needs ``1.0``, not ``1`` -- and pass its range, choices or pattern.

Unknown parameter names in a section for this node are reported as warnings (rclpy
ignores them; they are often typos).  No ROS import: YAML and the parameter specs only.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

from fcn_perception.errors import ParameterError, yaml_problem
from fcn_perception.ros.params import ParamSpec, kind_of

KIND_WORDS = {"bool": "true or false", "int": "an integer", "float": "a float",
              "string": "a string", "string_array": "a list of strings"}


YAML_WORDS = {"bool": "a bool", "int": "an integer", "float": "a float", "string": "a string",
              "string_array": "a list", "null": "empty (null)"}


def _yaml_type(value) -> str:
    kind = kind_of(value)
    return YAML_WORDS.get(kind, f"a {kind}")


def _example(spec: ParamSpec, value) -> str:
    kind = spec.kind
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return f"write {value}.0"
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return f"write {int(value)}"
    if kind == "bool":
        return "write true or false (unquoted)"
    if kind == "string_array":
        return 'write a list, e.g. ["Car"]'
    default = spec.default
    return f"write {KIND_WORDS[kind]}, e.g. {str(default).lower() if isinstance(default, bool) else default!r}"


def check_value(spec: ParamSpec, value) -> str | None:
    """Why ``value`` (as YAML gives it) cannot be ``spec``'s parameter, with the fix."""
    kind = spec.kind
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, float),  # rclpy refuses an integer for a double
        "string": isinstance(value, str),
        "string_array": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        shown = repr(value) if not isinstance(value, str) else repr(value[:40])
        return (f"{spec.name} must be {KIND_WORDS[kind]}, got {_yaml_type(value)} ({shown}); "
                f"{_example(spec, value)}")
    reason = spec.validate(value)
    if reason is not None and kind in ("int", "float") and spec.range_text():
        return f"{reason}; allowed: {spec.range_text()}"
    return reason


def _pattern_regex(pattern: str) -> re.Pattern:
    """rcl's node-name wildcards: ``*`` one name, ``**`` any number of namespaces."""
    pattern = "/" + pattern.strip("/")
    out = ""
    for part in re.split(r"(\*\*|\*)", pattern):
        if part == "**":
            out += r".*"
        elif part == "*":
            out += r"[^/]*"
        else:
            out += re.escape(part)
    return re.compile(out.replace(r"/.*", r"(/.*)?") + r"$")


def _sections(doc: dict, where: str, prefix: str = "") -> list[tuple[str, dict]]:
    """``(node pattern, ros__parameters)`` of a parameters file's (nested) mapping."""
    out = []
    for key, value in doc.items():
        path = f"{prefix}/{str(key).strip('/')}" if prefix else str(key)
        if not isinstance(value, dict):
            raise ParameterError(
                f"{where}: {path} is {_yaml_type(value)}, not a mapping; write "
                f"{path}: {{ros__parameters: {{name: value}}}}")
        if "ros__parameters" in value:
            params = value["ros__parameters"]
            if not isinstance(params, dict):
                raise ParameterError(
                    f"{where}: {path}.ros__parameters is {_yaml_type(params)}, not a mapping "
                    "of parameter names to values; indent the parameters under it")
            out.append((path, params))
            rest = {k: v for k, v in value.items() if k != "ros__parameters"}
            if rest:
                raise ParameterError(
                    f"{where}: {path} has {sorted(map(str, rest))} beside ros__parameters; "
                    "put every parameter under ros__parameters")
        else:
            out += _sections(value, where, path)
    return out


def flatten_params(params: dict, prefix: str = "") -> dict:
    """Nested parameter mappings as ``a.b`` names, as rcl reads them."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten_params(value, name))
        else:
            out[name] = value
    return out


def read_params_file(path: str | Path) -> dict:
    """The YAML of a parameters file, or a :class:`ParameterError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(
            f"parameters file {path} does not exist" + (" (it is a folder)" if path.is_dir()
                                                        else "")
            + "; pass an existing YAML file to --params-file")
    try:
        doc = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ParameterError(f"parameters file {path} is not a text file; pass a YAML file "
                             "to --params-file") from None
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc)
        at = f" at {where}" if where else ""
        raise ParameterError(f"parameters file {path}: YAML syntax error{at} ({problem}); "
                             "fix the indentation or quoting there") from None
    except OSError as exc:
        raise ParameterError(f"parameters file {path} cannot be read ({exc.strerror})") from None
    if not isinstance(doc, dict):
        raise ParameterError(
            f"parameters file {path} holds {_yaml_type(doc)}, not a mapping; write "
            f"{{node_name: {{ros__parameters: {{name: value}}}}}} (or /** for every node)")
    return doc


def split_ros_args(argv: list[str]) -> list[str]:
    """The arguments inside ``--ros-args ... [--]`` sections."""
    out, inside = [], False
    for arg in argv:
        if arg == "--ros-args":
            inside = True
        elif arg == "--" and inside:
            inside = False
        elif inside:
            out.append(arg)
    return out


def node_identity(ros_args: list[str], default_name: str) -> tuple[str, str]:
    """``(name, namespace)`` after ``-r __node:=`` / ``-r __ns:=`` remaps."""
    name, ns = default_name, "/"
    for flag, value in zip(ros_args, ros_args[1:]):
        if flag not in ("-r", "--remap"):
            continue
        src, _, dst = value.partition(":=")
        src = src.rsplit(":", 1)[-1]  # "node:__node" applies to that node only; assumed ours
        if src == "__node":
            name = dst
        elif src == "__ns":
            ns = "/" + dst.strip("/")
    return name, ns


def check_ros_args(argv: list[str], default_name: str, specs: list[ParamSpec]) -> list[str]:
    """Check ``--params-file`` and ``-p`` arguments for the node; returns warnings.

    Raises :class:`ParameterError` with one message naming the file or argument, the
    parameter and the fix."""
    ros_args = split_ros_args(argv)
    name, ns = node_identity(ros_args, default_name)
    fqn = (ns.rstrip("/") + "/" + name) if ns != "/" else "/" + name
    by_name = {s.name: s for s in specs}
    warnings: list[str] = []

    def check(where: str, values: dict, strict_names: bool) -> None:
        for pname, value in values.items():
            spec = by_name.get(pname)
            if spec is None:
                if strict_names:
                    close = difflib.get_close_matches(pname, by_name, 1)
                    warnings.append(f"{where}: {name} has no parameter {pname!r}"
                                    + (f" (did you mean {close[0]}?)" if close else "")
                                    + "; it is ignored")
                continue
            reason = check_value(spec, value)
            if reason is not None:
                raise ParameterError(f"{where}: {reason}")

    i = 0
    while i < len(ros_args):
        flag = ros_args[i]
        value = ros_args[i + 1] if i + 1 < len(ros_args) else None
        if flag == "--params-file":
            if value is None:
                raise ParameterError("--params-file needs a file name")
            doc = read_params_file(value)
            for pattern, params in _sections(doc, f"parameters file {value}"):
                if _pattern_regex(pattern).match(fqn):
                    exact = "*" not in pattern
                    check(f"parameters file {value} ({pattern})", flatten_params(params), exact)
            i += 2
        elif flag in ("-p", "--param"):
            if value is None or ":=" not in value:
                raise ParameterError(f"{flag} {value or ''}: expected NAME:=VALUE, e.g. "
                                     "-p overlay_alpha:=0.5")
            target, _, raw = value.partition(":=")
            node_part, sep, pname = target.rpartition(":")
            if sep and node_part.strip("/") not in (name, fqn.strip("/")):
                i += 2
                continue  # meant for another node
            try:
                parsed = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                parsed = raw  # rcl takes an unparsable value as a string
            if pname in by_name:
                check(f"-p {value[:80]}", {pname: parsed}, False)
            else:
                close = difflib.get_close_matches(pname, by_name, 1)
                warnings.append(f"-p {pname}: {name} has no parameter {pname!r}"
                                + (f" (did you mean {close[0]}?)" if close else "")
                                + "; it is ignored")
            i += 2
        else:
            i += 1
    return warnings
