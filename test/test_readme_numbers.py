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


def test_readme_memory_figures_are_the_benchmark_file_s():
    import json

    rss = json.loads((ROOT / "docs" / "node_rss.json").read_text())
    readme = (ROOT / "README.md").read_text()
    para = readme[readme.index("**Memory.**"):].split("\n\n")[0]
    assert "docs/node_rss.json" in para
    assert f"{rss['now_torch_free']['rss_mb']:.1f} MB" in para
    assert f"{rss['before_torch_imported']['rss_mb']:.1f} MB" in para
    assert not rss["now_torch_free"]["libtorch_mapped"]


def test_config_comments_name_the_models_the_names_load():
    """config/*.yaml: each ``fast``/``accurate`` comment names the architecture and
    backbone of the file fcn_perception.card.MODELS gives that name, and the default
    (fast) ships."""
    import re

    from fcn_perception.card import MODELS

    titles = {"fcn8s": "FCN-8s", "rfcn": "R-FCN"}
    checked = 0
    for path in sorted((ROOT / "config").glob("*.yaml")):
        for line in path.read_text().splitlines():
            for name, title, backbone in re.findall(r"(fast|accurate) \(([\w-]+) (\w+)\)", line):
                task = "segmentation" if title.startswith("FCN") else "detection"
                stem = MODELS[task][name].stem  # e.g. fcn8s_efficientnet_lite0_camvid
                arch, _, rest = stem.partition("_")
                assert titles[arch] == title, (path.name, line)
                assert rest.startswith(f"efficientnet_{backbone.lower()}"), (path.name, line)
                checked += 1
    assert checked >= 4
    assert all(names["fast"].is_file() for names in MODELS.values())
