"""Held-out accuracy of segmentation runs with the network at several input sizes: the
evidence for a model card's ``input.size`` (``train ship --input-size``).

    .venv/bin/python scripts/input_scale.py --run "Lite0 24 epochs=runs/fold_lite0" \
        --sizes 360x480 540x720 720x960 --out docs/heldout_input_scale.json

Each run's weights (``RUN/model.safetensors``) are scored on every frame of its own val
split (a held-out sequence, for a run of the sequence protocol) with the frame resized
to each size and the scores upsampled back (``fcn_perception.training.engine.scored_at_size``,
the Predictor of the nodes, ONNX Runtime).  Writes mean IoU, pixel accuracy and per-class
IoU per run and size.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from fcn_perception.card import read_card
from fcn_perception.training.engine import dataset_file_of, scored_at_size


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="LABEL=RUN")
    p.add_argument("--sizes", nargs="+", default=["360x480", "540x720", "720x960"],
                   metavar="HxW")
    p.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = p.parse_args(argv)
    sizes = []
    for text in args.sizes:
        h, sep, w = text.partition("x")
        if not sep or not h.isdigit() or not w.isdigit():
            sys.exit(f"error: --sizes {text!r}: expected HxW, e.g. 540x720")
        sizes.append([int(h), int(w)])
    report = {"command": "scripts/input_scale.py", "runs": {}}
    for spec in args.run:
        label, sep, folder = spec.partition("=")
        if not sep or not (Path(folder) / "model.safetensors").is_file():
            sys.exit(f"error: --run {spec!r}: expected LABEL=RUN_FOLDER of a finished run")
        training = read_card(Path(folder) / "model.safetensors")["training"]
        rows = {}
        for size in tqdm(sizes, desc=label):
            s = scored_at_size(Path(folder), size, training["data"], training["val_split"],
                               dataset_file_of(training))
            rows[f"{size[0]}x{size[1]}"] = {k: s[k] for k in (
                "mean_iou", "pixel_accuracy", "per_class_iou", "frames")}
        report["runs"][label] = {"run": folder, "val_split": training["val_split"],
                                 "sizes": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for label, run in report["runs"].items():
        for size, s in run["sizes"].items():
            print(f"{label:40s} {size:>8s} mean IoU {s['mean_iou']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
