"""The README's numbers come from the files commands wrote: its results tables are the
ones scripts/readme_tables.py generates from the shipped cards and the benchmark file,
and every decimal in a paragraph, table or list that cites a docs/*.json|md file or a
model card is in that file (test_every_decimal_beside_a_cited_file_is_in_that_file)."""
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
    """Held-out first: each shipped segmentation model's held-out and val mean IoU in its
    column, the detector's held-out and val rows."""
    from fcn_perception.card import DEFAULT_WEIGHTS, MODELS, read_card

    tables = _tables()
    seg = [read_card(p) for p in MODELS["segmentation"].values()]
    held = " | ".join(f"{c['heldout']['metrics']['mean_iou']:.3f}" for c in seg)
    val = " | ".join(f"{c['metrics']['val']['mean_iou']:.3f}" for c in seg)
    assert f"| mean IoU, 0006R0 held out | {held} |" in tables["segmentation"]
    assert f"| mean IoU, 0006R0 (in its training set) | {val} |" in tables["segmentation"]
    det = read_card(DEFAULT_WEIGHTS["detection"])
    for m in (det["metrics"]["val"], *([det["heldout"]["metrics"]] if "heldout" in det else [])):
        assert f"| {m['map50']:.3f} | {m['map']:.3f} |" in tables["detection"]
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


# ------------------------------------------------- every number next to the file it cites
CITED = r"(docs/[\w.-]+\.(?:json|md))|\b((?:fcn8s|rfcn|unet)_\w+\.json)\b"
DECIMAL = r"(?<![\w.@])(\d+\.\d+)(?![\w.]*\d)"  # not version strings, not mAP@0.5
ARITHMETIC = r"(\d+(?:\.\d+)?)\s*([-+/x])\s*(\d+(?:\.\d+)?)\s*=\s*(\d+\.\d+)"


def _readme_blocks() -> list[tuple[str, str, set[str]]]:
    """``(section title, text, cited files)`` of each run of non-blank README lines
    outside code blocks; a block that follows one ending in ':' (the table or list it
    introduces) also has that block's citations."""
    import re

    out, section, lines = [], "", []

    def close():
        if lines and not lines[0].startswith("    "):  # indented code: commands
            text = "\n".join(lines)
            cited = {a or f"fcn_perception/weights/{b}" for a, b in re.findall(CITED, text)}
            if out and out[-1][1].rstrip().endswith(":") and out[-1][0] == section:
                cited |= out[-1][2]
            out.append((section, text, cited))
        lines.clear()

    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("#"):
            close()
            section = line.lstrip("#").strip()
        elif line.strip():
            lines.append(line)
        else:
            close()
    close()
    return out


def _numbers_in(path: Path) -> list[float]:
    """Every number a docs/card file holds (JSON: values, and numbers inside strings and
    keys, such as ``score>=0.5``)."""
    import json
    import re

    text = path.read_text()
    found = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text)] if path.suffix == ".md" \
        else []

    def walk(node):
        if isinstance(node, bool):
            return
        if isinstance(node, (int, float)):
            found.append(float(node))
        elif isinstance(node, str):
            found.extend(float(x) for x in re.findall(r"\d+(?:\.\d+)?", node))
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(str(key))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if path.suffix == ".json":
        walk(json.loads(text))
    return found


def _written_as(number: str, values: list[float]) -> bool:
    """``number`` is one of ``values`` rounded to its decimals (or x100, a percentage)."""
    places = len(number.partition(".")[2])
    return any(f"{v:.{places}f}" == number for x in values for v in (x, 100 * x))


def _computed(text: str) -> set[str]:
    """Results the README shows with their arithmetic (``1/1.40 = 0.71``,
    ``0.721 - 0.682 = 0.039``), each recomputed here."""
    import re

    ops = {"/": lambda a, b: a / b, "x": lambda a, b: a * b, "-": lambda a, b: a - b,
           "+": lambda a, b: a + b}
    results = set()
    for a, op, b, result in re.findall(ARITHMETIC, text):
        places = len(result.partition(".")[2])
        value = ops[op](float(a), float(b))
        assert f"{value:.{places}f}" == result, f"{a} {op} {b} = {value:.4f}, not {result}"
        results.add(result)
    return results


def test_every_decimal_beside_a_cited_file_is_in_that_file():
    """Each README paragraph, table or list that names a docs/*.json|md file or a model
    card (and the table or list a paragraph ending in ':' introduces) quotes only decimals
    that file holds, rounded as written (or as a percentage), or that the README shows
    computed from them.  Indented commands and `code` are not
    checked."""
    import re

    blocks = _readme_blocks()
    checked, wrong = 0, []
    for section, text, cited in blocks:
        if not cited:
            continue
        prose = re.sub(r"`[^`]*`", "", text)
        missing = [c for c in sorted(cited) if not (ROOT / c).is_file()]
        values = [v for c in cited if (ROOT / c).is_file() for v in _numbers_in(ROOT / c)]
        computed = _computed(prose)
        for number in re.findall(DECIMAL, prose):
            checked += 1
            if missing or not (number in computed or _written_as(number, values)):
                wrong.append(f"[{section}] {number} (cites {sorted(cited)}"
                             + (f", missing {missing}" if missing else "") + ")")
    assert checked >= 80, checked  # the mechanism sees the README's figures
    assert not wrong, "\n".join(wrong)


def test_precision_file_is_of_the_shipped_weights():
    """docs/onnx_precision.json (the README's fp16/int8 agreement) was measured on the
    weights that ship now: rerun scripts/precision_parity.py when they change."""
    import json

    from fcn_perception.card import DEFAULT_WEIGHTS, sha256_of

    tasks = json.loads((ROOT / "docs" / "onnx_precision.json").read_text())["tasks"]
    assert set(tasks) == set(DEFAULT_WEIGHTS)
    for task, weights in DEFAULT_WEIGHTS.items():
        assert tasks[task]["weights_sha256"] == sha256_of(weights), (
            f"docs/onnx_precision.json measured other {task} weights: run "
            "scripts/precision_parity.py")
