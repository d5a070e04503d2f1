"""Score a segmentation Predictor on a labelled split (the FCN paper's metrics).

    fcn-perception evaluate segmentation --data ../shared/camvid --split val.txt \
        --json out/val.json [--weights W.safetensors] [--backend torch]
    fcn-perception evaluate segmentation --dataset my_data.yaml --split val \
        --weights runs/mine/model.safetensors --json out/mine_val.json

Prints and writes ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``, ``fw_iou`` and
``per_class_iou`` (fractions in [0, 1]), plus ``<json stem>_confusion.png`` and
``<json stem>_iou.png`` beside the JSON.
"""
from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from fcn_perception.errors import DatasetError
from fcn_perception.evaluation.segmentation import ConfusionMatrix, write_outputs
from fcn_perception.inference.backends import NAMES as BACKEND_NAMES
from fcn_perception.training.dataset_file import LabelledImages, dataset_from_args


def evaluate_segmentation(predictor, dataset: LabelledImages, progress: bool = True):
    """Run ``predictor`` on every frame of ``dataset``; return (scores, ConfusionMatrix).

    Class names come from the predictor's model card; the dataset's labels must use the
    same ids (its ignore index is left out).
    """
    classes = list(predictor.classes)
    conf = ConfusionMatrix(len(classes), dataset.ignore_index)
    latencies = []
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=not progress):
        image, label = dataset.load(i)
        result = predictor(image)
        if result.labels.shape != label.shape:
            raise ValueError(
                f"prediction {result.labels.shape} and label {label.shape} differ in size"
            )
        conf.update(label, result.labels)
        latencies.append(result.latency_ms)
    scores = conf.scores(classes)
    scores["frames"] = len(dataset)
    scores["latency_ms_p50"] = float(np.percentile(latencies, 50)) if latencies else 0.0
    return scores, conf


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, metavar="FILE.yaml",
                   help="dataset description (default: CamVid at --data)")
    p.add_argument("--data", default=None,
                   help="CamVid folder; with --dataset: the data set's root folder")
    p.add_argument("--split", required=True,
                   help="a split of the description (val) or a list file (val.txt)")
    p.add_argument("--weights", default=None,
                   help="weights file or model name (default: fast, the shipped FCN-8s)")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="inference backend (auto: the best available here)")
    p.add_argument("--json", required=True, help="metrics JSON to write")


def eval_main(args: argparse.Namespace) -> int:
    from fcn_perception import load_predictor

    predictor = load_predictor("segmentation", backend=args.backend, weights=args.weights)
    dataset = dataset_from_args(args).open(args.split)
    if list(dataset.classes) != list(predictor.classes):
        raise DatasetError(f"the model's classes {list(predictor.classes)} are not those of "
                           f"{dataset.description.source} {list(dataset.classes)}; evaluate "
                           "on the data set the model was trained for")
    scores, conf = evaluate_segmentation(predictor, dataset)
    written = write_outputs(scores, conf, predictor.classes, predictor.palette, args.json)
    print(f"{len(dataset)} frames, backend {predictor.backend_name}")
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        print(f"  {key:15s} {scores[key]:.4f}")
    for name, iou in scores["per_class_iou"].items():
        print(f"  IoU {name:12s} {'n/a' if iou is None else f'{iou:.4f}'}")
    print(f"wrote {args.json}, {written['confusion_png']}, {written['iou_png']}")
    return 0
