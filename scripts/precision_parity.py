"""Measure how the fp16 and int8 ONNX variants agree with fp32 on CamVid val, in ONNX
Runtime on the CPU, and write docs/onnx_precision.json (the README quotes it).

    .venv/bin/python scripts/precision_parity.py [--frames 20] [--data ../shared/camvid]
        [--tasks detection]    # measure one task again, keep the file's other entry

Segmentation: identical labels (fp16; int8 in TensorRT and ONNX Runtime formats).
Detection: fp32's boxes (score >= 0.5 and >= 0.3) reproduced by a same-class box at IoU
>= 0.9 (score within 0.1 below the threshold), fp16 and int8 (TensorRT format) -- int8
detection is measured here although the package refuses it (too few boxes match).
Each int8 variant runs in the arithmetic the onnxruntime-cpu backend gives its format
(fcn_perception.inference.int8_cpu: the TensorRT format with Q/DQ in float, as TensorRT
computes it); the file records it and the CPU (model; AVX2, AVX-512, VNNI, AMX).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import onnxruntime

import fcn_perception
from fcn_perception.card import DEFAULT_WEIGHTS, sha256_of
from fcn_perception.inference.agreement import compare_frames, read_frames
from fcn_perception.inference.calibration import DEFAULT_LIMIT, DEFAULT_METHOD
from fcn_perception.inference.cpu_info import cpu_info
from fcn_perception.inference.export import cached_onnx, fp16_onnx, read_onnx_card
from fcn_perception.inference.int8_cpu import ARITHMETICS
from fcn_perception.inference.preprocess import InputSpec
from fcn_perception.inference.quantize import quantized_onnx

ROOT = Path(__file__).resolve().parents[1]


def measure(task: str, weights: Path, frames, calibration: Path, work: Path) -> dict:
    fp32 = cached_onnx(weights, task, directory=work)
    spec = InputSpec.from_card(read_onnx_card(fp32))
    variants = {"fp16": fp16_onnx(fp32, directory=work)}
    formats = ("tensorrt", "onnxruntime") if task == "segmentation" else ("tensorrt",)
    for fmt in formats:
        variants[f"int8-{fmt}"] = quantized_onnx(fp32, calibration, spec, DEFAULT_METHOD,
                                                 DEFAULT_LIMIT, fmt=fmt, directory=work)
    ref = fcn_perception.load_predictor(task, "onnxruntime-cpu", fp32)
    out = {"weights": weights.name, "weights_sha256": sha256_of(weights), "variants": {}}
    for name, path in variants.items():
        cand = fcn_perception.load_predictor(task, "onnxruntime-cpu", path)
        start = time.perf_counter()
        if task == "segmentation":
            out["variants"][name] = compare_frames(ref, cand, frames)
        else:
            out["variants"][name] = {f"score>={t}": compare_frames(ref, cand, frames,
                                                                   score_threshold=t)
                                     for t in (0.5, 0.3)}
        if cand.backend.int8_arithmetic:  # how the int8 graph was evaluated (int8_cpu)
            out["variants"][name]["arithmetic"] = cand.backend.int8_arithmetic
        print(task, name, json.dumps(out["variants"][name]),
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "camvid")
    parser.add_argument("--frames", type=int, default=20, help="val frames (evenly spaced)")
    parser.add_argument("--tasks", nargs="+", default=["segmentation", "detection"],
                        help="tasks to measure; the output file's entries of the others "
                             "are kept (each names the weights it measured)")
    parser.add_argument("--segmentation-weights", type=Path, default=None,
                        help="default: the shipped weights (DEFAULT_WEIGHTS)")
    parser.add_argument("--detection-weights", type=Path, default=None)
    parser.add_argument("--note", default=None, help="recorded in the file (e.g. where "
                        "weights that are not the shipped ones came from)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "onnx_precision.json")
    args = parser.parse_args()
    frames = read_frames(args.data / "val", args.frames)
    cpu = cpu_info()
    report = {"command": "scripts/precision_parity.py", "runtime": "onnxruntime-cpu",
              "onnxruntime": onnxruntime.__version__,
              "machine": cpu.line(), "cpu": cpu.as_dict(),
              "int8_arithmetic": ARITHMETICS,
              "frames": f"{len(frames)} of {args.data / 'val'} at "
                        f"{frames[0].shape[0]}x{frames[0].shape[1]}",
              "calibration": f"{DEFAULT_METHOD}, {DEFAULT_LIMIT} frames of "
                             f"{args.data / 'train'}",
              "box_rule": "same class, IoU >= 0.9, candidate score >= threshold - 0.1",
              "tasks": {}}
    if args.note:
        report["note"] = args.note
    if args.output.is_file():
        kept = json.loads(args.output.read_text()).get("tasks", {})
        report["tasks"] = {t: v for t, v in kept.items() if t not in args.tasks}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            weights = getattr(args, f"{task}_weights") or DEFAULT_WEIGHTS[task]
            report["tasks"][task] = measure(task, weights, frames,
                                            args.data / "train", Path(tmp))
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
