"""Print the README's results tables, generated from the shipped model cards, the card of
the detector they replaced (docs/previous_detector_card.json) and the peer's metrics file
(docs/peer_fasterrcnn_val.json, written by its training run).

    python scripts/readme_tables.py            # print them
    python scripts/readme_tables.py --write    # replace them in README.md, between
                                               # <!-- BEGIN name table --> / <!-- END name table -->

test/test_readme_numbers.py checks that the README holds each table verbatim.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fcn_perception.card import MODELS, model_title, read_card
from fcn_perception.evaluation.tables import (
    detection_rows,
    detection_table,
    segmentation_tables,
    training_time,
)

ROOT = Path(__file__).resolve().parents[1]
PEER_METRICS = ROOT / "docs" / "peer_fasterrcnn_val.json"
#: the detector shipped before the held-out protocol (train only, the peer's training data)
PREVIOUS_DETECTOR = ROOT / "docs" / "previous_detector_card.json"
BENCH = ROOT / "docs" / "bench_cpu.md"


def bench_table(path: Path = BENCH) -> str:
    """The machine lines, the table and the ratios of benchmarks/bench_cpu.py's file."""
    lines = path.read_text().splitlines()
    keep = [ln for ln in lines if ln.startswith(("| ", "|---", "- date", "- cpu", "- threads",
                                                 "- frame", "- rounds", "- load average",
                                                 "- onnxruntime-cpu:", "- torch eager:"))]
    return "\n".join(keep)


def tables() -> dict[str, str]:
    """``name -> markdown table`` for every generated README table."""
    seg = [(f"{name}: {model_title(card)}" + (" at {}x{}".format(*card["input"]["size"])
                                              if card["input"].get("size") else ""), card)
           for name, card in
           ((name, read_card(path)) for name, path in MODELS["segmentation"].items()
            if path.is_file())]
    det = read_card(MODELS["detection"]["fast"])
    rows = detection_rows(f"**{model_title(det)} (shipped, fp16)**", det)
    if PREVIOUS_DETECTOR.is_file():
        prev = json.loads(PREVIOUS_DETECTOR.read_text())
        rows.append((f"{model_title(prev)}, previous (train only), val", prev["metrics"]["val"],
                     training_time(prev)))
    if PEER_METRICS.is_file():
        peer = json.loads(PEER_METRICS.read_text())
        rows.append((f"{peer['model']}, val (train only)", peer["val"], peer["time"]))
    return {"segmentation": segmentation_tables(seg), "detection": detection_table(rows),
            "benchmark": bench_table()}


def write_readme(path: Path = ROOT / "README.md") -> None:
    text = path.read_text()
    for name, table in tables().items():
        pattern = re.compile(rf"(<!-- BEGIN {name} table -->\n)(?:.*?\n)?(<!-- END {name} table -->)",
                             re.S)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no <!-- BEGIN {name} table --> ... <!-- END {name} "
                             "table --> markers; add them where the table goes")
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    path.write_text(text)
    print(f"updated {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help="update README.md in place")
    if p.parse_args().write:
        write_readme()
        return
    for name, text in tables().items():
        print(f"<!-- BEGIN {name} table -->\n{text}\n<!-- END {name} table -->\n")


if __name__ == "__main__":
    main()
