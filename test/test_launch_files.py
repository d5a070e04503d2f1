"""launch/*.launch.xml without the launch runtime (not on PyPI): parse each file, resolve
its substitutions, and check it against setup.py, config/ and the nodes' parameters.
Then replay what `ros2 launch` would pass to each node (params file, inline params,
remaps, namespace) into a real node and check where it listens."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from fcn_perception.ros import params
from fcn_perception.ros.multi_camera import parse_image_topics
from fcn_perception.ros.ros_args import flatten_params

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.xml"))
SUBSCRIBED_TOPICS = {"image", "image/compressed", "depth", "camera_info"}
#: parameters every rclpy node declares itself
BUILTIN_PARAMS = {"use_sim_time"}
SUBST = re.compile(r"\$\((\S+)\s*([^)]*)\)")


def console_scripts() -> dict[str, str]:
    """name -> "module:function" from setup.py's console_scripts."""
    text = (REPO / "setup.py").read_text()
    return dict(re.findall(r'"([\w-]+)\s*=\s*([\w.]+:\w+)"', text))


def resolve(value: str, args: dict[str, str]) -> str:
    def sub(match):
        kind, rest = match.group(1), match.group(2).strip()
        if kind == "var":
            assert rest in args, f"$(var {rest}) refers to an undeclared <arg>"
            return args[rest]
        if kind == "find-pkg-share":
            assert rest == "fcn_perception", f"find-pkg-share {rest}"
            return str(REPO)  # setup.py installs config/ and launch/ under share/<pkg>/
        raise AssertionError(f"unsupported substitution $({kind} ...)")

    for _ in range(5):  # nested: an arg default may hold a substitution
        value = SUBST.sub(sub, value)
    return value


def parse(path: Path, overrides: dict[str, str] | None = None):
    """``(root, args)``: the launch file and its arguments (defaults, then ``overrides``
    as given on the ``ros2 launch`` command line), resolved."""
    root = ET.parse(path).getroot()
    assert root.tag == "launch"
    args = {}
    for arg in root.iter("arg"):
        assert "default" in arg.attrib, f"{path.name}: <arg {arg.get('name')}> needs a default"
        args[arg.get("name")] = arg.get("default")
    args.update(overrides or {})
    args = {k: resolve(v, args) for k, v in args.items()}
    return root, args


def condition_holds(element, args: dict[str, str]) -> bool:
    """launch's ``if``/``unless`` attributes (true/false/1/0, case-insensitive)."""
    for attr, want in (("if", True), ("unless", False)):
        if element.get(attr) is not None:
            value = resolve(element.get(attr), args).strip().lower()
            assert value in ("true", "false", "1", "0"), f"{attr}={value!r}"
            if (value in ("true", "1")) != want:
                return False
    return True


def launch_environment(path: Path, overrides: dict[str, str] | None = None) -> dict:
    """The environment variables the file's top-level <set_env> actions give every
    process it starts after them (all of its nodes: checked)."""
    root, args = parse(path, overrides)
    env, seen_node = {}, False
    for element in root:
        if element.tag == "node":
            seen_node = True
        elif element.tag == "set_env":
            assert not seen_node, f"{path.name}: <set_env> after a <node> misses it"
            if condition_holds(element, args):
                env[element.get("name")] = resolve(element.get("value"), args)
    return env


def node_launch_config(path: Path) -> list[dict]:
    """What ros2 launch would run for each <node>: executable, name, namespace, params
    files, inline params, remaps."""
    root, args = parse(path)
    configs = []
    for node in root.iter("node"):
        cfg = {
            "pkg": node.get("pkg"), "exec": node.get("exec"),
            "name": resolve(node.get("name", node.get("exec")), args),
            "namespace": resolve(node.get("namespace", ""), args),
            "ros_args": resolve(node.get("ros_args", ""), args),
            "param_files": [], "params": {}, "remaps": {},
        }
        for p in node.findall("param"):
            if p.get("from"):
                cfg["param_files"].append(Path(resolve(p.get("from"), args)))
            else:
                cfg["params"][p.get("name")] = yaml.safe_load(resolve(p.get("value"), args))
        for r in node.findall("remap"):
            cfg["remaps"][r.get("from")] = resolve(r.get("to"), args)
        configs.append(cfg)
    return configs


def test_there_are_three_launch_files():
    assert {p.name for p in LAUNCH_FILES} == {
        "segmentation.launch.xml", "detection.launch.xml", "perception.launch.xml"}
    setup = (REPO / "setup.py").read_text()
    assert 'glob("launch/*.launch.xml")' in setup and 'glob("config/*.yaml")' in setup


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_consistent(path: Path):
    _, args = parse(path)
    assert {"camera", "namespace", "params_file"} <= set(args)
    scripts = console_scripts()
    configs = node_launch_config(path)
    assert configs, f"{path.name} starts no node"
    for cfg in configs:
        assert cfg["pkg"] == "fcn_perception"
        assert cfg["exec"] in scripts, f"{cfg['exec']} is not a console_scripts entry point"
        module, function = scripts[cfg["exec"]].split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
        specs = {s.name: s for s in params.node_specs(params.NODES[cfg["exec"]])}
        assert cfg["param_files"], f"{path.name}: {cfg['exec']} gets no params file"
        for file in cfg["param_files"]:
            assert file.is_file(), f"params file {file} does not exist"
            assert file.parent == REPO / "config"
            doc = yaml.safe_load(file.read_text())
            keys = [k for k in doc if k in ("/**", cfg["name"], f"/**/{cfg['name']}")]
            assert keys, f"{file.name} has no section for node {cfg['name']}"
            for key in keys:
                values = flatten_params(doc[key]["ros__parameters"])
                for name, value in values.items():
                    assert name in specs, f"{file.name}: {name} is not a {cfg['exec']} parameter"
                    assert specs[name].validate(value) is None, specs[name].validate(value)
        for name, value in cfg["params"].items():
            if name in BUILTIN_PARAMS:
                continue
            assert name in specs, f"{path.name}: {name} is not a {cfg['exec']} parameter"
            assert specs[name].validate(value) is None, specs[name].validate(value)
        assert cfg["params"]["use_sim_time"] is False and "use_sim_time" in args
        assert cfg["params"]["image_topics"] == [""]  # launch_ros refuses an empty list
        assert set(cfg["remaps"]) <= SUBSCRIBED_TOPICS, cfg["remaps"]
        assert cfg["remaps"]["image"] == args["camera"]
        assert cfg["remaps"]["image/compressed"] == args["camera"] + "/compressed"


