"""ONNX export of the shipped models (``DEFAULT_WEIGHTS``): fp32 (dynamic axes, opset,
embedded card, checker, cache), fp16 and int8 (Q/DQ), and their agreement with fp32 in
ONNX Runtime on real CamVid val frames at 360x480:

* segmentation labels >= 99% identical for fp16, >= 95% for int8;
* detection: >= 95% of fp32's boxes (score >= 0.3 on 24 frames; at least 10 of them)
  reproduced by a same-class box at IoU >= 0.9 (score >= 0.2), for fp16; int8 detection
  is refused (it
  does not reach that: scripts/precision_parity.py, docs/onnx_precision.json).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import fcn_perception
from fcn_perception.card import DEFAULT_WEIGHTS
from fcn_perception.cli import main
from fcn_perception.inference.agreement import compare_frames, matched_boxes, read_frames

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "camvid"
SAMPLE = ROOT / "fcn_perception" / "data" / "camvid_sample"


def _folder(split: str) -> Path:
    """A CamVid split: ../shared/camvid, else the packaged sample (val only)."""
    for folder in (SHARED / split, SAMPLE / split, SAMPLE / "val"):
        if folder.is_dir() and any(folder.glob("*.png")):
            return folder
    pytest.skip(f"no CamVid {split} frames (../shared/camvid or {SAMPLE})")


VAL_FRAMES = 8  # evenly spaced over val; each 360x480
DET_FRAMES, DET_SCORE = 24, 0.3  # enough boxes for the 95% bar to mean something


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def val_frames():
    frames = read_frames(_folder("val"), DET_FRAMES)
    assert all(f.shape == (360, 480, 3) for f in frames)
    return frames


def _shipped(task: str) -> Path:
    weights = DEFAULT_WEIGHTS[task]
    assert weights.is_file(), f"the shipped {task} weights {weights} are missing"
    return weights


@pytest.fixture(scope="session")
def seg_onnx(onnx_dir):
    from fcn_perception.inference.export import cached_onnx

    return cached_onnx(_shipped("segmentation"), directory=onnx_dir)


@pytest.fixture(scope="session")
def det_onnx(onnx_dir):
    from fcn_perception.inference.export import cached_onnx

    return cached_onnx(_shipped("detection"), directory=onnx_dir)


def _ort(task: str, path: Path):
    return fcn_perception.load_predictor(task, "onnxruntime-cpu", path)


def _int8(path: Path, task: str, fmt: str, directory: Path) -> Path:
    from fcn_perception.inference.export import read_onnx_card
    from fcn_perception.inference.preprocess import InputSpec
    from fcn_perception.inference.quantize import quantized_onnx

    spec = InputSpec.from_card(read_onnx_card(path))
    return quantized_onnx(path, _folder("train"), spec, "minmax", 8, fmt=fmt,
                          directory=directory)


# --------------------------------------------------------------------------- fp32
def test_export_cli_writes_a_checked_onnx_with_dynamic_axes(tmp_path, capsys):
    out = tmp_path / "fcn.onnx"
    assert main(["export", "--task", "segmentation", "-o", str(out), "--opset", "18"]) == 0
    assert "wrote" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    (inp,) = [i for i in proto.graph.input]
    assert inp.name == "image"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    from fcn_perception.inference.export import read_onnx_card

    card = read_onnx_card(out)
    expected = "logits" if card["input"].get("size") else "labels"
    assert [o.name for o in proto.graph.output] == [expected]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert f'"{card["architecture"]["name"]}"' in meta["fcn_perception.card"]
    assert not list(tmp_path.glob("*.data")), "the export must be one self-contained file"


def test_export_rejects_old_opsets_and_wrong_task(tmp_path, capsys):
    seg = str(_shipped("segmentation"))
    assert main(["export", "--weights", seg, "-o", str(tmp_path / "x.onnx"),
                 "--opset", "13"]) == 2
    assert "opset 13" in capsys.readouterr().err
    assert main(["export", "--task", "detection", "--weights", seg,
                 "-o", str(tmp_path / "y.onnx")]) == 2
    assert "segmentation model" in capsys.readouterr().err
    assert main(["export", "--task", "segmentation", "-o", str(tmp_path / "z.onnx"),
                 "--precision", "int8"]) == 2
    assert "--calibration-images" in capsys.readouterr().err


def test_cached_onnx_is_reused_and_replaced_when_corrupt(tmp_path):
    from fcn_perception.inference.export import SHA_KEY, cached_onnx, read_onnx_metadata

    first = cached_onnx(_shipped("segmentation"), directory=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cached_onnx(_shipped("segmentation"), directory=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    first.write_bytes(b"garbage")
    again = cached_onnx(_shipped("segmentation"), directory=tmp_path)
    assert again == first and read_onnx_metadata(again)[SHA_KEY]


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from fcn_perception.inference.export import cache_dir

    monkeypatch.setenv("FCN_PERCEPTION_CACHE", str(tmp_path / "c"))
    assert cache_dir("onnx") == tmp_path / "c" / "onnx" and (tmp_path / "c" / "onnx").is_dir()


def test_exported_graph_runs_any_size_in_onnxruntime(seg_onnx):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(seg_onnx), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 45, 77), (2, 3, 64, 64)):
        (out,) = sess.run(None, {"image": np.zeros(shape, np.float32)})
        assert out.shape[0] == shape[0] and out.shape[-2:] == shape[2:]


def test_build_engine_without_tensorrt_is_a_clear_error(capsys):
    from fcn_perception.inference.backends.tensorrt_backend import tensorrt_unavailable

    if tensorrt_unavailable() is None:
        pytest.skip("TensorRT is available here")
    assert main(["build-engine", "--task", "segmentation"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot build a TensorRT engine here") and "tensorrt" in err


def test_export_and_build_engine_share_one_calibration_definition():
    from fcn_perception.cli import build_parser

    parser = build_parser()
    export = parser.parse_args(["export"])
    engine = parser.parse_args(["build-engine"])
    for name in ("calibrator", "calibration_limit", "calibration_images"):
        assert getattr(export, name) == getattr(engine, name), name
    for cmd in ("export", "build-engine"):
        assert parser.parse_args([cmd, "--calibrator", "entropy"]).calibrator == "entropy"


# --------------------------------------------------------------------------- fp16
def _input_types(model: onnx.ModelProto, op_types: set[str]) -> dict[str, set[int]]:
    """op type -> element types of its data input (after shape inference)."""
    model = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    found: dict[str, set[int]] = {}
    for node in model.graph.node:
        if node.op_type in op_types:
            found.setdefault(node.op_type, set()).add(types.get(node.input[0]))
    return found


def test_fp16_graphs_keep_the_sensitive_parts_in_fp32(seg_onnx, det_onnx, onnx_dir):
    from fcn_perception.inference.export import fp16_onnx, onnx_variant

    for path, sensitive in ((seg_onnx, {"ArgMax"}),
                            (det_onnx, {"CumSum", "Softmax", "Exp", "NonMaxSuppression"})):
        half = onnx.load(str(fp16_onnx(path, directory=onnx_dir)))
        assert onnx_variant(fp16_onnx(path, directory=onnx_dir)) == "fp16"
        convs = _input_types(half, {"Conv"})
        assert convs["Conv"] == {TensorProto.FLOAT16}
        weights = {t.name: t.data_type for t in half.graph.initializer}
        conv_w = {weights[n.input[1]] for n in half.graph.node if n.op_type == "Conv"}
        assert conv_w == {TensorProto.FLOAT16}, "weights are stored in fp16"
        kept = _input_types(half, sensitive)
        if path == seg_onnx and not kept:  # a logits graph: the argmax is the Predictor's
            assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
        for op in sensitive & set(kept):
            assert kept[op] == {TensorProto.FLOAT}, f"{op} must read float32"
        assert [i.type.tensor_type.elem_type for i in half.graph.input] == [TensorProto.FLOAT]
        base = onnx.load(str(path), load_external_data=False)
        assert [(o.name, o.type.tensor_type.elem_type) for o in half.graph.output] == \
            [(o.name, o.type.tensor_type.elem_type) for o in base.graph.output]


def test_fp16_segmentation_agrees_with_fp32(seg_onnx, onnx_dir, val_frames):
    from fcn_perception.inference.export import fp16_onnx

    half = _ort("segmentation", fp16_onnx(seg_onnx, directory=onnx_dir))
    assert half.backend.precision == "fp16"
    report = compare_frames(_ort("segmentation", seg_onnx), half, val_frames[::3])
    assert report["pixels"] == VAL_FRAMES * 360 * 480
    assert report["agreement"] >= 0.99, report


def test_fp16_detection_agrees_with_fp32(det_onnx, onnx_dir, val_frames):
    from fcn_perception.inference.export import fp16_onnx

    report = compare_frames(_ort("detection", det_onnx),
                            _ort("detection", fp16_onnx(det_onnx, directory=onnx_dir)),
                            val_frames, score_threshold=DET_SCORE)
    assert report["boxes"] >= 10, f"too few boxes for a meaningful comparison: {report}"
    assert report["agreement"] >= 0.95, report


# --------------------------------------------------------------------------- int8
# Each format is checked in the arithmetic it runs in (fcn_perception.inference.int8_cpu):
# the TensorRT format with Q/DQ in float, as TensorRT computes it; the ONNX Runtime format
# in ONNX Runtime's int8 kernels (U8U8 where the CPU has no VNNI).  ONNX Runtime's default
# fused kernels agree on only ~0.77 of the labels on an AVX2-only CPU and exactly on a
# VNNI one, so a test that used them would depend on the CPU.
ARITHMETIC = {"tensorrt": "float-qdq", "onnxruntime": "int8-kernels"}


@pytest.mark.parametrize("fmt", ["tensorrt", "onnxruntime"])
def test_int8_segmentation_agrees_with_fp32_in_both_formats(seg_onnx, onnx_dir, val_frames,
                                                             fmt, caplog, tmp_path):
    import shutil

    from fcn_perception.inference.export import load_onnx_proto, onnx_variant
    from fcn_perception.inference.quantize import tensorrt_problems

    ref = _ort("segmentation", seg_onnx)
    path = shutil.copy(_int8(seg_onnx, "segmentation", fmt, onnx_dir), tmp_path / "q.onnx")
    assert onnx_variant(path) == "int8-qdq"
    problems = tensorrt_problems(load_onnx_proto(path))
    assert (problems == []) == (fmt == "tensorrt"), problems[:3]
    with caplog.at_level("INFO", logger="fcn_perception.inference"):
        q = _ort("segmentation", path)
        _ort("segmentation", path)  # a second load of the same file says nothing new
    assert q.backend.precision == "int8"
    assert q.backend.int8_arithmetic == ARITHMETIC[fmt], q.backend.describe()
    told = [r.getMessage() for r in caplog.records if "TensorRT format" in r.getMessage()]
    if fmt == "tensorrt":  # the user is told what happens to the TensorRT file, once
        assert len(told) == 1 and "--int8-format onnxruntime" in told[0], told
    else:
        assert told == []
    report = compare_frames(ref, q, val_frames[::6])
    assert report["agreement"] >= 0.95, (fmt, report)


@pytest.mark.parametrize("optimize", [True, False], ids=["ort-optimized", "ort-unoptimized"])
@pytest.mark.parametrize("fmt", ["tensorrt", "onnxruntime"])
def test_int8_arithmetic_agrees_with_fp32_with_ort_optimisations_on_and_off(
        seg_onnx, onnx_dir, val_frames, fmt, optimize):
    """The session settings of int8_cpu give the same labels as fp32 whether ONNX
    Runtime's graph optimisations are all on or all off (ORT_DISABLE_ALL: every Q/DQ a
    float op): neither depends on the fused kernels of the CPU at hand."""
    import onnxruntime as ort

    from fcn_perception.inference.export import read_onnx_card
    from fcn_perception.inference.int8_cpu import configure_session, int8_format
    from fcn_perception.inference.preprocess import InputSpec, Preprocessor

    path = _int8(seg_onnx, "segmentation", fmt, onnx_dir)
    level = ort.GraphOptimizationLevel
    sessions = []
    for model, int8 in ((seg_onnx, False), (path, True)):
        so = ort.SessionOptions()
        so.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
        if int8:
            assert int8_format(onnx.load(str(model), load_external_data=False)) == fmt
            assert configure_session(so, fmt) == ARITHMETIC[fmt]
        sessions.append(ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]))
    pre = Preprocessor(InputSpec.from_card(read_onnx_card(seg_onnx)))
    same = total = 0
    for rgb in val_frames[::6]:
        x = pre.network_input(rgb, None)
        a, b = (s.run(None, {"image": x})[0] for s in sessions)
        same, total = same + int((a == b).sum()), total + a.size
    assert total == len(val_frames[::6]) * 360 * 480
    assert same / total >= 0.95, (fmt, optimize, same / total)


def test_int8_runs_a_quantised_file_without_frames_and_says_how_to_make_one(seg_onnx,
                                                                          onnx_dir):
    """How a node runs int8 (it has no calibration parameter): its model is an int8 file,
    and precision int8 asks for no frames then; a float model gets the command that
    makes one."""
    path = _int8(seg_onnx, "segmentation", "onnxruntime", onnx_dir)
    q = fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", path, precision="int8")
    assert q.backend.precision == "int8" and q.backend.path == Path(path)
    with pytest.raises(ValueError) as err:
        fcn_perception.load_predictor("segmentation", "onnxruntime-cpu", seg_onnx,
                                      precision="int8")
    text = str(err.value)
    assert seg_onnx.name in text and "is not one" in text, text
    assert "fcn-perception export --weights W --precision int8 --calibration-images" in text
    assert "model parameter" in text


def test_int8_format_is_recognised_without_our_metadata(seg_onnx, onnx_dir):
    """A Q/DQ file from another tool (no fcn_perception metadata) is run in the arithmetic
    of its activations' type: int8 -> TensorRT's, uint8 -> ONNX Runtime's kernels."""
    from fcn_perception.inference.int8_cpu import int8_format

    assert int8_format(onnx.load(str(seg_onnx), load_external_data=False)) is None
    for fmt in ("tensorrt", "onnxruntime"):
        proto = onnx.load(str(_int8(seg_onnx, "segmentation", fmt, onnx_dir)),
                          load_external_data=False)
        del proto.metadata_props[:]
        assert int8_format(proto) == fmt


