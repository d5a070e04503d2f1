"""The foundation: the environment (`make setup`), vision_msgs, ROS 2 pub/sub across
processes, and the package as a colcon (ament_python) package."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_REPO_VENV = Path(sys.prefix).resolve() == (REPO_ROOT / ".venv").resolve()

# vision_msgs 4.1 (ros-perception/vision_msgs): field names and types, in order, as
# the generated Python classes report them.
VISION_MSGS_4_1 = {
    "Point2D": [("x", "double"), ("y", "double")],
    "Pose2D": [("position", "vision_msgs/Point2D"), ("theta", "double")],
    "BoundingBox2D": [
        ("center", "vision_msgs/Pose2D"),
        ("size_x", "double"),
        ("size_y", "double"),
    ],
    "ObjectHypothesis": [("class_id", "string"), ("score", "double")],
    "ObjectHypothesisWithPose": [
        ("hypothesis", "vision_msgs/ObjectHypothesis"),
        ("pose", "geometry_msgs/PoseWithCovariance"),
    ],
    "Detection2D": [
        ("header", "std_msgs/Header"),
        ("results", "sequence<vision_msgs/ObjectHypothesisWithPose>"),
        ("bbox", "vision_msgs/BoundingBox2D"),
        ("id", "string"),
    ],
    "Detection2DArray": [
        ("header", "std_msgs/Header"),
        ("detections", "sequence<vision_msgs/Detection2D>"),
    ],
    "BoundingBox3D": [("center", "geometry_msgs/Pose"), ("size", "geometry_msgs/Vector3")],
    "Detection3D": [
        ("header", "std_msgs/Header"),
        ("results", "sequence<vision_msgs/ObjectHypothesisWithPose>"),
        ("bbox", "vision_msgs/BoundingBox3D"),
        ("id", "string"),
    ],
    "Detection3DArray": [
        ("header", "std_msgs/Header"),
        ("detections", "sequence<vision_msgs/Detection3D>"),
    ],
    "VisionClass": [("class_id", "uint16"), ("class_name", "string")],
    "LabelInfo": [
        ("header", "std_msgs/Header"),
        ("class_map", "sequence<vision_msgs/VisionClass>"),
        ("threshold", "float"),
    ],
}


def _run(cmd, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)


# --------------------------------------------------------------------------- environment
def test_environment_imports():
    """The import line from the set-up's definition of done, in a fresh interpreter."""
    code = (
        "import rclpy, vision_msgs.msg, sensor_msgs.msg, torch, torchvision, onnxruntime, "
        "rosbags, fcn_perception"
    )
    proc = _run([sys.executable, "-c", code], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(not IN_REPO_VENV, reason="runs only in the repository's .venv")
def test_setup_is_idempotent_and_fast():
    """`make test` ran the set-up just before; a second run must find nothing to do: the
    check takes the fast path (input hashes against the stamps; no pip, no build), says
    nothing and changes nothing in the venv.  (Its duration is the machine's; not asserted.)"""
    vision_msgs = pytest.importorskip("vision_msgs")
    if not Path(vision_msgs.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()):
        pytest.skip("vision_msgs comes from outside the venv: set-up checks it every time")
    venv = Path(sys.prefix)

    def state() -> dict:
        paths = [venv, venv / "bin", *sorted((venv / ".fcn_stamps").glob("*"))]
        return {str(p): p.stat().st_mtime_ns for p in paths if p.exists()}

    before = state()
    proc = _run(["bash", str(REPO_ROOT / "scripts" / "setup.sh"), "--check"], timeout=300)
    assert proc.returncode == 0, f"set-up is not up to date: run `make setup`\n{proc.stderr}"
    assert (proc.stdout, proc.stderr) == ("", ""), (proc.stdout, proc.stderr)
    assert state() == before and len(before) > 3, "an up-to-date check changed the venv"


def _locked_pins() -> dict[str, str]:
    """``requirements.lock``'s exact pins whose environment markers hold here."""
    from packaging.requirements import Requirement

    pins = {}
    text = (REPO_ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("--hash")[0].strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.lock: {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def canonicalize_name(name: str) -> str:
    from packaging.utils import canonicalize_name as canon

    return canon(name)


def test_lock_pins_every_package_with_hashes_and_satisfies_requirements_in():
    """requirements.lock is what `make lock` makes of requirements.in: each direct
    requirement is locked at a version its specifier admits, and every pin has a hash."""
    from packaging.requirements import Requirement

    lock_text = (REPO_ROOT / "requirements.lock").read_text()
    blocks = [b for b in lock_text.replace("\\\n", " ").splitlines()
              if b.strip() and not b.strip().startswith("#")]
    unhashed = [b.split()[0] for b in blocks if "--hash=sha256:" not in b]
    assert blocks and not unhashed, f"pins without a hash: {unhashed}"
    pins = _locked_pins()
    stale = {}
    for line in (REPO_ROOT / "requirements.in").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        locked = pins.get(canonicalize_name(req.name))
        if locked is None or not req.specifier.contains(locked, prereleases=True):
            stale[req.name] = (str(req.specifier), locked)
    assert not stale, f"requirements.lock is stale for {stale}: run `make lock`"


@pytest.mark.skipif(not IN_REPO_VENV, reason="runs only in the repository's .venv")
def test_installed_versions_match_the_lock():
    pins = _locked_pins()
    assert {"torch", "torchvision", "ros-rclpy", "onnxruntime"} <= pins.keys()
    wrong = {}
    for name, version in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or canonicalize_name(installed) != canonicalize_name(version):
            wrong[name] = (version, installed)
    assert not wrong, f"(locked, installed) differ: {wrong}; run `make setup`"


def test_ci_runs_make_test():
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[-1] in ("make test", "exec make test"), lines


# --------------------------------------------------------------------------- layering
# Every module of the installed package except the training subpackage: what runs on
# the robot (models, inference, imaging, evaluation, ros, bag, the top-level modules).
_IMPORT_RUNTIME = r"""
import importlib, json, sys
from pathlib import Path

import fcn_perception

root = Path(fcn_perception.__file__).parent
names = sorted(
    ".".join(("fcn_perception", *p.relative_to(root).with_suffix("").parts)).removesuffix(
        ".__init__")
    for p in root.rglob("*.py") if "training" not in p.relative_to(root).parts)
missing = {}
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # an optional third-party package (rclpy, ...)
        if (exc.name or "").startswith("fcn_perception"):
            raise
        missing[name] = exc.name
print(json.dumps({"modules": names, "missing": missing,
                  "training": sorted(m for m in sys.modules if "fcn_perception.training" in m)}))
"""
RUNTIME_SAMPLE = ("fcn_perception.bag.eval", "fcn_perception.bag.make", "fcn_perception.cli",
                  "fcn_perception.evaluation.segmentation", "fcn_perception.imaging.decode",
                  "fcn_perception.inference.predictor")


def test_runtime_modules_do_not_import_training():
    """Importing every runtime module, in a fresh interpreter, loads nothing of
    fcn_perception.training."""
    proc = _run([sys.executable, "-c", _IMPORT_RUNTIME], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["training"] == [], f"runtime imports pulled in {result['training']}"
    imported = set(result["modules"]) - set(result["missing"])
    assert set(RUNTIME_SAMPLE) <= imported, (RUNTIME_SAMPLE, result["missing"])


def _imported_names(tree: ast.AST):
    """``(line, module)`` of every absolute import in a module, function bodies included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{a.name}") for a in node.names)


def test_runtime_sources_never_import_training():
    """No import of fcn_perception.training anywhere in fcn_perception/, not even inside
    a function (the import check above cannot see those)."""
    sources = sorted((REPO_ROOT / "fcn_perception").rglob("*.py"))
    found, offenders = set(), []
    for path in sources:
        for line, name in _imported_names(ast.parse(path.read_text(), str(path))):
            found.add(name)
            if name == "fcn_perception.training" or name.startswith("fcn_perception.training."):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    assert not offenders, "\n".join(offenders)
    assert {"fcn_perception.evaluation.segmentation", "fcn_perception.imaging.decode"} <= found


# --------------------------------------------------------------------------- vision_msgs
@pytest.mark.parametrize("name", sorted(VISION_MSGS_4_1))
def test_vision_msgs_fields_match_4_1(name):
    vision_msgs_msg = pytest.importorskip("vision_msgs.msg")
    cls = getattr(vision_msgs_msg, name)
    assert list(cls.get_fields_and_field_types().items()) == VISION_MSGS_4_1[name]


def test_vision_msgs_interface_package_sources():
    pkg_dir = REPO_ROOT / "interfaces" / "vision_msgs"
    root = ET.parse(pkg_dir / "package.xml").getroot()
    assert root.findtext("name") == "vision_msgs"
    assert root.findtext("version").startswith("4.1.")
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    assert root.findtext("export/build_type") == "ament_cmake"
    buildtool = {e.text for e in root.findall("buildtool_depend")}
    assert {"ament_cmake", "rosidl_default_generators"} <= buildtool
    assert {"std_msgs", "geometry_msgs"} <= {e.text for e in root.findall("depend")}
    assert "rosidl_default_runtime" in {e.text for e in root.findall("exec_depend")}

    msg_files = sorted(p.name for p in (pkg_dir / "msg").glob("*.msg"))
    assert msg_files == sorted(f"{n}.msg" for n in VISION_MSGS_4_1)
    cmake = (pkg_dir / "CMakeLists.txt").read_text()
    listed = sorted(re.findall(r'"msg/(\w+\.msg)"', cmake))
    assert listed == msg_files


def test_vision_msgs_definitions_in_sources_match_4_1():
    """The .msg text itself (independent of which vision_msgs is installed)."""
    builtin = {"float64": "double", "float32": "float", "uint16": "uint16", "string": "string"}
    for name, fields in VISION_MSGS_4_1.items():
        text = (REPO_ROOT / "interfaces" / "vision_msgs" / "msg" / f"{name}.msg").read_text()
        parsed = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            ftype, fname = line.split()
            seq = ftype.endswith("[]")
            ftype = ftype.removesuffix("[]")
            if ftype in builtin:
                ftype = builtin[ftype]
            elif "/" not in ftype:
                ftype = f"vision_msgs/{ftype}"
            parsed.append((fname, f"sequence<{ftype}>" if seq else ftype))
        assert parsed == fields, name


# --------------------------------------------------------------------------- pub/sub
def to_plain(msg):
    """A ROS message as nested dicts/lists of Python scalars (JSON-able)."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: to_plain(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple)):
        return [to_plain(v) for v in msg]
    if hasattr(msg, "tolist"):  # numpy arrays (fixed-size fields), array.array (sequences)
        return msg.tolist()
    return msg


SUBSCRIBER = r"""
import json, os, sys, time

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from vision_msgs.msg import Detection2DArray, LabelInfo

@TO_PLAIN@

det_topic, label_topic, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
rclpy.init()
node = Node("fcn_foundation_subscriber")
got = {}

def keep(key):
    def callback(msg):
        if key not in got:
            got[key] = {"plain": to_plain(msg), "cdr": serialize_message(msg).hex()}
    return callback

reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
latched = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
node.create_subscription(Detection2DArray, det_topic, keep("detections"), reliable)
node.create_subscription(LabelInfo, label_topic, keep("label_info"), latched)
print("READY", flush=True)
deadline = time.monotonic() + timeout
while len(got) < 2 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
result = {"pid": os.getpid(), "domain": os.environ.get("ROS_DOMAIN_ID"), **got}
print("RESULT " + json.dumps(result), flush=True)
node.destroy_node()
rclpy.shutdown()
sys.exit(0 if len(got) == 2 else 3)
"""


def _make_detections():
    from geometry_msgs.msg import PoseWithCovariance
    from vision_msgs.msg import (
        BoundingBox2D,
        Detection2D,
        Detection2DArray,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
        Point2D,
        Pose2D,
    )

    msg = Detection2DArray()
    msg.header.stamp.sec = 1_700_000_123
    msg.header.stamp.nanosec = 456_789_012
    msg.header.frame_id = "camera_optical_frame"
    for i in range(3):
        det = Detection2D()
        det.header = msg.header
        det.id = f"track-{i}-é"
        det.bbox = BoundingBox2D(
            center=Pose2D(position=Point2D(x=10.25 + i, y=20.5 - i), theta=0.125 * i),
            size_x=33.0 + 0.1 * i,
            size_y=44.0 + 1e-9 * i,
        )
        for k in range(2):
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis = ObjectHypothesis(class_id=str(3 * i + k), score=0.9 - 0.1 * k)
            pose = PoseWithCovariance()
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (
                float(i),
                float(k),
                -1.5,
            )
            pose.pose.orientation.z, pose.pose.orientation.w = 0.6, 0.8
            pose.covariance = [0.01 * j + i + 0.5 * k for j in range(36)]
            hyp.pose = pose
            det.results.append(hyp)
        msg.detections.append(det)
    return msg


def _make_label_info():
    from vision_msgs.msg import LabelInfo, VisionClass

    msg = LabelInfo()
    msg.header.stamp.sec = 42
    msg.header.frame_id = "camera_optical_frame"
    msg.class_map = [
        VisionClass(class_id=i, class_name=name)
        for i, name in enumerate(["sky", "building", "pole", "road", "car"])
    ] + [VisionClass(class_id=255, class_name="unlabeled")]
    msg.threshold = 0.5
    return msg


@pytest.mark.slow
def test_detection2darray_round_trip_between_processes(rclpy_context, ros_domain, tmp_path):
    """Publish vision_msgs with rclpy here; another process (real rclpy, Fast DDS)
    receives them and sends back what it got, which must equal what was sent.
    LabelInfo goes out once, transient-local, before the subscriber exists."""
    import inspect

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from vision_msgs.msg import Detection2DArray, LabelInfo

    ns = f"/fcn_foundation_{uuid.uuid4().hex[:8]}"
    det_topic, label_topic = f"{ns}/detections", f"{ns}/label_info"
    detections, label_info = _make_detections(), _make_label_info()

    node = Node("fcn_foundation_publisher", context=rclpy_context)
    det_pub = node.create_publisher(
        Detection2DArray, det_topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    label_pub = node.create_publisher(
        LabelInfo,
        label_topic,
        QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        ),
    )
    label_pub.publish(label_info)

    script = tmp_path / "subscriber.py"
    script.write_text(SUBSCRIBER.replace("@TO_PLAIN@", inspect.getsource(to_plain)))
    stderr_path = tmp_path / "subscriber.stderr"
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), det_topic, label_topic, "60"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=dict(os.environ),
        )
        try:
            deadline = time.monotonic() + 90
            while proc.poll() is None and time.monotonic() < deadline:
                det_pub.publish(detections)
                executor.spin_once(timeout_sec=0.1)
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            executor.shutdown()
            node.destroy_node()
    err = stderr_path.read_text()[-3000:]
    assert proc.returncode == 0, f"subscriber exit {proc.returncode}\n{out}\n{err}"
    result = json.loads(next(li[7:] for li in out.splitlines() if li.startswith("RESULT ")))
    assert result["pid"] != os.getpid()
    assert result["domain"] == str(ros_domain)

    for key, sent, cls in (
        ("detections", detections, Detection2DArray),
        ("label_info", label_info, LabelInfo),
    ):
        got = result[key]
        assert got["plain"] == json.loads(json.dumps(to_plain(sent))), key
        # Not a byte comparison: rclpy leaves CDR alignment padding uninitialised, so two
        # serialisations of one message can differ in their padding bytes.
        cdr = bytes.fromhex(got["cdr"])
        assert len(cdr) == len(serialize_message(sent)), key
        assert deserialize_message(cdr, cls) == sent, key


# --------------------------------------------------------------------------- colcon
def _console_scripts() -> list[str]:
    """Entry points declared in setup.py (read from the source, not an install)."""
    text = (REPO_ROOT / "setup.py").read_text()
    block = re.search(r'"console_scripts"\s*:\s*\[(.*?)\]', text, re.S)
    assert block, "setup.py declares no console_scripts"
    return re.findall(r'"\s*([\w.\-]+)\s*=\s*[\w.]+:\w+\s*"', block.group(1))


@pytest.mark.slow
def test_colcon_build_installs_ament_python_layout(tmp_path):
    """`colcon build` (colcon from PyPI) of the repository in a scratch workspace gives
    the layout ROS 2 tools expect (ros2 run / ros2 launch / ament index)."""
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip(f"colcon is not installed next to {sys.executable}")
    env = dict(os.environ, COLCON_HOME=str(tmp_path / "colcon_home"), PYTHONWARNINGS="ignore")
    proc = _run(
        [str(colcon), "build", "--base-paths", str(REPO_ROOT)],
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Starting >>> fcn_perception" in proc.stdout
    # Only fcn_perception: the crawl stops at the package root (interfaces/ is not
    # picked up as a second package).
    assert re.findall(r"Starting >>> (\S+)", proc.stdout) == ["fcn_perception"]

    prefix = tmp_path / "install" / "fcn_perception"
    share = prefix / "share" / "fcn_perception"
    assert (share / "package.xml").read_text() == (REPO_ROOT / "package.xml").read_text()
    assert (prefix / "share/ament_index/resource_index/packages/fcn_perception").is_file()
    for pattern, sub in (("launch/*.launch.xml", "launch"), ("config/*.yaml", "config")):
        for src in sorted(REPO_ROOT.glob(pattern)):
            installed = share / sub / src.name
            assert installed.is_file(), f"{src.relative_to(REPO_ROOT)} not installed"
            assert installed.read_bytes() == src.read_bytes()
    scripts = _console_scripts()
    assert scripts
    for name in scripts:
        exe = prefix / "lib" / "fcn_perception" / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"lib/fcn_perception/{name} missing"
    site = list(prefix.glob("lib/python3*/site-packages"))
    assert len(site) == 1
    assert (site[0] / "fcn_perception" / "__init__.py").is_file()
    assert (site[0] / "fcn_perception" / "training" / "__init__.py").is_file()
