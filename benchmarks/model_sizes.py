"""The segmentation models a user can choose, side by side: accuracy on a held-out street
against CPU time per frame, fp32 and CPU int8, all in ONNX Runtime, measured in one run.

    .venv/bin/python benchmarks/model_sizes.py [--threads 2] [--rounds 20] \
        [--sequence 0006R0] [--output docs/model_sizes.md]

Rows: ``fast`` and ``accurate`` (the shipped cards, resolved like the node's ``model``
parameter), or ``LABEL=WEIGHTS`` files (e.g. the runs trained with the sequence held
out: a shipped model that saw the sequence would flatter itself), each in fp32 and in int8 (``fcn-perception export --precision int8
--int8-format onnxruntime``: uint8 activations, ONNX Runtime's int8 kernels), calibrated
on ``--calibration-frames`` frames of the *training* sequences (never the held-out one).

Accuracy: mean IoU and per-class IoU of the whole Predictor on every frame of the
held-out sequence (training/splits/camvid_<SEQ>.txt): a street the models must not have
seen in training (check their cards' ``training.train_split``). Time: p50/p95 of the whole Predictor call on one 360x480 frame, the
rows measured round-robin (each round runs every row once) so that load falls on all
alike; the ratios to ``fast`` fp32 are computed within the run. Writes OUTPUT (.md) and
a .json beside it, with the CPU line and the load average.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import Row, measure  # noqa: E402
from common import ROOT, camvid_frames, load_average, ort_meta, write_report  # noqa: E402

DATA = ROOT.parent / "shared" / "camvid"
SPLITS = ROOT / "training" / "splits"


def calibration_folder(sequence: str, count: int, folder: Path) -> Path:
    """``count`` frames spread over the training sequences (every one but ``sequence``)."""
    lines = [ln.split()[0] for ln in (SPLITS / f"camvid_without_{sequence}.txt")
             .read_text().splitlines() if ln.strip()]
    step = max(1, len(lines) // count)
    folder.mkdir(parents=True, exist_ok=True)
    for rel in lines[::step][:count]:
        shutil.copyfile(DATA / rel, folder / Path(rel).name)
    return folder


def int8_onnx(weights: Path, calibration: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "fcn_perception.cli", "export", "--weights",
                    str(weights), "--precision", "int8", "--int8-format", "onnxruntime",
                    "--calibration-images", str(calibration), "--calibration-limit", "1000",
                    "--output", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    ap.add_argument("--max-seconds", type=float, default=240.0,
                    help="stop timing after this long (at least 5 rounds; default 240)")
    ap.add_argument("--sequence", default="0006R0", help="held-out CamVid sequence")
    ap.add_argument("--models", nargs="*", default=["fast", "accurate"],
                    help="model names or LABEL=WEIGHTS (default: fast accurate); e.g. the "
                         "runs trained with the sequence held out")
    ap.add_argument("--calibration-frames", type=int, default=40)
    ap.add_argument("--output", type=Path, default=ROOT / "docs" / "model_sizes.md")
    args = ap.parse_args(argv)

    from fcn_perception import load_predictor
    from fcn_perception.card import model_file, model_title, read_card
    from fcn_perception.training.dataset_file import dataset_from_args
    from fcn_perception.training.evaluate_segmentation import evaluate_segmentation

    split = SPLITS / f"camvid_{args.sequence}.txt"
    dataset = dataset_from_args(argparse.Namespace(dataset=None, data=str(DATA))).open(
        str(split))
    frame = camvid_frames(1)[0]
    load_before = load_average()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    rows, scores = [], {}
    with tempfile.TemporaryDirectory(prefix="model_sizes_") as tmp:
        calib = calibration_folder(args.sequence, args.calibration_frames,
                                   Path(tmp) / "calibration")
        for spec in args.models:
            name, _, path = spec.partition("=")
            weights = Path(model_file("segmentation", path or name))
            card = read_card(weights)
            for precision in ("fp32", "int8"):
                source = weights if precision == "fp32" else int8_onnx(
                    weights, calib, Path(tmp) / f"{weights.stem}_int8.onnx")
                predictor = load_predictor("segmentation", backend="onnxruntime-cpu",
                                           weights=str(source), num_threads=args.threads)
                label = f"{name} ({model_title(card)}), {precision}"
                print(f"scoring {label} on {args.sequence} ...", flush=True)
                result, _ = evaluate_segmentation(predictor, dataset, progress=False)
                scores[label] = {"model": name, "precision": precision,
                                 "mean_iou": result["mean_iou"],
                                 "pixel_accuracy": result["pixel_accuracy"],
                                 "per_class_iou": result["per_class_iou"]}
                rows.append(Row(label, "segmentation", "onnxruntime-cpu", True, predictor))
        print(f"timing {len(rows)} rows ...", flush=True)
        done = measure(rows, frame, args.rounds, 3, args.max_seconds)

    base = rows[0].p50
    meta = ort_meta(started, args.threads, **{
        "accuracy": f"every frame of CamVid sequence {args.sequence} ({len(dataset)} frames)",
        "models": {spec.partition("=")[0]: str(model_file("segmentation",
                                                          spec.partition("=")[2] or spec))
                   for spec in args.models},
        "time": f"360x480 CamVid val frame, whole Predictor call, {done} round-robin rounds",
        "load average (1, 5, 15 min) before / after": f"{load_before} / {load_average()}"})
    table = []
    for r in rows:
        s = scores[r.model]
        table.append({**s, "row": r.model, "p50_ms": round(r.p50, 1), "p95_ms": round(r.p95, 1),
                      "time_over_fast_fp32": round(r.p50 / base, 2)})
    header = (f"| model | mIoU {args.sequence} | pixel acc. | p50 ms | p95 ms | "
              "time / fast fp32 |\n|---|---:|---:|---:|---:|---:|")
    lines = [f"| {t['row']} | {t['mean_iou']:.3f} | {t['pixel_accuracy']:.3f} | "
             f"{t['p50_ms']:.1f} | {t['p95_ms']:.1f} | {t['time_over_fast_fp32']:.2f} |"
             for t in table]
    write_report(args.output, "Segmentation models: held-out accuracy against CPU time",
                 "benchmarks/model_sizes.py", meta, header, lines, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
