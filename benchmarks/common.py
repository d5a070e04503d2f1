"""What the benchmarks in this folder share: the repository's CamVid frames (never
random ones: a benchmark without its frames stops and says so), the CPU line and the
load average printed beside every number.  Run the benchmarks from the repository
(``.venv/bin/python benchmarks/NAME.py``); they are not part of the installed package."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME_FOLDERS = (ROOT.parent / "shared" / "camvid" / "val",
                 ROOT / "fcn_perception" / "data" / "camvid_sample" / "val")


def camvid_frames(count: int = 1, image: Path | None = None) -> list[np.ndarray]:
    """``count`` CamVid val frames, ``(360, 480, 3)`` uint8 RGB (or the one ``image``)."""
    from PIL import Image

    if image is not None:
        return [np.asarray(Image.open(image).convert("RGB"))]
    for folder in FRAME_FOLDERS:
        files = sorted(folder.glob("*.png"))
        if files:
            step = max(1, len(files) // count)
            return [np.asarray(Image.open(f).convert("RGB")) for f in files[::step][:count]]
    raise SystemExit(f"no CamVid frames in {' or '.join(map(str, FRAME_FOLDERS))}: run the "
                     "benchmark from a checkout of the repository (or pass --image)")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (NaN once it is gone)."""
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_line() -> str:
    from fcn_perception.inference.cpu_info import cpu_info

    return cpu_info().line()


def ort_meta(started: str, threads: int, **entries) -> dict:
    """The header entries of an ONNX Runtime benchmark's file: date, CPU, threads, then
    ``entries``."""
    import onnxruntime as ort

    return {"date": started, "cpu": cpu_line(),
            "threads": f"{threads} intra-op threads (onnxruntime {ort.__version__})", **entries}


def write_report(output: Path, title: str, script: str, meta: dict, header: str,
                 lines: list[str], rows: list[dict]) -> None:
    """A benchmark's file: OUTPUT (.md: title, the script, ``- key: value`` per meta entry,
    then the table, ``header`` and its ``lines``) and a .json beside it ({meta, rows});
    the markdown is printed too."""
    import json

    text = "\n".join([f"# {title}", "", f"Written by `.venv/bin/python {script}`.", "",
                      *(f"- {k}: {v}" for k, v in meta.items()), "", header, *lines]) + "\n"
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2)
                                           + "\n")
    print(f"wrote {output} and {output.with_suffix('.json').name}")
