"""The CPU a number was measured on: its model and the instruction sets that change int8
and float speed (and, for int8 in ONNX Runtime, results): AVX2, AVX-512, VNNI, AMX.

Benchmarks and precision reports (docs/bench_cpu.md, docs/onnx_precision.json) record
:func:`cpu_info` beside their numbers, so a reader can tell whether a figure applies to
their machine.  On Linux the model and flags come from ``/proc/cpuinfo`` (the kernel's
CPUID view, which also names AVX-VNNI and AMX); elsewhere from numpy's runtime CPU
dispatch table (no AMX or AVX-VNNI there) and :func:`platform.processor`.  Both are
already installed: no CPUID library is needed for four flags.
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

#: instruction set -> the ``/proc/cpuinfo`` flags that mean it (any one suffices)
_LINUX_FLAGS = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),  # either gives ONNX Runtime its int8 dot products
    "AMX": ("amx_int8", "amx_tile"),
}
_NUMPY_FEATURES = {"AVX2": ("AVX2",), "AVX-512": ("AVX512F",), "VNNI": ("AVX512VNNI",),
                   "AMX": ()}


@dataclass(frozen=True)
class CpuInfo:
    """``model``: e.g. ``"AMD EPYC 7763 64-Core Processor"``; ``isa``: instruction set ->
    present (keys AVX2, AVX-512, VNNI, AMX); ``logical_cpus``: what the OS reports."""

    model: str
    logical_cpus: int
    isa: dict[str, bool]
    source: str  # where the flags came from: "/proc/cpuinfo" or "numpy"

    def flags(self) -> str:
        """``"AVX2 yes, AVX-512 no, VNNI no, AMX no"``."""
        return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in self.isa.items())

    def line(self) -> str:
        """One line for a report: model, logical CPUs, instruction sets."""
        return f"{self.model}, {self.logical_cpus} logical CPUs; {self.flags()}"

    def as_dict(self) -> dict:
        return asdict(self)


def _parse_proc_cpuinfo(text: str) -> tuple[str, set[str]] | None:
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if model and flags:
            break
    return (model, flags) if flags else None


def cpu_info(proc_cpuinfo: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """Describe this machine's CPU (see the module docstring)."""
    logical = os.cpu_count() or 0
    try:
        parsed = _parse_proc_cpuinfo(Path(proc_cpuinfo).read_text())
    except OSError:
        parsed = None
    if parsed is not None:
        model, flags = parsed
        isa = {name: any(f in flags for f in names) for name, names in _LINUX_FLAGS.items()}
        return CpuInfo(model or platform.processor() or platform.machine(), logical, isa,
                       "/proc/cpuinfo")
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    isa = {name: any(features.get(f, False) for f in names)
           for name, names in _NUMPY_FEATURES.items()}
    return CpuInfo(platform.processor() or platform.machine(), logical, isa, "numpy")
