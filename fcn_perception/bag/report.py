"""The HTML report of ``bag eval``: one self-contained ``index.html`` (pictures embedded
as data URIs; plots PNG, photographs JPEG) in the report folder, beside the pictures
themselves.

Contents: a summary (frames, drops, the models and the backend each ran on, headline
metrics), per-class IoU bars, the confusion matrix, latency histograms, sample overlays
(frame | ground truth | prediction) and detection examples (derived ground-truth boxes,
labelled with their class | predicted boxes, with class and score).  Header stamps are
shown as seconds (and as UTC time when they are wall-clock times).
"""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from fcn_perception.card import model_title
from fcn_perception.evaluation.plots import plot_latency_histogram
from fcn_perception.imaging.drawing import (
    blend,
    colorize,
    detection_labels,
    draw_detections,
    palette_lut,
)

#: the examples draw at most DRAW_TOP predicted boxes scoring DRAW_MIN or more (all are scored)
DRAW_TOP = 10
DRAW_MIN = 0.1
OVERLAY_ALPHA = 0.5


def _data_uri(path: Path) -> str:
    mime = "image/jpeg" if path.suffix in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _img(path, alt: str, width: str = "100%") -> str:
    return (f'<img src="{_data_uri(Path(path))}" alt="{html.escape(alt)}" '
            f'style="max-width:{width}">')


def format_stamp(stamp_ns: int) -> str:
    """A header stamp as ``"<seconds>.<ms> s"``, with the UTC time after it when the stamp
    is a wall-clock time (2000 or later; simulated and boot clocks start near 0)."""
    sec, ns = divmod(int(stamp_ns), 1_000_000_000)
    text = f"{sec}.{ns // 1_000_000:03d} s"
    if sec >= 946_684_800:
        utc = datetime.fromtimestamp(sec, tz=timezone.utc)
        text += f" ({utc:%Y-%m-%d %H:%M:%S}.{ns // 1_000_000:03d} UTC)"
    return text


