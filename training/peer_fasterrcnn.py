"""Train the detection peer of the README's comparison: torchvision's Faster R-CNN
with an FPN on the ImageNet EfficientNet-Lite0 backbone
(:func:`fcn_perception.training.fasterrcnn_peer.build_fasterrcnn_peer`).

    python -m fcn_perception.training.peer_fasterrcnn --data ../shared/camvid \
        --out runs/peer_frcnn --pretrained imagenet --epochs 16 --batch-size 4 --lr 0.02 \
        --scale-range 0.75 1.25 --ema-decay 0.998 --threads 1

Trained by the same loop, on the same boxes, with the same augmentation, schedule and
weight average as R-FCN (:func:`fcn_perception.training.train_detection.train_loop`).  The best epoch
(val mAP@0.5) is saved as ``OUT/model.safetensors`` (fp32) with ``OUT/metrics.json``;
it is not shipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fcn_perception.training import engine
from fcn_perception.training.fasterrcnn_peer import NAME, build_fasterrcnn_peer
from fcn_perception.training.train_detection import add_common_args, train_loop


class FasterRCNNAdapter:
    """Adapter of the shared loop for torchvision's Faster R-CNN (labels shifted by 1)."""

    name = NAME
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # the model normalises internally

    def __init__(self, args: argparse.Namespace, classes) -> None:
        self.model = build_fasterrcnn_peer(len(classes), args.pretrained)

    def train_mode(self, model) -> None:
        model.train()

    def losses(self, model, images, targets, sizes) -> dict:
        ims = [images[i, :, :h, :w] for i, (h, w) in enumerate(sizes)]
        tg = [{"boxes": t["boxes"].to(images.device), "labels": t["labels"].to(images.device) + 1}
              for t in targets]
        return model(ims, tg)

    def predict(self, model, x):
        out = model.eval()(list(x))
        return [{**o, "labels": o["labels"] - 1} for o in out]

    def finish(self, run_dir: Path, config: dict, train_src, val_src, device) -> dict:
        from fcn_perception.evaluation.plots import plot_pr_curves
        from fcn_perception.training.evaluate_detection import evaluate_model
        from fcn_perception.weights_io import save_state_dict

        state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
        weights = engine.selected_weights(state)
        save_state_dict(weights, run_dir / "model.safetensors")
        self.model.load_state_dict(weights)
        model = self.model.to(device).eval()
        ev, ms = evaluate_model(lambda x: self.predict(model, x), val_src, self.mean, self.std,
                                device, "val (best)")
        plot_pr_curves(ev, run_dir / "val_pr.png", getattr(val_src, "palette", None))
        return {"best_epoch": int(state["epoch"]) + 1, "val": ev.summary(),
                "val_ms_per_frame": ms}


def benchmark(predictors: dict, image, runs: int = 30, warmup: int = 3) -> dict:
    """Median and p90 ms per frame of each ``name -> callable(image)``, runs interleaved
    (so background load falls on every model alike)."""
    import time

    import numpy as np

    times = {name: [] for name in predictors}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for name, predict in predictors.items():
                t0 = time.perf_counter()
                predict(image)
                if i >= warmup:
                    times[name].append(1000 * (time.perf_counter() - t0))
    return {name: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
                   "runs": runs} for name, t in times.items()}


def bench_main(argv=None) -> int:
    """``python -m fcn_perception.training.peer_fasterrcnn bench --rfcn W --peer W``:
    eager PyTorch ms/frame of both detectors on one CamVid frame (1 image per call)."""
    import numpy as np
    from PIL import Image

    from fcn_perception.training.det_data import image_tensor
    from fcn_perception.training.evaluate_detection import load_detector
    from fcn_perception.weights_io import load_state_dict

    p = argparse.ArgumentParser(description=bench_main.__doc__.split("\n")[0])
    p.add_argument("--rfcn", default=None, help="R-FCN weights (default: shipped)")
    p.add_argument("--peer", required=True, help="the peer's model.safetensors")
    p.add_argument("--image", required=True, help="an RGB frame (e.g. a CamVid val PNG)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frame = np.asarray(Image.open(args.image).convert("RGB"))
    rfcn, card = load_detector(args.rfcn)
    peer = build_fasterrcnn_peer(len(card["classes"]), None).eval()
    peer.load_state_dict(load_state_dict(args.peer))
    x_rfcn = image_tensor(frame, card["input"]["mean"], card["input"]["std"])[None]
    x_peer = image_tensor(frame, (0, 0, 0), (1, 1, 1))[None]
    result = benchmark({"rfcn": lambda _: rfcn(x_rfcn), "peer": lambda _: peer(list(x_peer))},
                       None, args.runs)
    result["setup"] = {"threads": args.threads, "size": list(frame.shape[:2]),
                       "torch": torch.__version__, "mode": "eager, inference_mode, batch 1"}
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--pretrained", default="imagenet",
                        help="backbone init: 'imagenet' (the EfficientNet-Lite0 wheel) or none")
    parser.add_argument("--metrics-out", default=None, metavar="JSON",
                        help="also write the val metrics, recipe and training time here "
                             "(the README's peer row: docs/peer_fasterrcnn_val.json)")
    args = parser.parse_args(argv)
    if args.pretrained == "none":
        args.pretrained = None
    summary = train_loop(args, FasterRCNNAdapter)
    if summary and args.metrics_out:
        from fcn_perception.training.engine import training_time

        recipe = {k: getattr(args, k) for k in ("epochs", "batch_size", "optimizer", "lr",
                                                 "weight_decay", "warmup_epochs", "pretrained",
                                                 "scale_range", "ema_decay", "threads")}
        Path(args.metrics_out).write_text(json.dumps({
            "model": NAME, "val": summary["val"], "best_epoch": summary["best_epoch"],
            "val_ms_per_frame": summary["val_ms_per_frame"], "recipe": recipe,
            "time": training_time(args.out)}, indent=2) + "\n")
    if summary:
        print(json.dumps({"best_epoch": summary["best_epoch"], "map50": summary["val"]["map50"],
                          "map": summary["val"]["map"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
