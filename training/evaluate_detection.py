"""Evaluate a detector: mAP@0.5 and COCO mAP@[.5:.95], per-class AP, a PR curve.

    fcn-perception evaluate detection --data ../shared/camvid --split val.txt \
        [--weights PATH] [--backend onnxruntime] --json out/det_val.json

Without ``--weights`` the shipped default detector
(``fcn_perception/weights/rfcn_efficientnet_lite0_camvid.safetensors`` and its card) is used.
It runs through the same :class:`~fcn_perception.inference.predictor.Predictor` as the
nodes, on the backend ``--backend`` names (``auto``: the best available here), with no
score threshold beyond the model's own, so every backend and precision is scored the
same way.
On a CamVid-layout folder the ground-truth boxes are derived from the label maps with
the rule recorded in the model card (classes, minimum area, connectivity), the rule
the model was trained with; a ``.json`` split is read as COCO annotations.
The precision-recall PNG goes next to the JSON (``<json stem>_pr.png``) unless
``--pr-png`` says otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fcn_perception.card import DEFAULT_WEIGHTS, read_card
from fcn_perception.evaluation.boxes import BoxRule
from fcn_perception.evaluation.detection import DetectionEvaluator
from fcn_perception.evaluation.plots import plot_pr_curves
from fcn_perception.inference.backends import NAMES as BACKEND_NAMES
from fcn_perception.training.det_data import image_tensor, open_detection_split
from fcn_perception.weights_io import load_weights_into


@torch.inference_mode()
def evaluate_model(predict, source, mean, std, device, desc: str = "val",
                   max_dets: int = 100) -> tuple[DetectionEvaluator, float]:
    """Run ``predict`` (``(1,3,H,W) tensor -> [dict(boxes, scores, labels)]``) over a
    detection source; return the filled evaluator and the median ms per frame."""
    ev = DetectionEvaluator(source.classes, max_dets)
    times = []
    for i in tqdm(range(len(source)), desc=desc, leave=False):
        image = source.load_image(i)
        gt_boxes, gt_labels = source.boxes(i)
        x = image_tensor(image, mean, std)[None].to(device)
        t0 = time.perf_counter()
        det = predict(x)[0]
        times.append(1000 * (time.perf_counter() - t0))
        ev.add(det["boxes"].float().cpu().numpy(), det["scores"].float().cpu().numpy(),
               det["labels"].cpu().numpy(), gt_boxes, gt_labels)
    return ev, float(np.median(times)) if times else 0.0


def evaluate_detector(predictor, source, desc: str = "evaluate"
                      ) -> tuple[DetectionEvaluator, float]:
    """Run a detection Predictor (uint8 RGB frame -> DetectionResult) over a detection
    source; return the filled evaluator and the median backend latency (ms)."""
    ev = DetectionEvaluator(source.classes, predictor.max_detections or int(
        predictor.card.get("architecture", {}).get("max_detections", 100)))
    times = []
    for i in tqdm(range(len(source)), desc=desc, leave=False):
        gt_boxes, gt_labels = source.boxes(i)
        det = predictor(source.load_image(i), score_threshold=0.0)
        times.append(det.latency_ms)
        ev.add(det.boxes, det.scores, det.class_ids, gt_boxes, gt_labels)
    return ev, float(np.median(times)) if times else 0.0


def load_detector(weights: str | Path | None = None, device="cpu"):
    """(model in eval mode, card) from a weights file and its card (default: shipped)."""
    from fcn_perception.models import build_model

    weights = Path(weights) if weights else DEFAULT_WEIGHTS["detection"]
    card = read_card(weights)
    if card.get("task") != "detection":
        raise ValueError(f"{weights} is a {card.get('task')!r} model, not a detector")
    model = build_model(card["architecture"])
    load_weights_into(model, weights, card)
    return model.to(device).eval(), card


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="CamVid folder (boxes derived from label maps) or COCO image folder")
    p.add_argument("--split", required=True,
                   help="CamVid split file/name, or a COCO annotation .json")
    p.add_argument("--weights", default=None,
                   help="detector weights (.safetensors with its .json card); "
                        "default: the shipped R-FCN")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="inference backend (auto: the best available here)")
    p.add_argument("--precision", default=None, choices=("fp32", "fp16", "int8"),
                   help="backend precision (default: the backend's)")
    p.add_argument("--json", required=True, help="where to write the metrics JSON")
    p.add_argument("--pr-png", default=None, help="precision-recall plot (default: beside --json)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the backend runs; cpu/cuda narrow the backend choice "
                        "(default auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: the physical cores)")
    p.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)


def eval_main(args: argparse.Namespace) -> int:
    from fcn_perception import load_predictor

    predictor = load_predictor("detection", backend=args.backend, weights=args.weights,
                               precision=args.precision, device=args.device,
                               num_threads=args.threads or None)
    card = predictor.card
    rule = BoxRule.from_card(card)  # the rule bag eval reads too
    source = open_detection_split(args.data, args.split, card["classes"], rule.min_area,
                                  rule.connectivity, args.limit)
    print(f"{len(source)} frames, backend {predictor.backend_name} ({predictor.precision})",
          file=sys.stderr)
    ev, ms = evaluate_detector(predictor, source)
    summary = ev.summary()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = Path(args.pr_png) if args.pr_png else out.with_name(out.stem + "_pr.png")
    plot_pr_curves(ev, png, card.get("palette"))
    result = {
        **summary,
        "weights": str(args.weights or DEFAULT_WEIGHTS["detection"]),
        "data": str(args.data), "split": str(args.split),
        "ground_truth": getattr(source, "rule", None),
        "ms_per_frame_median": ms, "backend": predictor.backend_name,
        "precision": predictor.precision,
        "pr_curve_png": str(png),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("map50", "map", "per_class_ap")}, indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_eval_args(parser)
    return eval_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
