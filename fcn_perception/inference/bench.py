"""``fcn-perception bench``: our models on every backend vs. the torchvision peers.

Each row times whole calls on a real frame resized to the row's size: for our models the
full :class:`~fcn_perception.inference.predictor.Predictor` call (preprocess, backend,
postprocess), for the peers an eager ``torch.inference_mode`` forward on a ready tensor
(plus the argmax for segmentation).  The "limit" column is the machine's floor for that
model: its FLOPs (``torch.utils.flop_counter``) divided by the GEMM FLOP/s measured in the
same run (best of several float32 ``torch.mm`` of 2048x2048 on the same threads).
"""
from __future__ import annotations

import datetime
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcn_perception.models.fasterrcnn_peer import NAME as PEER_NAME

log = logging.getLogger("fcn_perception.inference")

PEERS = {
    "segmentation": ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"),
    "detection": (PEER_NAME, "fasterrcnn_mobilenet_v3_large_fpn"),
}
ARCH_NAMES = {"fcn8s": "FCN-8s", "fcn16s": "FCN-16s", "fcn32s": "FCN-32s", "unet": "U-Net",
              "rfcn": "R-FCN"}
BACKBONE_NAMES = {"efficientnet_lite0": "EfficientNet-Lite0", "efficientnet_lite1":
                  "EfficientNet-Lite1", "efficientnet_lite2": "EfficientNet-Lite2",
                  "resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
                  "resnet101": "ResNet-101", "vgg16": "VGG16"}


def model_title(card: dict) -> str:
    """``"FCN-8s EfficientNet-Lite0"`` from a card's architecture."""
    arch = card.get("architecture") or {}
    name = ARCH_NAMES.get(arch.get("name"), str(arch.get("name")))
    backbone = arch.get("backbone")
    return f"{name} {BACKBONE_NAMES.get(backbone, backbone)}" if backbone else name


@dataclass
class Row:
    model: str
    backend: str
    size: tuple[int, int]
    times_ms: list[float]
    gflop: float | None
    limit_ms: float | None
    note: str = ""
    task: str = ""
    ours: bool = False

    @property
    def p50(self) -> float:
        return float(np.percentile(self.times_ms, 50))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.times_ms, 95))

    @property
    def fps(self) -> float:
        return 1000.0 / float(np.mean(self.times_ms))


def gemm_flops(device: str = "cpu", n: int = 2048, repeats: int = 5, dtype=None) -> float:
    """Best FLOP/s of an ``n x n`` matrix product (float32 unless ``dtype``)."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        if i:  # the first run warms up
            best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def count_flops(module, x) -> float:
    """FLOPs of one forward of ``module(x)`` (convolutions and matrix products)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(x)
    return float(counter.get_total_flops())


def time_calls(fn, warmup: int, iterations: int, max_seconds: float) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iterations:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
        if len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return times


def bench_frame(path: Path | None) -> np.ndarray:
    from PIL import Image

    candidates = [path] if path else []
    here = Path(__file__).resolve().parents[2]
    for folder in (here.parent / "shared" / "camvid" / "val", Path("../shared/camvid/val"),
                   here / "fcn_perception" / "data" / "camvid_sample" / "val"):
        if folder.is_dir():
            candidates += sorted(folder.glob("*.png"))[:1]
    for c in candidates:
        if c and Path(c).is_file():
            return np.asarray(Image.open(c).convert("RGB"))
    return np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)


def untrained_weights(task: str, folder: Path) -> Path:
    """A default-architecture model with random weights (timing does not need training)."""
    import torch

    from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD, write_card
    from fcn_perception.models import build_model
    from fcn_perception.weights_io import save_state_dict

    if task == "segmentation":
        arch = {"name": "fcn8s", "backbone": "efficientnet_lite0", "num_classes": 11}
    else:
        from fcn_perception.models.rfcn import architecture

        arch = architecture()
    torch.manual_seed(0)
    model = build_model(arch)
    path = folder / f"untrained_{task}.safetensors"
    save_state_dict(model.state_dict(), path)
    card = {"task": task, "architecture": arch,
            "classes": [f"class{i}" for i in range(int(arch["num_classes"]))],
            "input": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "size": None}}
    write_card(card, path)
    return path


def _peer(name: str, num_classes: int, weights: Path | None):
    """A torchvision peer (random weights: timing only), or the Lite0 Faster R-CNN
    peer with its trained ``weights`` when given."""
    import torchvision

    if name == PEER_NAME:
        from fcn_perception.models.fasterrcnn_peer import build_fasterrcnn_peer
        from fcn_perception.weights_io import load_state_dict

        model = build_fasterrcnn_peer(num_classes)
        if weights:
            model.load_state_dict(load_state_dict(weights))
        return model.eval()
    builder = getattr(torchvision.models.segmentation, name, None) or getattr(
        torchvision.models.detection, name)
    return builder(weights=None, weights_backbone=None).eval()


