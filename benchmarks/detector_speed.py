"""The shipped detector against other R-FCN weights (e.g. the detector it replaced), CPU
time per frame in ONNX Runtime, measured in one run.

    .venv/bin/python benchmarks/detector_speed.py previous=OLD.safetensors \
        [--threads 2] [--rounds 300] [--output docs/detector_speed.md]

Same architecture, other weights: the graph is the same, but the proposals that survive
the RPN's NMS and the boxes that reach the head's NMS depend on the weights, so the time
can differ.  Every row is the whole Predictor call (onnxruntime-cpu, fp32) on one 360x480
CamVid frame, measured round-robin (each round runs every row once, so load falls on all
alike), with ratios to the shipped detector computed within the run.  Writes OUTPUT (.md)
and a .json beside it, with the CPU line and the load average.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import Row, measure  # noqa: E402
from common import ROOT, camvid_frames, load_average, ort_meta, write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("others", nargs="+", metavar="LABEL=WEIGHTS",
                    help="detector weights to time beside the shipped one")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--rounds", type=int, default=300, help="timed rounds (default 300)")
    ap.add_argument("--max-seconds", type=float, default=240.0,
                    help="stop timing after this long (at least 5 rounds; default 240)")
    ap.add_argument("--output", type=Path, default=ROOT / "docs" / "detector_speed.md")
    args = ap.parse_args(argv)

    from fcn_perception import load_predictor
    from fcn_perception.card import DEFAULT_WEIGHTS, read_card, sha256_of

    models = {"shipped": Path(DEFAULT_WEIGHTS["detection"])}
    for spec in args.others:
        label, _, path = spec.partition("=")
        if not path:
            ap.error(f"{spec}: give LABEL=WEIGHTS")
        models[label] = Path(path)
    frame = camvid_frames(1)[0]
    load_before = load_average()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    rows = []
    for label, weights in models.items():
        if read_card(weights)["task"] != "detection":
            ap.error(f"{weights}: not a detection model")
        predictor = load_predictor("detection", backend="onnxruntime-cpu",
                                   weights=str(weights), num_threads=args.threads)
        rows.append(Row(label, "detection", "onnxruntime-cpu", True, predictor))
    print(f"timing {len(rows)} rows ...", flush=True)
    done = measure(rows, frame, args.rounds, 3, args.max_seconds)
    base = rows[0].p50
    meta = ort_meta(started, args.threads, **{
        "time": f"360x480 CamVid val frame, whole Predictor call, fp32, {done} round-robin rounds",
        "load average (1, 5, 15 min) before / after": f"{load_before} / {load_average()}"})
    table = [{"row": r.model, "weights": models[r.model].name,
              "weights_sha256": sha256_of(models[r.model]), "p50_ms": round(r.p50, 1),
              "p95_ms": round(r.p95, 1), "time_over_shipped": round(r.p50 / base, 2)}
             for r in rows]
    lines = [f"| {t['row']} | {t['p50_ms']:.1f} | {t['p95_ms']:.1f} | "
             f"{t['time_over_shipped']:.2f} |" for t in table]
    write_report(args.output, "R-FCN weights: CPU time per frame", "benchmarks/detector_speed.py",
                 meta, "| detector | p50 ms | p95 ms | time / shipped |\n|---|---:|---:|---:|",
                 lines, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
