"""The README's results tables are the ones generated from the shipped cards (and the
peer's metrics file) by scripts/readme_tables.py: no number there is typed by hand."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tables() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tables()


def test_readme_holds_the_generated_tables():
    readme = (ROOT / "README.md").read_text()
    tables = _tables()
    assert set(tables) == {"segmentation", "detection", "benchmark"}
    for name, table in tables.items():
        assert table.count("\n") >= 2 and table in readme, (
            f"the README's {name} table differs from the cards: run python scripts/readme_tables.py "
            "and paste its output")


def test_generated_tables_carry_the_card_values():
    from fcn_perception.card import DEFAULT_WEIGHTS, read_card

    tables = _tables()
    seg = read_card(DEFAULT_WEIGHTS["segmentation"])["metrics"]["val"]
    assert f"| mean IoU | {seg['mean_iou']:.3f} |" in tables["segmentation"]
    det = read_card(DEFAULT_WEIGHTS["detection"])["metrics"]["val"]
    assert f"| {det['map50']:.3f} | {det['map']:.3f} |" in tables["detection"]
    bench = (ROOT / "docs" / "bench_cpu.md").read_text()
    rows = [ln for ln in bench.splitlines() if ln.startswith("| ") and " ms " not in ln]
    ratios = [ln for ln in bench.splitlines() if ln.startswith("- onnxruntime-cpu:")]
    assert len(rows) >= 5 and ratios and all(r in tables["benchmark"] for r in rows + ratios)
