"""scripts/compare_runs.py, the ablation summary of two training runs' val histories."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, values: list[float]) -> Path:
    folder.mkdir()
    rows = [{"epoch": e, "train/loss": 1.0, "val/map50": v} for e, v in enumerate(values)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_summary_per_run_and_picture(tmp_path):
    a = _run(tmp_path / "a", [0.1, 0.5, 0.3, 0.4])
    b = _run(tmp_path / "b", [0.2, 0.4, 0.45, 0.44])
    out = tmp_path / "ablation"
    assert _script().main(["--run", f"raw={a}", "--run", f"ema={b}", "--tail", "3",
                           "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    raw, ema = report["metrics"]["val/map50"]["raw"], report["metrics"]["val/map50"]["ema"]
    assert (raw["best"], raw["best_epoch"], raw["last"]) == (0.5, 2, 0.4)
    assert raw["last_3_mean"] == pytest.approx(0.4) and raw["last_3_min"] == 0.3
    assert (ema["best"], ema["best_epoch"], ema["last_3_max"]) == (0.45, 3, 0.45)
    assert ema["per_epoch"] == [0.2, 0.4, 0.45, 0.44]
    assert report["runs"] == {"raw": str(a), "ema": str(b)}
    assert out.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.parametrize("spec, words", [
    ("no-equals-sign", "expected LABEL=RUN_FOLDER"),
    ("x={missing}", "metrics.jsonl does not exist"),
])
def test_bad_run_is_one_clear_line(tmp_path, capsys, spec, words):
    with pytest.raises(SystemExit) as exc:
        _script().main(["--run", spec.format(missing=tmp_path / "nope"), "--out",
                        str(tmp_path / "o")])
    assert words in str(exc.value)


def test_a_run_without_the_key_is_named(tmp_path):
    a = _run(tmp_path / "a", [0.1])
    with pytest.raises(SystemExit, match=r"run 'a' has no 'val/ap50_Pedestrian'"):
        _script().main(["--run", f"a={a}", "--keys", "val/ap50_Pedestrian",
                        "--out", str(tmp_path / "o")])


def test_per_class_compares_the_shipped_epochs(tmp_path):
    """--per-class reads each run's model.json (the shipped epoch on its val split)."""
    runs = {}
    for label, ious in {"today": {"Sky": 0.8, "Pole": 0.2}, "new": {"Sky": 0.7, "Pole": 0.4}}.items():
        folder = _run(tmp_path / label, [0.3, 0.5])
        card = {"metrics": {"val": {"mean_iou": sum(ious.values()) / 2, "per_class_iou": ious}}}
        (folder / "model.json").write_text(json.dumps(card))
        runs[label] = folder
    out = tmp_path / "fold"
    assert _script().main([*(f"--run={k}={v}" for k, v in runs.items()), "--keys", "val/map50",
                           "--per-class", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["per_class_iou"]["new"] == {"Sky": 0.7, "Pole": 0.4}
    assert report["shipped_mean_iou"] == {"today": pytest.approx(0.5), "new": pytest.approx(0.55)}
    assert (tmp_path / "fold_classes.png").stat().st_size > 10_000
    (runs["new"] / "model.json").unlink()
    with pytest.raises(SystemExit, match="model.json does not exist"):
        _script().main([f"--run=new={runs['new']}", "--per-class", "--out", str(out)])


def test_a_run_validated_every_few_epochs_keeps_its_epochs(tmp_path):
    """--val-every 3: values sit at epochs 3, 6, 9; best and last name those epochs."""
    folder = tmp_path / "sparse"
    folder.mkdir()
    rows = [{"epoch": e, "train/loss": 1.0, **({"val/map50": v} if v is not None else {})}
            for e, v in enumerate([None, None, 0.3, None, None, 0.5, None, None, 0.4])]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    assert _script().main(["--run", f"sparse={folder}", "--out", str(out)]) == 0
    got = json.loads(out.with_suffix(".json").read_text())["metrics"]["val/map50"]["sparse"]
    assert (got["best_epoch"], got["last_epoch"], got["epochs"]) == (6, 9, [3, 6, 9])