def test_int8_detection_is_refused_with_the_reason(capsys):
    from fcn_perception.inference.quantize import check_int8_task

    with pytest.raises(ValueError, match="int8 is for segmentation only.*use fp16"):
        check_int8_task("detection")
    check_int8_task("segmentation")
    assert main(["export", "--task", "detection", "--precision", "int8",
                 "--calibration-images", str(_folder("train"))]) == 2
    assert "int8 is for segmentation only" in capsys.readouterr().err


def test_export_cli_fp16_reports_its_agreement(tmp_path, capsys):
    val = _folder("val")
    out = tmp_path / "half.onnx"
    assert main(["export", "--task", "segmentation", "-o", str(out), "--precision", "fp16",
                 "--check-images", str(val), "--check-limit", "2"]) == 0
    text = capsys.readouterr().out
    match = re.search(r"fp16 vs fp32 on 2 frames .*: ([0-9.]+)% identical labels", text)
    assert match and float(match.group(1)) >= 99.0, text
    from fcn_perception.inference.export import onnx_variant

    assert onnx_variant(out) == "fp16"


def test_export_cli_int8_reports_its_agreement(tmp_path, capsys):
    val = _folder("val")
    out = tmp_path / "q.onnx"
    assert main(["export", "--task", "segmentation", "-o", str(out), "--precision", "int8",
                 "--calibration-images", str(_folder("train")), "--calibration-limit", "4",
                 "--check-images", str(val), "--check-limit", "2"]) == 0
    text = capsys.readouterr().out
    assert "Q/DQ in tensorrt format" in text
    assert "int8 arithmetic: Q/DQ evaluated in float, as TensorRT computes it" in text, text
    match = re.search(r"int8 vs fp32 on 2 frames .*: ([0-9.]+)% identical labels", text)
    assert match and float(match.group(1)) >= 95.0, text
    assert (val.parent / (val.name + "annot")).is_dir(), "both CamVid copies have labels"
    ious = re.search(r"mean IoU fp32 ([0-9.]+)%, int8 ([0-9.]+)%", text)
    assert ious and abs(float(ious.group(1)) - float(ious.group(2))) < 5.0, text


# --------------------------------------------------------------------------- matching rule
def test_box_matching_is_one_to_one_same_class_and_iou_bound():
    ref = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], float)
    ref_labels = np.array([0, 0, 1, 2])
    cand = np.array([[0, 0, 10, 10.4], [20, 20, 40, 40], [50, 50, 60, 60]], float)
    cand_labels = np.array([0, 1, 1])  # the last has another class
    got = matched_boxes(ref, ref_labels, cand, cand_labels, iou=0.9)
    # one candidate for the two identical reference boxes; class 2 has no candidate
    assert got.tolist() == [True, False, True, False]
    assert matched_boxes(ref[:1], [0], cand[:1] + 2.0, [0], iou=0.9).tolist() == [False]
