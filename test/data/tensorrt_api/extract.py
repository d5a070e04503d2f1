"""Extract the TensorRT API names the build plan consults from a bindings wheel.

    pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d /tmp/w \
        tensorrt-cu13-bindings==11.4.0.106 tensorrt-cu12-bindings==10.3.0
    python test/data/tensorrt_api/extract.py /tmp/w/tensorrt_cu12_bindings-10.3.0-*.whl \
        > test/data/tensorrt_api/tensorrt-10.3.0.json

The wheels hold ``tensorrt_bindings/tensorrt.so`` (pybind11) but not the TensorRT
libraries, so the module cannot be imported here; its names are read from the
shared object's string table instead.  pybind11 keeps every class, method and enum
member name as a NUL-terminated string, and the linker may merge a name into the end
of a longer string (``INT8`` into ``UINT8``).  Rules, for each name of
``fcn_perception.inference.tensorrt_plan.CANDIDATES``:

* a class, method or flag name is present when it ends some string of the table
  (exactly or as such a merged tail), or, for the Python-level helpers, when
  ``tensorrt_bindings/__init__.py`` defines it;
* ``BuilderFlag.FP16`` and ``BuilderFlag.INT8`` share their strings with the
  ``DataType``-like names of format docstrings, so they are present only when their
  member docstrings are: "Enable FP16 layer selection", "Enable Int8 layer selection";
* ``STRONGLY_TYPED`` is marked deprecated (``deprecated``) when the table holds
  "Strongly typed mode is always enabled".
"""
from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from fcn_perception.inference.tensorrt_plan import CANDIDATES  # noqa: E402

DOCSTRING_FLAGS = {"FP16": "Enable FP16 layer selection", "INT8": "Enable Int8 layer selection"}


def strings(blob: bytes) -> list[str]:
    return [m.decode() for m in re.findall(rb"[\x20-\x7e\t]{2,}(?=\x00)", blob)]


def extract(wheel: Path) -> dict:
    with zipfile.ZipFile(wheel) as z:
        so = z.read("tensorrt_bindings/tensorrt.so")
        init = z.read("tensorrt_bindings/__init__.py").decode()
    table = strings(so)
    version = re.search(r'__version__ = "([^"]+)"', init).group(1)
    python_defs = set(re.findall(r"^def (\w+)", init, re.M))
    text = "\n".join(table)

    def present(name: str) -> bool:
        return name in python_defs or any(s.endswith(name) for s in table)

    names = {}
    for owner, candidates in CANDIDATES.items():
        found = []
        for name in candidates:
            if owner == "BuilderFlag" and name in DOCSTRING_FLAGS:
                ok = DOCSTRING_FLAGS[name] in text
            else:
                ok = present(name)
            if ok:
                found.append(name)
        names[owner] = found
    return {
        "tensorrt": version,
        "source": wheel.name,
        "names": names,
        "deprecated": (["NetworkDefinitionCreationFlag.STRONGLY_TYPED"]
                       if "Strongly typed mode is always enabled" in text else []),
    }


if __name__ == "__main__":
    print(json.dumps(extract(Path(sys.argv[1])), indent=2))
