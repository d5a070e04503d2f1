"""``fcn-perception export`` and ``build-engine``."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fcn_perception.errors import BackendUnavailable, CommandError
from fcn_perception.inference import calibration

TASK_CHOICES = ("segmentation", "detection")


def _add_model_args(p: argparse.ArgumentParser, required_task: bool = False) -> None:
    p.add_argument("--task", choices=TASK_CHOICES, required=required_task,
                   help="segmentation or detection (default: from the weights' card)")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights file (.safetensors/.pt with its .json card beside it); "
                   "default: the shipped weights for --task")


def _resolve(args) -> tuple[str, Path]:
    from fcn_perception.card import DEFAULT_WEIGHTS, read_card

    if args.weights is None:
        if args.task is None:
            raise CommandError("give --task or --weights")
        weights = DEFAULT_WEIGHTS[args.task]
        if not weights.is_file():
            raise CommandError(f"the default {args.task} weights {weights} are not installed; "
                               "pass --weights")
    else:
        weights = args.weights
    task = args.task or read_card(weights)["task"]
    return task, weights


def export_main(args) -> int:
    _setup_logging()
    import tempfile

    from fcn_perception.inference.export import (
        check_onnx,
        export_onnx,
        fp16_onnx,
        load_model,
        sha256_of,
    )

    task, weights = _resolve(args)
    out = Path(args.output or Path(weights).with_suffix(".onnx"))
    if args.precision == "int8":
        from fcn_perception.inference.quantize import check_int8_task

        check_int8_task(task)
    if args.precision == "int8" and args.calibration_images is None:
        raise CommandError("--precision int8 needs --calibration-images DIR (frames like the "
                           "camera's, e.g. ../shared/camvid/train)")
    model, card = load_model(weights, task)
    with tempfile.TemporaryDirectory(prefix="fcn_export_") as tmp:
        fp32 = out if args.precision == "fp32" else Path(tmp) / f"{out.stem}-fp32.onnx"
        export_onnx(model, task, fp32, card=card, opset=args.opset, height=args.height,
                    width=args.width, weights_sha256=sha256_of(weights),
                    confidence=args.confidence)
        check_onnx(fp32, task)
        detail = ""
        if args.precision == "fp16":
            fp16_onnx(fp32, output=out)
            detail = "fp16 trunk, fp32 post-processing; "
        elif args.precision == "int8":
            from fcn_perception.inference.preprocess import InputSpec
            from fcn_perception.inference.quantize import quantized_onnx

            quantized_onnx(fp32, args.calibration_images, InputSpec.from_card(card),
                           args.calibrator, args.calibration_limit, output=out,
                           fmt=args.int8_format)
            detail = (f"Q/DQ in {args.int8_format} format, {args.calibrator} calibration on "
                      f"{args.calibration_images}; ")
        check_onnx(out, task)
        size = out.stat().st_size / 1e6
        print(f"wrote {out} ({size:.1f} MB, {args.precision}, opset {args.opset}, {task}; "
              f"{detail}dynamic height/width; checked with onnx.checker and shape inference; "
              "model card embedded)")
        if args.check_images and args.precision != "fp32":
            _print_agreement(task, fp32, out, args, card)
    return 0


def _print_agreement(task: str, fp32: Path, candidate: Path, args, card: dict) -> None:
    """One line: how the exported variant agrees with fp32 on ``--check-images``."""
    from fcn_perception.inference.agreement import compare_frames, mean_iou, read_frames
    from fcn_perception.inference.predictor import load_predictor

    ref = load_predictor(task, "onnxruntime-cpu", fp32)
    cand = load_predictor(task, "onnxruntime-cpu", candidate)
    report = compare_frames(ref, cand, read_frames(args.check_images, args.check_limit))
    if task == "segmentation":
        line = (f"{args.precision} vs fp32 on {report['frames']} frames of "
                f"{args.check_images}: {100 * report['agreement']:.2f}% identical labels")
        labels = args.check_labels or Path(str(args.check_images).rstrip("/") + "annot")
        if labels.is_dir():
            k, ignore = int(card["architecture"]["num_classes"]), card.get("ignore_index")
            a = mean_iou(ref, args.check_images, labels, k, ignore, args.check_limit)
            b = mean_iou(cand, args.check_images, labels, k, ignore, args.check_limit)
            if a is not None:
                line += (f"; mean IoU fp32 {100 * a:.2f}%, {args.precision} {100 * b:.2f}%")
        arithmetic = getattr(cand.backend, "int8_arithmetic", None)
        if arithmetic:
            from fcn_perception.inference.int8_cpu import ARITHMETICS

            line += f" (int8 arithmetic: {ARITHMETICS[arithmetic]})"
    else:
        line = (f"{args.precision} vs fp32 on {report['frames']} frames of "
                f"{args.check_images}: {report['matched']} of {report['boxes']} boxes "
                f"(score >= 0.5) matched at IoU >= 0.9 "
                f"({100 * report['agreement']:.1f}%)")
    print(line)


def build_engine_main(args) -> int:
    _setup_logging()
    from fcn_perception.inference.backends.tensorrt_backend import get_engine, tensorrt_unavailable
    from fcn_perception.inference.engine_cache import Profile, sidecar_path
    from fcn_perception.inference.export import cached_onnx, check_onnx

    reason = tensorrt_unavailable()
    if reason:
        raise CommandError(f"cannot build a TensorRT engine here: {reason}")
    if args.onnx is not None:
        if args.task is None:
            raise CommandError("give --task with --onnx")
        task, onnx_path = args.task, args.onnx
    else:
        task, weights = _resolve(args)
        onnx_path = cached_onnx(weights, task)
    card = check_onnx(onnx_path, task)
    if task == "detection" and args.max_batch != 1:
        raise CommandError("--max-batch: detection engines take batch 1 only")
    profile = (Profile.parse(args.profile, args.max_batch) if args.profile
               else Profile.for_card(card, args.max_batch))
    try:
        path, built, why = get_engine(
            onnx_path, args.precision, profile, card=card, task=task, cache_dir=args.cache_dir,
            output=args.output, calibration_images=args.calibration_images,
            calibrator=args.calibrator, calibration_limit=args.calibration_limit,
            rebuild=args.rebuild, workspace=int(args.workspace_gb * (1 << 30)), gpu=args.gpu)
    except BackendUnavailable as exc:
        raise CommandError(str(exc)) from exc
    state = f"built ({why})" if built else "up to date (same key: not rebuilt)"
    print(f"engine: {path.resolve()}\n  {state}; {args.precision}, profile {profile}\n"
          f"  key and model card: {sidecar_path(path).resolve()}\n"
          f"  use it: set the node parameter model:={path.resolve()} (backend tensorrt), "
          f"or load_predictor({task!r}, 'tensorrt', {str(path.resolve())!r})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to ONNX: fp32, fp16 or int8 (Q/DQ), card embedded",
        description="Export weights to one self-contained ONNX file that the onnxruntime and "
        "tensorrt backends run: input 'image' (N,3,H,W) float32; segmentation output 'labels' "
        "(N,H,W) uint8 or 'logits'; detection outputs 'boxes', 'scores', 'labels', "
        "'num_detections', 'class_scores'. fp16 and int8 keep the input and outputs' types "
        "and the post-processing in fp32; TensorRT 10 and 11 build them strongly typed.")
    _add_model_args(p)
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="ONNX path (default: beside the weights, .onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--confidence", action="store_true",
                   help="segmentation with labels output: also output 'confidence' (the top "
                   "class's softmax probability per pixel), for the nodes' "
                   "segmentation/confidence topic with an ONNX file or a TensorRT engine")
    p.add_argument("--height", type=int, default=None,
                   help="tracing height (default: the card's input size, else 360; any size runs)")
    p.add_argument("--width", type=int, default=None,
                   help="tracing width (default: the card's input size, else 480)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="fp16: the convolutional trunk in fp16 (for TensorRT); int8: static "
                   "Q/DQ quantisation of the trunk, calibrated on --calibration-images")
    p.add_argument("--int8-format", choices=("tensorrt", "onnxruntime"), default="tensorrt",
                   help="tensorrt (default): symmetric int8, fp32 biases, what TensorRT builds; "
                   "onnxruntime: uint8 activations, faster on ONNX Runtime's CPU, not for "
                   "TensorRT")
    calibration.add_arguments(p)
    p.add_argument("--check-images", type=Path, default=None,
                   help="fp16/int8: compare with fp32 on these frames (e.g. ../shared/camvid/val)")
    p.add_argument("--check-labels", type=Path, default=None,
                   help="label maps for --check-images (default: the folder + 'annot')")
    p.add_argument("--check-limit", type=int, default=None,
                   help="compare on at most this many frames (default: all)")
    p.set_defaults(func=export_main)

    p = subparsers.add_parser(
        "build-engine", help="build (or confirm) the cached TensorRT engine and say where it is",
        description="Build a TensorRT engine (TensorRT 10.3+ or 11) from the ONNX export and "
        "cache it under a key of ONNX sha256 + ONNX variant + TensorRT version + GPU + compute "
        "capability + precision + profile + build flags. Rebuilds only when the key changes; "
        "run it once on the robot before launch, then point the node's `model` at the "
        "printed path.")
    _add_model_args(p)
    p.add_argument("--onnx", type=Path, default=None,
                   help="build from this ONNX file instead (fp32, or the fp16/int8 export)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16",
                   help="engine precision (default fp16); int8 from an int8 ONNX "
                        "(`export --precision int8`) or from the fp32 one with "
                        "--calibration-images")
    p.add_argument("--profile", default=None,
                   help="MINHxMINW:OPTHxOPTW:MAXHxMAXW (default 64x64:360x480:1088x1920, or "
                   "the card's fixed input size)")
    p.add_argument("--max-batch", type=int, default=1,
                   help="largest batch the engine takes (segmentation; default 1)")
    calibration.add_arguments(p)
    p.add_argument("--gpu", type=int, default=None, help="CUDA device index (default: current)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="engine cache folder (default $FCN_PERCEPTION_CACHE/engines)")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="write the engine here instead of the cache (a .json sidecar beside)")
    p.add_argument("--workspace-gb", type=float, default=2.0, help="builder workspace")
    p.add_argument("--rebuild", action="store_true", help="build even if the key matches")
    p.set_defaults(func=build_engine_main)


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
