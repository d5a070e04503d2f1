"""Compare the per-epoch val history of training runs (an ablation, e.g. with and
without ``--ema-decay``), as a JSON summary and a picture.

    python scripts/compare_runs.py --run "no average=runs/det_v2" \
        --run "EMA 0.998=runs/det_v3" --keys val/map50 val/ap50_Pedestrian \
        --out docs/det_ema_ablation

Reads each run's ``metrics.jsonl`` (one row per epoch, written by the trainer) and
writes ``OUT.json`` (per key and run: every epoch's value, the best and its epoch, the
last, and the mean, min and max over the last ``--tail`` epochs) and ``OUT.png`` (one
panel per key, one line per run, a dotted line at the epoch the last run selects by the
first key, or its last epoch when it ran with ``--select last``).  ``--per-class`` adds
each run's per-class IoU of its shipped epoch on its val split (from ``RUN/model.json``)
to the JSON and draws them side by side in ``OUT_classes.png``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from fcn_perception.evaluation.plots import plot_iou_comparison, plot_training_curves


def read_history(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; --run takes LABEL=RUN_FOLDER of a training run")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def shipped_scores(run: Path) -> dict:
    card = run / "model.json"
    if not card.is_file():
        sys.exit(f"error: {card} does not exist; --per-class needs finished runs")
    return json.loads(card.read_text())["metrics"]["val"]


def summarise(values: list[float], epochs: list[int], tail: int) -> dict:
    """``values`` at the (1-based) ``epochs`` that were validated (a run with
    ``--val-every N`` has a value every N epochs)."""
    last = values[-tail:]
    best = max(range(len(values)), key=values.__getitem__)
    return {"best": values[best], "best_epoch": epochs[best], "last": values[-1],
            "last_epoch": epochs[-1], f"last_{len(last)}_mean": statistics.fmean(last),
            f"last_{len(last)}_min": min(last), f"last_{len(last)}_max": max(last),
            "per_epoch": values, "epochs": epochs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="LABEL=RUN")
    p.add_argument("--keys", nargs="+", default=["val/map50"])
    p.add_argument("--tail", type=int, default=10)
    p.add_argument("--out", required=True, help="path stem for OUT.json and OUT.png")
    p.add_argument("--per-class", action="store_true",
                   help="also compare the per-class IoU in each run's model.json")
    args = p.parse_args(argv)
    runs = {}
    for spec in args.run:
        label, sep, folder = spec.partition("=")
        if not sep or not label or "/" in label:
            sys.exit(f"error: --run {spec!r}: expected LABEL=RUN_FOLDER (no '/' in LABEL)")
        runs[label] = (folder, read_history(Path(folder)))
    report = {"command": "scripts/compare_runs.py", "runs": {k: v[0] for k, v in runs.items()},
              "metrics": {}}
    panels = []
    for key in args.keys:
        rows: dict[int, dict] = {}
        report["metrics"][key] = {}
        for label, (_, hist) in runs.items():
            scored = [r for r in hist if key in r]
            if not scored:
                sys.exit(f"error: run {label!r} has no {key!r} in its metrics.jsonl")
            report["metrics"][key][label] = summarise(
                [r[key] for r in scored], [r["epoch"] + 1 for r in scored], args.tail)
            for r in scored:
                rows.setdefault(r["epoch"], {"epoch": r["epoch"]})[f"{key}/{label}"] = r[key]
        panels.append({"title": key, "keys": [f"{key}/{label}" for label in runs],
                       "history": [rows[e] for e in sorted(rows)]})
    # the dotted line: the epoch the last run ships (its best by the first key, or its last)
    last_run = list(runs)[-1]
    scores = report["metrics"][args.keys[0]][last_run]
    config = Path(runs[last_run][0]) / "config.json"
    fixed = config.is_file() and json.loads(config.read_text()).get("select") == "last"
    selected = scores["last_epoch"] if fixed else scores["best_epoch"]
    for panel in panels:
        panel["selected"] = selected
    out = Path(args.out)
    if args.per_class:
        report["per_class_iou"] = {label: shipped_scores(Path(folder))["per_class_iou"]
                                   for label, (folder, _) in runs.items()}
        report["shipped_mean_iou"] = {label: shipped_scores(Path(folder))["mean_iou"]
                                      for label, (folder, _) in runs.items()}
        plot_iou_comparison(report["per_class_iou"], out.parent / f"{out.name}_classes.png",
                            "Per-class IoU of the shipped epoch on each run's val split")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot_training_curves(panels, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
