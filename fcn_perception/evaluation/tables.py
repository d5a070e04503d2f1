"""Markdown tables of a model card's metrics, for the README and docs.

The README's results tables are generated from the shipped cards by
``python scripts/readme_tables.py`` and a test checks that the README holds them
verbatim, so no number in them is typed by hand.
"""
from __future__ import annotations

from pathlib import Path


def _f(x) -> str:
    return "-" if x is None else f"{float(x):.3f}"


def _heldout_name(card: dict) -> str:
    held = card.get("heldout")
    return " + ".join(held["sequences"]) + " held out" if held else "held out"


def _schedule(card: dict) -> str:
    t = training_time(card)
    return f"{t.get('epochs_run', '-')} epochs, {t.get('train_loop_min', '-')} min"


def segmentation_tables(models: list[tuple[str, dict]]) -> str:
    """One column per ``(title, card)``: the held-out sequences' scores (``card["heldout"]``,
    the recipe trained without them), then val (``metrics.val``, on :func:`val_name`'s
    split, which the shipped weights may have trained on: ``metrics.val_in_training``);
    then per-class IoU held out, a row per model."""
    cards = [c for _, c in models]
    held = [c.get("heldout", {}).get("metrics") for c in cards]
    lines = ["| | " + " | ".join(t for t, _ in models) + " |", "|---|" + "---:|" * len(models)]
    for key, title in (("mean_iou", "mean IoU"), ("pixel_accuracy", "pixel accuracy"),
                       ("mean_accuracy", "mean accuracy")):
        lines.append(f"| {title}, {_heldout_name(cards[0])} | "
                     + " | ".join(_f(h and h[key]) for h in held) + " |")
    for key, title in (("mean_iou", "mean IoU"), ("pixel_accuracy", "pixel accuracy")):
        lines.append(f"| {title}, {val_name(cards[0])} | "
                     + " | ".join(_f(c["metrics"]["val"][key]) for c in cards) + " |")
    lines.append("| held-out run | " + " | ".join(
        _schedule(c["heldout"]) if c.get("heldout") else "-" for c in cards) + " |")
    lines.append("| shipped run | " + " | ".join(
        f"{_schedule(c)}, {c['training'].get('train_split', '-')}" for c in cards) + " |")
    names = list(cards[0]["classes"])
    lines += ["", f"Per-class IoU, {_heldout_name(cards[0])}:", "",
              "| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for (title, _), h in zip(models, held):
        iou = (h or {}).get("per_class_iou", {})
        lines.append(f"| {title} | " + " | ".join(_f(iou.get(n)) for n in names) + " |")
    return "\n".join(lines)


def val_name(card: dict) -> str:
    """What ``metrics.val`` scored: ``val`` (CamVid's val list), or the sequence of a
    repository split (``training/splits/camvid_0006R0.txt`` -> ``0006R0``), marked when
    the model trained on it (``metrics.val_in_training``)."""
    split = (card.get("training") or {}).get("val_split") or "val"
    name = Path(split).stem.removeprefix("camvid_")
    return name + (" (in its training set)" if card.get("metrics", {}).get("val_in_training")
                   else "")


def detection_table(rows: list[tuple[str, dict, dict]]) -> str:
    """One row per ``(title, metrics, time)``: mAP@0.5, mAP@[.5:.95] and AP50 per class of a
    metrics summary (``map50``, ``map``, ``per_class_ap``: a card's ``metrics.val`` or
    ``heldout.metrics``, a peer's file), and the epochs and minutes of its run."""
    classes = list(rows[0][1]["per_class_ap"])
    lines = ["| model, split | mAP@0.5 | mAP@[.5:.95] | "
             + " | ".join(f"AP50 {c}" for c in classes) + " | epochs | training (min) |",
             "|---|---:|---:|" + "---:|" * (len(classes) + 2)]
    for title, m, time in rows:
        lines.append(f"| {title} | {_f(m['map50'])} | {_f(m['map'])} | "
                     + " | ".join(_f(m["per_class_ap"].get(c)) for c in classes)
                     + f" | {time.get('epochs_run', '-')} | {time.get('train_loop_min', '-')} |")
    return "\n".join(lines)


def detection_rows(title: str, card: dict) -> list[tuple[str, dict, dict]]:
    """The held-out row (when the card has one) and the val row of a shipped card."""
    rows = []
    if card.get("heldout"):
        rows.append((f"{title}, {_heldout_name(card)}", card["heldout"]["metrics"],
                     card["heldout"].get("time", {})))
    rows.append((f"{title}, {val_name(card)}", card["metrics"]["val"],
                 training_time(card)))
    return rows


def training_time(d: dict) -> dict:
    """The ``{"epochs_run", "train_loop_min", ...}`` of a card (``training.time``) or of a
    peer's metrics file (``time``)."""
    return (d.get("training") or {}).get("time") or d.get("time") or {}