def _resize(frame: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from fcn_perception.inference.preprocess import resize_rgb

    return frame if frame.shape[:2] == hw else resize_rgb(frame, hw)


def run_bench(args) -> list[Row]:
    import torch

    from fcn_perception.card import DEFAULT_WEIGHTS
    from fcn_perception.inference.backends import CONCRETE, available_backends, canonical_name
    from fcn_perception.inference.engine_cache import parse_hw
    from fcn_perception.inference.export import export_module, load_model
    from fcn_perception.inference.predictor import load_predictor

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    threads = getattr(args, "threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    sizes = [parse_hw(s) for s in args.sizes]
    available = available_backends()
    if args.backends:
        backends = [canonical_name(b) for b in args.backends]
        bad = [b for b in backends if b not in CONCRETE]
        if bad:
            raise ValueError(f"bench needs concrete backends, not {bad}; choose from {CONCRETE}")
        for b in backends:
            if available[b]:
                log.warning("skipping %s: %s", b, available[b])
        backends = [b for b in backends if not available[b]]
    else:
        backends = [b for b in CONCRETE if not available[b]]
    frame = bench_frame(args.image)
    max_seconds = float(getattr(args, "max_seconds", 60.0))
    log.info("measuring GEMM FLOP/s ...")
    cpu_gemm = gemm_flops("cpu")
    gpu_gemm = {}
    if torch.cuda.is_available():
        gpu_gemm = {"fp32": gemm_flops("cuda", 4096),
                    "fp16": gemm_flops("cuda", 4096, dtype=torch.float16)}
    rows: list[Row] = []
    tmp = tempfile.TemporaryDirectory(prefix="fcn_bench_")
    notes = []
    for task in args.tasks:
        weights = getattr(args, f"{task}_weights", None)
        if weights is None:
            weights = DEFAULT_WEIGHTS[task]
            if not weights.is_file():
                weights = untrained_weights(task, Path(tmp.name))
                notes.append(f"{task}: untrained weights (the shipped file was not there)")
        model, card = load_model(weights, task)
        title = model_title(card)
        net_size = (card.get("input") or {}).get("size")
        if net_size:
            notes.append(f"{title}: the card runs the network at {net_size[0]}x"
                         f"{net_size[1]} (frames resized, scores upsampled back)")
        wrapped = export_module(model, task).eval()
        flops = {hw: count_flops(wrapped, torch.zeros(1, 3, *(net_size or hw))) for hw in sizes}
        variants = [(b, None) for b in backends]
        calib = getattr(args, "int8_calibration", None)
        if task == "segmentation" and calib and "onnxruntime-cpu" in backends:
            variants.append(("onnxruntime-cpu", "int8"))
        for backend, precision in variants:
            try:
                predictor = load_predictor(task, backend=backend, weights=weights,
                                           precision=precision, num_threads=threads,
                                           **({"calibration_images": calib} if precision else {}))
            except Exception as exc:  # report, keep benchmarking the rest
                log.warning("%s on %s failed to load: %s", task, backend, exc)
                continue
            label = backend + (f" {precision}" if precision else "")
            for hw in sizes:
                img = _resize(frame, hw)
                log.info("timing %s on %s at %dx%d", title, label, *hw)
                times = time_calls(lambda p=predictor, i=img: p(i), args.warmup,
                                   args.iterations, max_seconds)
                rate = cpu_gemm if backend.endswith("cpu") else gpu_gemm.get(
                    "fp16" if predictor.backend.precision in ("fp16", "int8") else "fp32")
                rows.append(Row(title, label, hw, times, flops[hw] / 1e9,
                                flops[hw] / rate * 1000 if rate else None, task=task, ours=True))
            del predictor
        if not args.peers:
            continue
        for name in PEERS[task]:
            peer_weights = getattr(args, "peer_weights", None) if name == PEER_NAME else None
            peer = _peer(name, len(card["classes"]), peer_weights)
            for hw in sizes:
                x = torch.from_numpy(_resize(frame, hw).copy()).permute(2, 0, 1)[None].float() / 255.0
                if task == "segmentation":
                    def fn(m=peer, x=x):
                        with torch.inference_mode():
                            return m(x)["out"].argmax(1)
                    gflop = count_flops(lambda t, m=peer: m(t)["out"], x) / 1e9
                    note = ""
                else:
                    def fn(m=peer, x=x):
                        with torch.inference_mode():
                            return m(list(x))
                    gflop = count_flops(lambda t, m=peer: m(list(t)), x) / 1e9
                    note = ("trained weights" if peer_weights else "untrained") + (
                        "" if name == PEER_NAME else ", resizes internally to min side 800")
                log.info("timing %s (torch eager) at %dx%d", name, *hw)
                times = time_calls(fn, min(args.warmup, 1) if args.warmup else 0,
                                   args.iterations, max_seconds)
                rows.append(Row(name, "torch-cpu eager", hw, times, gflop,
                                gflop * 1e9 / cpu_gemm * 1000, note, task=task))
    tmp.cleanup()
    text = render(rows, cpu_gemm, gpu_gemm, notes)
    print(text)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log.info("wrote %s", out)
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summary(rows: list[Row]) -> list[str]:
    """Lines comparing our best row at 360x480 with the peers and the FLOP limit."""
    out = []
    at = [r for r in rows if r.size == (360, 480)]

    def best(model=None, task=None):  # fp32 rows: the claims are for the default precision
        cands = [r for r in at if not r.backend.endswith("int8") and (
            r.model == model if model else (r.ours and r.task == task))]
        return min(cands, key=lambda r: r.p50) if cands else None

    seg, det = best(task="segmentation"), best(task="detection")
    fcn50, dl = best("fcn_resnet50"), best("deeplabv3_mobilenet_v3_large")
    lraspp = best("lraspp_mobilenet_v3_large")
    frcnn, peer = best("fasterrcnn_mobilenet_v3_large_fpn"), best(PEER_NAME)
    if seg:
        out.append(f"- {seg.model} at 360x480, best backend {seg.backend}: {seg.p50:.1f} ms p50"
                   + (f", {seg.p50 / seg.limit_ms:.2f}x the FLOP limit ({seg.limit_ms:.1f} ms; "
                      "target <= 1.3x)" if seg.limit_ms else ""))
        if fcn50:
            out.append(f"- vs fcn_resnet50: {fcn50.p50 / seg.p50:.1f}x faster (target >= 10x)")
        for peer_row in (dl, lraspp):
            if peer_row:
                out.append(f"- vs {peer_row.model}: {peer_row.p50 / seg.p50:.2f}x faster "
                           "(target > 1x)")
    if det:
        out.append(f"- {det.model} at 360x480, best backend {det.backend}: {det.p50:.1f} ms p50")
        if peer:
            out.append(f"- vs the {PEER_NAME} peer: {det.p50 / peer.p50:.2f} of its time "
                       "(target <= 0.5)")
        if frcnn:
            out.append(f"- vs fasterrcnn_mobilenet_v3_large_fpn: {det.p50 / frcnn.p50:.2f} of its "
                       "time")
    return out


def render(rows: list[Row], cpu_gemm: float, gpu_gemm: dict, notes: list[str]) -> str:
    import torch

    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = "not installed"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    lines = [
        "# fcn_perception inference benchmark",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {_cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {ort_version}",
        f"- measured GEMM: {cpu_gemm / 1e9:.1f} GFLOP/s CPU float32"
        + "".join(f", {v / 1e12:.1f} TFLOP/s GPU {k}" for k, v in gpu_gemm.items()),
        f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        + ("  (**other work was running: timings are inflated**)" if load[0] > 1.0 else ""),
        "- ours: the whole Predictor call (preprocess + backend + postprocess); peers: eager "
        "forward (+ argmax), untrained weights",
        "- limit: model FLOPs / measured GEMM FLOP/s (the time a perfect GEMM-speed "
        "implementation would need)",
        *[f"- note: {n}" for n in notes],
        "",
        "| model | backend | input HxW | GFLOP | p50 ms | p95 ms | fps | limit ms | p50 / limit |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        limit = f"{r.limit_ms:.1f}" if r.limit_ms else "-"
        ratio = f"{r.p50 / r.limit_ms:.2f}" if r.limit_ms else "-"
        gflop = f"{r.gflop:.1f}" if r.gflop is not None else "-"
        note = f" ({r.note})" if r.note else ""
        lines.append(f"| {r.model}{note} | {r.backend} | {r.size[0]}x{r.size[1]} | {gflop} | "
                     f"{r.p50:.1f} | {r.p95:.1f} | {r.fps:.1f} | {limit} | {ratio} |")
    lines += ["", *summary(rows), ""]
    return "\n".join(lines)
