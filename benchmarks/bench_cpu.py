"""CPU benchmark, every model in ONNX Runtime: our shipped models against the peers a
user would otherwise pick, on the same frame, the same threads and the same session
options, measured in one run.

    .venv/bin/python benchmarks/bench_cpu.py [--threads 2] [--rounds 30]
        [--peer-weights runs/peer/model.safetensors] [--eager] [--output docs/bench_cpu.md]

Rows (360x480 CamVid val frame, fp32):

* ours: the whole Predictor call (``load_predictor(task, backend="onnxruntime-cpu")``:
  preprocess + ONNX Runtime + postprocess), FCN-8s EfficientNet-Lite0 and R-FCN
  EfficientNet-Lite0 (the shipped weights);
* the torchvision segmentation peers lraspp_mobilenet_v3_large and
  deeplabv3_mobilenet_v3_large (``--peers`` takes others, e.g. fcn_resnet50: about 20
  times ours, too slow to time often on two cores), exported to ONNX with the argmax in
  the graph (labels out, like ours), fed by our preprocessing (the same lookup-table
  normalisation); untrained weights: timing does not depend on them;
* the detection peer, Faster R-CNN FPN EfficientNet-Lite0 (training/fasterrcnn_peer.py;
  trained weights with ``--peer-weights``), exported to ONNX (its proposals, RoIAlign and
  NMS in the graph) and fed the frame as [0, 1] floats, as it is trained;
* ``--eager``: the peers in eager PyTorch too (``torch.inference_mode``, same threads).

The machine is shared, so the rows are measured in rounds: each round runs every model
once, in turn, so load that comes and goes falls on all of them alike; the ratios
(peer p50 / ours p50) are computed within the run.  The CPU model and its instruction
sets, the thread count and the load average before and after are written beside the
numbers (docs/bench_cpu.md, and docs/bench_cpu.json for scripts and tests).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, camvid_frames, cpu_line, load_average  # noqa: E402

SEG_PEERS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")
DET_PEER = "Faster R-CNN FPN EfficientNet-Lite0"


@dataclass
class Row:
    model: str
    task: str
    runtime: str  # "onnxruntime-cpu" or "torch eager"
    ours: bool
    run: object  # callable: one frame
    note: str = ""
    times_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return float(np.percentile(self.times_ms, 50))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.times_ms, 95))


def _export(module, example, path: Path, outputs: list[str], dynamic: dict | None = None):
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=outputs,
                          dynamic_axes=dynamic, do_constant_folding=True)
    return path


def _session(path: Path, threads: int):
    import onnxruntime as ort

    from fcn_perception.inference.backends.onnxruntime_backend import session_options

    return ort.InferenceSession(str(path), session_options(threads),
                                providers=["CPUExecutionProvider"])


def seg_peer_rows(name: str, frame: np.ndarray, threads: int, folder: Path,
                  eager: bool) -> list[Row]:
    import torch
    import torchvision

    from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD
    from fcn_perception.inference.preprocess import InputSpec, Preprocessor

    model = getattr(torchvision.models.segmentation, name)(
        weights=None, weights_backbone=None, num_classes=11, aux_loss=False).eval()

    class Labels(torch.nn.Module):  # argmax in the graph, as our exported FCN
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)["out"].argmax(1).to(torch.uint8)

    pre = Preprocessor(InputSpec(IMAGENET_MEAN, IMAGENET_STD, None))
    x = pre.network_input(frame).copy()
    print(f"exporting {name} to ONNX ...", flush=True)
    path = _export(Labels(model).eval(), (torch.from_numpy(x),), folder / f"{name}.onnx",
                   ["labels"])
    session = _session(path, threads)

    def run_ort(s=session):
        return s.run(["labels"], {"image": pre.network_input(frame)})[0]

    rows = [Row(name, "segmentation", "onnxruntime-cpu", False, run_ort, "untrained")]
    if eager:
        wrapped = Labels(model).eval()

        def run_eager(m=wrapped):
            with torch.inference_mode():
                return m(torch.from_numpy(pre.network_input(frame)))

        rows.append(Row(name, "segmentation", "torch eager", False, run_eager, "untrained"))
    return rows


def det_peer_rows(frame: np.ndarray, threads: int, folder: Path, weights: Path | None,
                  eager: bool) -> list[Row]:
    import torch

    from fcn_perception.training.fasterrcnn_peer import NAME, build_fasterrcnn_peer
    from fcn_perception.weights_io import load_state_dict

    model = build_fasterrcnn_peer(3).eval()
    if weights:
        model.load_state_dict(load_state_dict(weights))
    note = "trained weights" if weights else "untrained"

    def tensor():
        return torch.from_numpy(frame).permute(2, 0, 1).float().div_(255.0)

    rows = []
    print(f"exporting {NAME} to ONNX ...", flush=True)
    try:
        path = _export(model, ([tensor()],), folder / "fasterrcnn_peer.onnx",
                       ["boxes", "labels", "scores"], {"image": {1: "height", 2: "width"}})
        session = _session(path, threads)

        def run_ort(s=session):
            x = (frame.transpose(2, 0, 1).astype(np.float32) / 255.0)
            return s.run(None, {s.get_inputs()[0].name: x})

        rows.append(Row(NAME, "detection", "onnxruntime-cpu", False, run_ort, note))
    except Exception as exc:  # reported in the table: the peer then runs eager only
        print(f"{NAME}: ONNX export failed ({type(exc).__name__}: {exc}); eager only")
        eager = True
    if eager:
        def run_eager(m=model):
            with torch.inference_mode():
                return m([tensor()])

        rows.append(Row(NAME, "detection", "torch eager", False, run_eager, note))
    return rows


def our_rows(threads: int, eager: bool) -> list[Row]:
    from fcn_perception import load_predictor
    from fcn_perception.card import model_title

    rows = []
    for task in ("segmentation", "detection"):
        for backend in ("onnxruntime-cpu", *(("torch-cpu",) if eager else ())):
            p = load_predictor(task, backend=backend, num_threads=threads)
            rows.append(Row(model_title(p.card), task,
                            "onnxruntime-cpu" if backend == "onnxruntime-cpu" else "torch eager",
                            True, p, "shipped weights, whole Predictor call"))
    return rows


def measure(rows: list[Row], frame: np.ndarray, rounds: int, warmup: int,
            max_seconds: float) -> int:
    """Round-robin: every row once per round.  Returns the rounds run."""
    for row in rows:
        for _ in range(warmup):
            row.run(frame) if row.ours else row.run()
    start = time.perf_counter()
    done = 0
    while done < rounds:
        for row in rows:
            t = time.perf_counter()
            row.run(frame) if row.ours else row.run()
            row.times_ms.append((time.perf_counter() - t) * 1000.0)
        done += 1
        if done >= 5 and time.perf_counter() - start > max_seconds:
            break
    return done


def ratios(rows: list[Row]) -> list[dict]:
    """Each peer row against our row of the same task and runtime (p50 / p50)."""
    out = []
    for peer in (r for r in rows if not r.ours):
        ours = next((r for r in rows if r.ours and r.task == peer.task
                     and r.runtime == peer.runtime), None)
        if ours:
            out.append({"ours": ours.model, "peer": peer.model, "runtime": peer.runtime,
                        "peer_ms_over_ours_ms": round(peer.p50 / ours.p50, 2)})
    return out


def render(meta: dict, rows: list[Row], pairs: list[dict]) -> str:
    lines = ["# CPU benchmark: every model in ONNX Runtime", "",
             "Written by `.venv/bin/python benchmarks/bench_cpu.py` (see its docstring for "
             "what each row times).", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| model | task | runtime | p50 ms | p95 ms | note |",
              "|---|---|---|---:|---:|---|"]
    for r in rows:
        name = f"**{r.model}**" if r.ours else r.model
        lines.append(f"| {name} | {r.task} | {r.runtime} | {r.p50:.1f} | {r.p95:.1f} | "
                     f"{r.note} |")
    lines += ["", "Ratios, measured in the same run (peer p50 / ours p50; above 1: ours is "
              "faster):", ""]
    for p in pairs:
        lines.append(f"- {p['runtime']}: {p['peer']} / {p['ours']} = "
                     f"{p['peer_ms_over_ours_ms']:.2f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2,
                    help="intra-op threads of every model (default 2)")
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs per row (default 3)")
    ap.add_argument("--max-seconds", type=float, default=240.0,
                    help="stop after this long (at least 5 rounds; default 240)")
    ap.add_argument("--peers", nargs="*", default=list(SEG_PEERS),
                    help=f"segmentation peers (default {' '.join(SEG_PEERS)})")
    ap.add_argument("--no-detection-peer", dest="det_peer", action="store_false")
    ap.add_argument("--peer-weights", type=Path, default=None,
                    help="trained weights of the Faster R-CNN peer (model.safetensors of "
                    "training/peer_fasterrcnn.py); without them it runs untrained")
    ap.add_argument("--eager", action="store_true",
                    help="also time ours (torch-cpu) and the peers in eager PyTorch")
    ap.add_argument("--image", type=Path, default=None, help="frame (default: CamVid val)")
    ap.add_argument("--output", type=Path, default=ROOT / "docs" / "bench_cpu.md",
                    help="Markdown to write (a .json beside it); default docs/bench_cpu.md")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    frame = camvid_frames(1, args.image)[0]
    load_before = load_average()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    rows = our_rows(args.threads, args.eager)
    with tempfile.TemporaryDirectory(prefix="bench_cpu_") as tmp:
        for name in args.peers:
            rows += seg_peer_rows(name, frame, args.threads, Path(tmp), args.eager)
        if args.det_peer:
            rows += det_peer_rows(frame, args.threads, Path(tmp), args.peer_weights,
                                  args.eager)
        rows.sort(key=lambda r: (r.task != "segmentation", not r.ours, r.runtime))
        print(f"timing {len(rows)} rows, {args.rounds} rounds ...", flush=True)
        done = measure(rows, frame, args.rounds, args.warmup, args.max_seconds)
    import onnxruntime as ort

    meta = {
        "date": started,
        "cpu": cpu_line(),
        "threads": f"{args.threads} intra-op threads for every model "
                   f"(onnxruntime {ort.__version__}, torch {torch.__version__})",
        "frame": f"CamVid val, {frame.shape[0]}x{frame.shape[1]} (every model at this size)",
        "rounds": f"{done} timed rounds of every row, after {args.warmup} warm-up runs each",
        "load average (1, 5, 15 min) before / after": f"{load_before} / {load_average()}",
    }
    pairs = ratios(rows)
    text = render(meta, rows, pairs)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        data = {"meta": meta, "ratios": pairs,
                "rows": [{"model": r.model, "task": r.task, "runtime": r.runtime,
                          "ours": r.ours, "note": r.note, "p50_ms": round(r.p50, 1),
                          "p95_ms": round(r.p95, 1), "runs": len(r.times_ms)} for r in rows]}
        args.output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.output} and {args.output.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
