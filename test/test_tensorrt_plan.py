"""The TensorRT build plan against the names of the real TensorRT 10.3 and 11.4 bindings
(test/data/tensorrt_api: how they were extracted), without TensorRT."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fcn_perception.inference.engine_cache import Profile
from fcn_perception.inference.tensorrt_plan import (
    CANDIDATES,
    PRECISIONS,
    TensorRTApi,
    build_plan,
)

DATA = Path(__file__).resolve().parent / "data" / "tensorrt_api"
PROFILE = Profile((64, 64), (360, 480), (720, 960))


def api(version: str) -> TensorRTApi:
    data = json.loads((DATA / f"tensorrt-{version}.json").read_text())
    assert data["tensorrt"] == version
    return TensorRTApi.from_names(data["tensorrt"], data["names"])


TRT10, TRT11 = "10.3.0", "11.4.0.106"


def test_the_fixtures_show_the_two_generations():
    # what the plan depends on, as the real bindings have it
    ten, eleven = api(TRT10), api(TRT11)
    assert ten.weakly_typed and ten.has("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")
    assert not eleven.weakly_typed and not eleven.has("BuilderFlag", "INT8")
    assert ten.has("module", "IInt8EntropyCalibrator2")
    assert not eleven.has("module", "IInt8EntropyCalibrator2")
    assert ten.strongly_typed and eleven.strongly_typed
    assert ten.missing() == [] and eleven.missing() == []


@pytest.mark.parametrize("precision, variant", [("fp32", "fp32"), ("fp16", "fp16"),
                                                ("int8", "int8-qdq")])
def test_tensorrt_10_builds_the_onnx_variant_strongly_typed_on_request(precision, variant):
    plan = build_plan(api(TRT10), precision, PROFILE)
    assert (plan.onnx_variant, plan.typing) == (variant, "strong")
    assert plan.network_flags == ("STRONGLY_TYPED",)
    assert plan.builder_flags == ()  # no FP16/INT8 flags: the graph's types decide
    assert plan.profile == PROFILE


@pytest.mark.parametrize("precision, variant", [("fp32", "fp32"), ("fp16", "fp16"),
                                                ("int8", "int8-qdq")])
def test_tensorrt_11_sets_no_deprecated_or_missing_flag(precision, variant):
    plan = build_plan(api(TRT11), precision, PROFILE)
    assert (plan.onnx_variant, plan.typing) == (variant, "strong")
    assert plan.network_flags == () and plan.builder_flags == ()


@pytest.mark.parametrize("version", [TRT10, TRT11])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_flag_a_plan_names_exists_in_that_tensorrt(version, precision):
    a = api(version)
    plan = build_plan(a, precision, PROFILE)
    for flag in plan.network_flags:
        assert a.has("NetworkDefinitionCreationFlag", flag), flag
    for flag in plan.builder_flags:
        assert a.has("BuilderFlag", flag), flag


def test_without_strong_typing_the_weak_flags_are_used():
    # TensorRT 10.3's names less STRONGLY_TYPED: a TensorRT before strong typing (8.x)
    data = json.loads((DATA / f"tensorrt-{TRT10}.json").read_text())["names"]
    data["NetworkDefinitionCreationFlag"] = ["EXPLICIT_BATCH"]
    old = TensorRTApi.from_names("8.6", data)
    assert not old.strongly_typed
    fp16 = build_plan(old, "fp16", PROFILE)
    assert (fp16.onnx_variant, fp16.typing, fp16.builder_flags) == ("fp32", "weak", ("FP16",))
    int8 = build_plan(old, "int8", PROFILE)
    assert (int8.onnx_variant, int8.builder_flags) == ("int8-qdq", ("INT8",))


def test_missing_names_and_bad_precisions_are_explained():
    data = json.loads((DATA / f"tensorrt-{TRT11}.json").read_text())["names"]
    data["IExecutionContext"] = [n for n in data["IExecutionContext"] if n != "execute_async_v3"]
    with pytest.raises(ValueError, match="IExecutionContext.execute_async_v3.*10.3 or newer"):
        build_plan(TensorRTApi.from_names("8.0", data), "fp16", PROFILE)
    with pytest.raises(ValueError, match="precision must be one of"):
        build_plan(api(TRT11), "int4", PROFILE)


def test_plan_key_fields_differ_between_generations_and_precisions():
    keys = {(v, p): json.dumps(build_plan(api(v), p, PROFILE).key_fields(), sort_keys=True)
            for v in (TRT10, TRT11) for p in PRECISIONS}
    assert len(set(keys.values())) == len(keys)
    assert "STRONGLY_TYPED" in build_plan(api(TRT10), "fp16", PROFILE).describe()


def test_from_module_reads_enum_members_and_attributes():
    """from_module on a stand-in module object built from the 11.4 names (the same
    shape as the bindings: pybind11 enums expose ``__members__``)."""
    import types

    data = json.loads((DATA / f"tensorrt-{TRT11}.json").read_text())["names"]
    module = types.SimpleNamespace(__version__=TRT11)
    for owner, names in data.items():
        if owner == "module":
            for n in names:
                setattr(module, n, object())
        elif owner.endswith("Flag"):
            setattr(module, owner, type(owner, (), {"__members__": dict.fromkeys(names)}))
        else:
            setattr(module, owner, type(owner, (), dict.fromkeys(names)))
    read = TensorRTApi.from_module(module)
    assert read == TensorRTApi.from_names(TRT11, data)
    assert set(read.names) == set(CANDIDATES)


# objects of tensorrt_backend.py -> the TensorRT class they are
BACKEND_OBJECTS = {"trt": "module", "builder": "Builder", "network": "INetworkDefinition",
                   "parser": "OnnxParser", "opt_profile": "IOptimizationProfile",
                   "config": "IBuilderConfig", "self.runtime": "Runtime",
                   "ctx": "IExecutionContext", "self.engine": "ICudaEngine",
                   "trt.MemoryPoolType": "MemoryPoolType", "trt.TensorIOMode": "TensorIOMode"}


def test_the_backend_uses_only_names_both_generations_have():
    """Every ``trt.X``, ``config.X``, ``ctx.X``, ... in tensorrt_backend.py (its source,
    read as text) is a name the real 10.3 and 11.4 bindings have; flags are named only
    through the build plan (``getattr(trt.BuilderFlag, name)``)."""
    import re

    import fcn_perception.inference.backends.tensorrt_backend as backend

    source = Path(backend.__file__).read_text()
    objects = "|".join(re.escape(o) for o in sorted(BACKEND_OBJECTS, key=len, reverse=True))
    used = set(re.findall(rf"(?<![\w.])({objects})\.([A-Za-z_][A-Za-z0-9_]*)", source))
    used = {(o, n) for o, n in used if not n.startswith("__")}
    assert ("trt", "OnnxParser") in used and ("ctx", "execute_async_v3") in used
    for version in (TRT10, TRT11):
        a = api(version)
        missing = sorted(f"{o}.{n}" for o, n in used if not a.has(BACKEND_OBJECTS[o], n))
        assert missing == [], f"TensorRT {version} lacks {missing}"
    assert "BuilderFlag.FP16" not in source and "BuilderFlag.INT8" not in source