FASTDDS_PROFILE = REPO / "config" / "fastdds.xml"
#: one 3840x2160 rgb8 frame (the largest the profile is for)
FRAME_4K = 3840 * 2160 * 3


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_loads_the_fastdds_profile_unless_turned_off(path: Path):
    env = launch_environment(path)
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]) == FASTDDS_PROFILE
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in launch_environment(
        path, {"fastdds_profile": "false"})
    other = "/robot/dds.xml"
    assert launch_environment(path, {"fastdds_profile_file": other}) == {
        "FASTDDS_DEFAULT_PROFILES_FILE": other}


def test_fastdds_profile_fits_4k_frames_and_keeps_udp():
    """config/fastdds.xml: the default participant profile replaces the built-in
    transports by a shared-memory segment that holds several 4K rgb8 frames and UDPv4."""
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(FASTDDS_PROFILE).getroot()
    transports = {t.findtext("d:transport_id", namespaces=ns): t
                  for t in root.iterfind(".//d:transport_descriptor", ns)}
    participants = [p for p in root.iterfind(".//d:participant", ns)
                    if p.get("is_default_profile") == "true"]
    assert len(participants) == 1
    rtps = participants[0].find("d:rtps", ns)
    assert rtps.findtext("d:useBuiltinTransports", namespaces=ns).strip() == "false"
    used = [t.text.strip() for t in rtps.iterfind("d:userTransports/d:transport_id", ns)]
    kinds = {transports[t].findtext("d:type", namespaces=ns): transports[t] for t in used}
    assert set(kinds) == {"SHM", "UDPv4"}
    segment = int(kinds["SHM"].findtext("d:segment_size", namespaces=ns))
    assert segment >= 4 * FRAME_4K, segment


@pytest.mark.parametrize("name", ["segmentation", "detection", "perception"])
def test_config_covers_every_parameter(name):
    """Each config file lists every parameter its node declares, with valid values."""
    doc = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    values = flatten_params(doc["/**"]["ros__parameters"])
    assert set(values) == {s.name for s in params.node_specs(params.NODES[f"{name}_node"])}


class FakePredictor:
    """Stands in for the models (the predictor protocols of inference.interface): this
    test is about wiring, no frame is sent."""

    classes = ["a", "b"]
    palette = None
    backend_name = "onnxruntime-cpu"
    precision = "fp32"
    nms_threshold = 0.3


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_arguments_reach_the_node(path: Path, rclpy_context):
    """Start each node as ros2 launch would (camera:=/cam1/image_raw namespace:=cam1) and
    check its name, namespace, subscription and parameters."""
    from fcn_perception.ros import nodes

    classes = {"segmentation_node": nodes.SegmentationNode,
               "detection_node": nodes.DetectionNode,
               "perception_node": nodes.CombinedNode}
    for cfg in node_launch_config(path):
        camera = "/cam1/image_raw"
        cli = ["--ros-args", "-r", f"__node:={cfg['name']}", "-r", "__ns:=/cam1"]
        for file in cfg["param_files"]:
            cli += ["--params-file", str(file)]
        for name, value in cfg["params"].items():
            cli += ["-p", f"{name}:={value}"]
        for src, dst in cfg["remaps"].items():
            dst = camera + dst[len("/camera/image_raw"):] if dst.startswith("/camera") else dst
            cli += ["-r", f"{src}:={dst}"]
        cli += cfg["ros_args"].split()
        node = classes[cfg["exec"]](context=rclpy_context, cli_args=cli,
                                    predictor_factory=lambda task, **kw: FakePredictor())
        try:
            assert node.get_fully_qualified_name() == f"/cam1/{cfg['name']}"
            assert node._state_machine.current_state[1] == "active"
            assert node._input.topic_name == camera
            for spec in params.node_specs(params.NODES[cfg["exec"]]):
                value = node.get_parameter(spec.name).value
                if spec.name == "image_topics":  # [''] from the launch file: no topics
                    assert parse_image_topics(value) == [], value
                    continue
                assert value == spec.default or \
                    spec.kind == "string_array" and list(value) == list(spec.default)
            assert node.get_parameter("use_sim_time").value is False
            topics = {pub.topic_name for head in node.heads for pub in head.pubs.values()}
            assert all(t.startswith("/cam1/") for t in topics), topics
        finally:
            node.close()
            node.destroy_node()
