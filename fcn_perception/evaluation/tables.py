"""Markdown tables of a model card's metrics, for the README and docs.

The README's results tables are generated from the shipped cards by
``python scripts/readme_tables.py`` and a test checks that the README holds them
verbatim, so no number in them is typed by hand.
"""
from __future__ import annotations


def _f(x) -> str:
    return "-" if x is None else f"{float(x):.3f}"


def segmentation_tables(card: dict, split: str = "val") -> str:
    """The FCN paper's four metrics, then per-class IoU, of ``card["metrics"][split]``."""
    m = card["metrics"][split]
    names = list(card["classes"])
    lines = ["| metric | " + split + " |", "|---|---:|"]
    for key, title in (("pixel_accuracy", "pixel accuracy"), ("mean_accuracy", "mean accuracy"),
                       ("mean_iou", "mean IoU"), ("fw_iou", "frequency-weighted IoU")):
        lines.append(f"| {title} | {_f(m[key])} |")
    time = training_time(card)
    lines.append(f"| training | {time.get('epochs_run', '-')} epochs, "
                 f"{time.get('train_loop_min', '-')} min (selected: epoch "
                 f"{card.get('selected_epoch', '-')}) |")
    iou = m["per_class_iou"]
    lines += ["", "| " + " | ".join(names) + " |", "|" + "---:|" * len(names),
              "| " + " | ".join(_f(iou.get(n)) for n in names) + " |"]
    return "\n".join(lines)


def detection_table(rows: list[tuple[str, dict]], split: str = "val") -> str:
    """One row per ``(title, card-or-summary)``: mAP@0.5, mAP@[.5:.95] and AP50 per class.

    Each dict holds ``metrics[split]`` (a card) or is the metrics summary itself
    (``map50``, ``map``, ``per_class_ap``).
    """
    first = rows[0][1]
    m0 = first.get("metrics", {}).get(split, first)
    classes = list(m0["per_class_ap"])
    lines = ["| model | mAP@0.5 | mAP@[.5:.95] | " + " | ".join(f"AP50 {c}" for c in classes)
             + " | epochs | training (min) |", "|---|---:|---:|" + "---:|" * (len(classes) + 2)]
    for title, d in rows:
        m = d.get("metrics", {}).get(split, d)
        time = training_time(d)
        lines.append(f"| {title} | {_f(m['map50'])} | {_f(m['map'])} | "
                     + " | ".join(_f(m["per_class_ap"].get(c)) for c in classes)
                     + f" | {time.get('epochs_run', '-')} | {time.get('train_loop_min', '-')} |")
    return "\n".join(lines)


def training_time(d: dict) -> dict:
    """The ``{"epochs_run", "train_loop_min", ...}`` of a card (``training.time``) or of a
    peer's metrics file (``time``)."""
    return (d.get("training") or {}).get("time") or d.get("time") or {}
