"""The card and weights code against the models: no import cycle, and an ONNX Runtime
predictor that never imports torch (a robot running ONNX files does not need it)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from factories import camvid_frames, make_weights

import fcn_perception

PACKAGE = Path(fcn_perception.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in _imports(path, package) if m in files and m != name}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycle_between_models_and_the_card_and_weights_code():
    graph = _graph()
    assert "fcn_perception.card" in graph and "fcn_perception.models.rfcn" in graph
    models = {m for m in graph if m.startswith("fcn_perception.models")}
    for low in ("fcn_perception.card", "fcn_perception.weights_io"):
        reach = _reachable(graph, low)
        assert not reach & models, (low, sorted(reach & models))
        assert low not in reach, f"{low} imports itself back"
    # models use the card (architectures as data) and weights_io (tensors): one way only
    assert "fcn_perception.card" in _reachable(graph, "fcn_perception.models")
    for name in models | {"fcn_perception.card", "fcn_perception.weights_io"}:
        assert name not in _reachable(graph, name), f"{name} is on an import cycle"


def test_each_card_name_has_one_home():
    """weights_io is tensors only: nothing of the card's is importable from it (the
    compatibility re-exports are gone; their importers import fcn_perception.card)."""
    import types

    import fcn_perception.card as card
    import fcn_perception.weights_io as weights_io

    public = {n for n, v in vars(card).items() if not n.startswith("_")
              and not isinstance(v, types.ModuleType)
              and getattr(v, "__module__", "fcn_perception.card") == "fcn_perception.card"}
    assert {"write_card", "DEFAULT_WEIGHTS", "allow_modified_weights", "validate_card"} <= public
    shared = {n for n in public if getattr(weights_io, n, None) is getattr(card, n)}
    assert shared <= {"verify_sha256"}, sorted(shared)  # the one weights_io calls


def test_card_module_needs_no_torch():
    code = ("import sys; import fcn_perception.card as c; "
            "c.read_card(c.DEFAULT_WEIGHTS['detection']); "
            "print('torch' in sys.modules, 'fcn_perception.models' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["False", "False"]


def test_architectures_as_data_match_what_the_models_build():
    from fcn_perception import card
    from fcn_perception.models import backbones, build_model, efficientnet_lite, fcn, rfcn

    assert set(backbones.RESNETS) | set(efficientnet_lite.VARIANTS) | {"vgg16"} == set(
        card.BACKBONES)
    assert set(fcn.VARIANTS) | {"unet"} == set(card.ARCHITECTURES["segmentation"])
    model = build_model({**card.RFCN_DEFAULTS, "backbone": "resnet18"})
    assert isinstance(model, rfcn.RFCN)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"name": "yolo", "num_classes": 3})


TORCH_FREE = """
import json, sys
import numpy as np
import fcn_perception
frame = np.load(sys.argv[1])
out = {}
for task, weights in json.loads(sys.argv[2]).items():
    p = fcn_perception.load_predictor(task, backend="onnxruntime-cpu", weights=weights)
    r = p(frame)
    out[task] = [p.backend_name, int(r.labels.max()) if task == "segmentation" else len(r)]
out["imported"] = sorted(m for m in ("torch", "torchvision", "fcn_perception.models",
                                      "fcn_perception.weights_io") if m in sys.modules)
print(json.dumps(out))
"""


def test_onnx_runtime_predictor_does_not_import_torch(tmp_path, monkeypatch):
    """load_predictor(backend="onnxruntime-cpu") and a CamVid frame through it, from an
    ``.onnx`` file and from a ``.safetensors`` file whose export is cached: no torch."""
    import numpy as np

    from fcn_perception.inference.export import cached_onnx

    monkeypatch.setenv("FCN_PERCEPTION_CACHE", str(tmp_path / "cache"))
    weights = {task: make_weights(tmp_path / "w", task, size=None)
               for task in ("segmentation", "detection")}
    onnx = {task: str(cached_onnx(path, task)) for task, path in weights.items()}
    np.save(tmp_path / "frame.npy", camvid_frames(1)[0])
    for files in (onnx, {t: str(p) for t, p in weights.items()}):
        proc = subprocess.run(
            [sys.executable, "-c", TORCH_FREE, str(tmp_path / "frame.npy"), json.dumps(files)],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["imported"] == [], out
        assert out["segmentation"][0] == out["detection"][0] == "onnxruntime-cpu"
        assert out["segmentation"][1] <= 10
