"""Pictures of results: confusion matrices, per-class IoU bars, precision-recall curves,
latency histograms, training curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fcn_perception.evaluation.detection import DetectionEvaluator  # noqa: E402


def plot_confusion(matrix: np.ndarray, class_names, path: str | Path,
                   title: str = "Confusion matrix (rows: ground truth, normalised)") -> Path:
    """Row-normalised confusion matrix with percentages in the cells."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.55 * k))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_ylabel("ground truth")
    for i in range(k):
        for j in range(k):
            if norm[i, j] >= 0.005:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, ax, "predicted", title, path)


def plot_iou_bars(per_class_iou: dict, path: str | Path, palette=None,
                  title: str = "Per-class IoU") -> Path:
    """Horizontal bars of IoU per class (classes with no pixels are shown as n/a)."""
    names = list(per_class_iou)
    values = [per_class_iou[n] if per_class_iou[n] is not None else 0.0 for n in names]
    colors = [np.asarray(palette[i]) / 255 for i in range(len(names))] if palette else "tab:blue"
    fig, ax = plt.subplots(figsize=(6, 0.8 + 0.35 * len(names)))
    ax.barh(range(len(names)), values, color=colors, edgecolor="black", linewidth=0.5)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    for i, n in enumerate(names):
        v = per_class_iou[n]
        ax.text(min(values[i], 0.9) + 0.01, i, "n/a" if v is None else f"{v:.3f}",
                va="center", fontsize=8)
    valid = [v for v in per_class_iou.values() if v is not None]
    if valid:
        ax.axvline(float(np.mean(valid)), color="gray", ls="--", lw=1)
    return _save(fig, ax, "IoU", title, path)


def plot_iou_comparison(per_class_iou: dict[str, dict], path: str | Path,
                        title: str = "Per-class IoU") -> Path:
    """Grouped horizontal bars: ``{run label: {class: IoU}}``, one bar per run and class,
    the runs' mean IoU in the legend."""
    runs = list(per_class_iou)
    names = list(per_class_iou[runs[0]])
    height = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.25 * len(names) * len(runs)))
    for k, run in enumerate(runs):
        values = [per_class_iou[run].get(n) or 0.0 for n in names]
        ax.barh(np.arange(len(names)) + (k - (len(runs) - 1) / 2) * height, values, height,
                label=f"{run} (mean {np.mean(values):.3f})", edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, ax, "IoU", title, path)


def plot_pr_curves(evaluator: DetectionEvaluator, path: str | Path, palette=None,
                   title: str = "") -> Path:
    """Precision-recall curves of every class at IoU 0.5 (monotone envelope), as a PNG."""
    summary = evaluator.summary()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for c, name in enumerate(evaluator.class_names):
        if evaluator.num_gt[c] == 0:
            continue
        p, r = evaluator.curves(c, 0)
        if len(p):
            p = np.maximum.accumulate(p[::-1])[::-1]
        color = None if palette is None else np.asarray(palette[c]) / 255.0
        ax.plot(np.concatenate([[0], r]), np.concatenate([[p[0] if len(p) else 0], p]),
                label=f"{name} AP50={summary['per_class_ap'][name]:.3f}", color=color)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    title = title or f"Precision-recall at IoU 0.5 (mAP@0.5 = {summary['map50']:.3f})"
    return _save(fig, ax, "recall", title, path)


def plot_latency_histogram(latencies_ms, path: str | Path, title: str = "Latency") -> Path:
    """Histogram of per-frame latencies with p50/p95 marked."""
    lat = np.asarray(latencies_ms, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if lat.size:
        ax.hist(lat, bins=min(40, max(5, lat.size // 2)), color="tab:blue", alpha=0.8)
        for q, style in ((50, "--"), (95, ":")):
            v = float(np.percentile(lat, q))
            ax.axvline(v, color="black", ls=style, lw=1, label=f"p{q} {v:.1f} ms")
        ax.legend()
    ax.set_ylabel("frames")
    return _save(fig, ax, "ms per frame", title, path)


def plot_training_curves(panels: list[dict], path: str | Path) -> Path:
    """One panel per dict ``{"title", "history", "keys", "selected"}``: the ``keys`` of
    each per-epoch ``history`` row (a card's ``training.history``) against the epoch,
    with the selected epoch marked."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for key in panel["keys"]:  # the epochs that were validated
            rows = [r for r in panel["history"] if r.get(key) is not None]
            ax.plot([r["epoch"] + 1 for r in rows], [r[key] for r in rows], marker=".",
                    label=key.split("/")[-1])
        ax.axvline(panel["selected"], color="grey", ls=":", label="selected")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    for ax, panel in zip(axes[0][:-1], panels[:-1]):
        ax.set_xlabel("epoch")
        ax.set_title(panel["title"], fontsize=10)
    return _save(fig, axes[0][-1], "epoch", panels[-1]["title"], path)


def _save(fig, ax, xlabel: str, title: str, path: str | Path) -> Path:
    """Label, title, lay out, write (PNG by the path's suffix) and close a figure."""
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