def _runs_on(model: dict) -> str:
    """``"onnxruntime-cpu (cpu, fp32)"``, or why the backend is not known."""
    if not model.get("backend"):
        return ("not recorded (the predictions bag has no /diagnostics from the nodes; "
                "record it with the outputs)")
    extra = ", ".join(str(model[k]) for k in ("device", "precision") if model.get(k))
    return f"{model['backend']} ({extra})" if extra else str(model["backend"])


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(rows, head=None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _save_jpeg(rgb: np.ndarray, path: Path) -> Path:
    Image.fromarray(rgb).save(path, format="JPEG", quality=85)
    return path


def _sample_pictures(report_dir: Path, scorer, palette) -> tuple[list, list]:
    seg_lut = palette_lut(palette, len(palette))
    det_lut = None
    if scorer.det_eval is not None:
        det_lut = palette_lut([palette[i] if i < len(palette) else (255, 255, 0)
                               for i in scorer.box_rule.label_ids])
    out_dir = report_dir / "samples"
    out_dir.mkdir(exist_ok=True)
    overlays, detections = [], []  # (picture, caption) and (picture, caption, box labels)
    for s in scorer.samples:
        image, label, pred = s["image"], s["label"], s["pred"]
        name = f"frame{s['index']:05d}"
        caption = f"frame {s['index']}, stamp {format_stamp(s['stamp'])}"
        if scorer.conf is not None:
            gt = blend(image, colorize(label, seg_lut), OVERLAY_ALPHA)
            if pred.labels is not None:
                pr = blend(image, colorize(pred.labels, seg_lut), OVERLAY_ALPHA)
                acc = _frame_accuracy(label, pred.labels, scorer.ignore_index)
                cap = f"{caption}; pixel accuracy {acc:.3f}"
            else:
                pr = (image // 3).astype(np.uint8)
                cap = f"{caption}; no segmentation (dropped)"
            path = _save_jpeg(np.concatenate([image, gt, pr], axis=1), out_dir / f"{name}_seg.jpg")
            overlays.append((path, cap))
        if det_lut is not None and s["gt_boxes"] is not None:
            gt_boxes, gt_cls = s["gt_boxes"]
            classes = list(scorer.det_classes)
            left = draw_detections(image, gt_boxes, None, gt_cls, classes, det_lut)
            labels = "ground truth: " + (", ".join(detection_labels(None, gt_cls, classes))
                                         or "none")
            if pred.detections is not None:
                d = pred.detections
                boxes, scores, cls = d.boxes, d.scores, d.class_ids
                keep = np.argsort(-scores, kind="stable")[:DRAW_TOP]
                keep = keep[scores[keep] >= DRAW_MIN]
                right = draw_detections(image, boxes[keep], scores[keep], cls[keep], classes,
                                        det_lut)
                cap = (f"{caption}; {len(gt_boxes)} ground-truth boxes; {len(keep)} of "
                       f"{len(scores)} predicted boxes drawn (the best {DRAW_TOP} scoring "
                       f">= {DRAW_MIN})")
                labels += "; predicted: " + (", ".join(
                    detection_labels(scores[keep], cls[keep], classes)) or "none")
            else:
                right = (image // 3).astype(np.uint8)
                cap = f"{caption}; no detections (dropped)"
            path = _save_jpeg(np.concatenate([left, right], axis=1), out_dir / f"{name}_det.jpg")
            detections.append((path, cap, labels))
    return overlays, detections


def _frame_accuracy(label, pred, ignore_index) -> float:
    keep = label != ignore_index if ignore_index is not None else np.ones_like(label, bool)
    n = int(keep.sum())
    return float((label[keep] == pred[keep]).sum() / n) if n else 0.0


def write_report(report_dir: str | Path, result: dict, scorer, palette,
                 pictures: dict) -> Path:
    """Write ``report_dir/index.html``; return its path."""
    report_dir = Path(report_dir)
    live = result["mode"] == "live"
    parts = [f"<h1>bag eval: {html.escape(Path(result['bag']).name)}</h1>",
             f"<p>{'Live run (predictions recorded from the nodes)' if live else 'Offline'}"
             f" on <code>{html.escape(result['bag'])}</code>, images "
             f"<code>{html.escape(result['image_topic'])}</code>, ground truth "
             f"<code>{html.escape(result['label_topic'])}</code>.</p>"]
    fr = result["frames"]
    rows = []
    for task, model in result.get("models", {}).items():
        title = model_title(model) if model.get("architecture") else None
        weights = Path(model["weights"]).name if model.get("weights") else None
        if title or weights:
            rows.append((f"{task} model", " ".join(x for x in (title, weights and f"({weights})")
                                                   if x)))
        rows.append((f"{task} backend", _runs_on(model)))
    rows += [("frames with ground truth (scored)", fr["scored"]),
            ("frames without ground truth", fr["without_ground_truth"])]
    for task in ("segmentation", "detection"):
        if f"{task}_answered" in fr:
            rows.append((f"{task}: answered / dropped",
                         f"{fr[f'{task}_answered']} / {fr[f'{task}_dropped']}"))
    seg, det = result.get("segmentation"), result.get("detection")
    if seg:
        rows += [(name, seg[k]) for k, name in (
            ("pixel_accuracy", "pixel accuracy"), ("mean_accuracy", "mean accuracy"),
            ("mean_iou", "mean IoU"), ("fw_iou", "frequency-weighted IoU"))]
    if det:
        rows += [("detection mAP@0.5", det.get("map50")), ("detection mAP@[.5:.95]", det.get("map"))]
    for task, lat in result.get("latency_ms", {}).items():
        rows.append((f"{task} latency p50 / p95 (ms)",
                     f"{lat['p50']:.1f} / {lat['p95']:.1f} over {lat['frames']} frames"))
    parts += ["<h2>Summary</h2>", _table(rows)]
    if live and seg:
        parts.append("<p>Dropped frames count as misses: their labelled pixels are false "
                     "negatives of their class, their boxes missed detections. "
                     f"Answered frames only: mean IoU "
                     f"{_fmt(result['segmentation_answered']['mean_iou'])}, pixel accuracy "
                     f"{_fmt(result['segmentation_answered']['pixel_accuracy'])}. The confusion "
                     "matrix covers the answered frames.</p>")
    if seg:
        parts += ["<h2>Per-class IoU</h2>", _img(pictures["iou"], "per-class IoU", "640px"),
                  _table([(n, v, seg["per_class_accuracy"].get(n))
                          for n, v in seg["per_class_iou"].items()],
                         head=("class", "IoU", "accuracy")),
                  "<h2>Confusion matrix</h2>",
                  _img(pictures["confusion"], "confusion matrix", "760px")]
    if det:
        parts += ["<h2>Detection</h2>", _img(pictures["pr"], "precision-recall", "560px"),
                  _table([(n, ap, det["per_class_ap_coco"].get(n), det["num_gt"].get(n))
                          for n, ap in det["per_class_ap"].items()],
                         head=("class", "AP@0.5", "AP@[.5:.95]", "ground-truth boxes"))]
        rule = det.get("box_rule", {})
        parts.append(f"<p>Ground-truth boxes: {html.escape(rule.get('method', ''))} "
                     f"({', '.join(rule.get('classes', []))}; min area {rule.get('min_area')} px, "
                     f"{rule.get('connectivity')}-connected).</p>")
    if result.get("latency_ms"):
        parts += ["<h2>Latency</h2>",
                  f"<p>{html.escape(result['latency_kind'])}.</p>"]
        for task, values in scorer.latency.items():
            if values:
                path = plot_latency_histogram(values, report_dir / f"latency_{task}.png",
                                              title=f"{task} latency")
                parts.append(_img(path, f"{task} latency", "640px"))
    overlays, dets = _sample_pictures(report_dir, scorer, palette)
    if overlays:
        parts.append("<h2>Sample overlays</h2><p>frame | ground truth | prediction</p>")
        parts += [f"<figure>{_img(p, c)}<figcaption>{html.escape(c)}</figcaption></figure>"
                  for p, c in overlays]
    if dets:
        parts.append("<h2>Detection examples</h2><p>derived ground-truth boxes | predicted "
                     "boxes</p>")
        parts += [f"<figure>{_img(p, labels)}<figcaption>{html.escape(c)}</figcaption></figure>"
                  for p, c, labels in dets]
    parts.append(f"<p>Predictions bag: <code>{html.escape(str(result.get('predictions_bag')))}"
                 "</code>.</p>")
    style = ("body{font-family:sans-serif;max-width:1500px;margin:1em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:2px 8px;text-align:left}figure{margin:1em 0}"
             "figcaption{font-size:90%;color:#444}")
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>bag eval report"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
    path = report_dir / "index.html"
    path.write_text(page)
    return path
