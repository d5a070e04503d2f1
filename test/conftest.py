"""Shared pytest fixtures and hooks for fcn_perception's tests.

Fixtures
  repo_root       Path of the repository root.
  camvid_dir      Path of the CamVid data set: $FCN_CAMVID_DIR, else ../shared/camvid
                  beside the repository; the test is skipped (with the reason) if absent.
  ros_domain      A ROS_DOMAIN_ID (int) that no other test process on this machine holds
                  at the same time. Sets ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=
                  LOCALHOST in os.environ for the test, so rclpy.init() and subprocesses
                  started by the test use it.
  rclpy_context   An initialised rclpy Context on `ros_domain` (shut down afterwards):
                  pass it as `context=` to Node / executors; skips if rclpy is missing.
  inference_cache The export/engine cache ($FCN_PERCEPTION_CACHE) in a temporary folder
                  for the session (one ONNX export per weights file per run).
  seg_weights, det_weights
                  Small random-initialised FCN-8s ResNet-18 / R-FCN weights with cards
                  (test/factories.py), once per session.
  seg_pair, det_pair
                  (torch-cpu, onnxruntime-cpu) Predictors of those weights.
  one_torch_thread
                  torch runs on one thread for a module's tests (restored afterwards; set
                  up before the module's other fixtures): use it with
                  `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.

Builders that tests call themselves (frames, weights, IoU) are in test/factories.py.

Hooks
  Tests marked `gpu` are skipped where torch.cuda.is_available() is false; tests marked
  `tensorrt` also need the `tensorrt` Python package.

At import, ROS_AUTOMATIC_DISCOVERY_RANGE defaults to LOCALHOST for the whole session
(DDS discovery stays on this machine) and ROS_DOMAIN_ID is set to a session-unique
domain, so a test that calls rclpy.init() without the fixtures still does not talk to
other test runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Fast DDS maps domain d to UDP ports 7400 + 250 * d (+ offsets): 0..232 are usable.
# 0 (the default) and the lowest ids are left to real systems, 100..199 to
# scripts/demo.sh (which picks a random domain there).
_DOMAIN_RANGE = [*range(20, 100), *range(200, 230)]
_LOCK_DIR = Path(tempfile.gettempdir()) / "fcn_perception_ros_domains"


class _DomainLease:
    """A ROS domain id reserved by an exclusive lock file (released on close)."""

    def __init__(self) -> None:
        _LOCK_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            _LOCK_DIR.chmod(0o1777)
        ids = list(_DOMAIN_RANGE)
        random.SystemRandom().shuffle(ids)
        for domain_id in ids:
            fd = os.open(_LOCK_DIR / f"{domain_id}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.domain_id, self._fd = domain_id, fd
            return
        raise RuntimeError(f"no free ROS domain id (locks in {_LOCK_DIR})")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


# Session-wide defaults (see the module docstring). The lease lives as long as the
# pytest process.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
_SESSION_DOMAIN = _DomainLease()
os.environ["ROS_DOMAIN_ID"] = str(_SESSION_DOMAIN.domain_id)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def camvid_dir() -> Path:
    env = os.environ.get("FCN_CAMVID_DIR")
    path = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "camvid"
    path = path.resolve()
    if not (path / "train").is_dir() or not (path / "trainannot").is_dir():
        pytest.skip(
            f"CamVid not found at {path} (needs train/ and trainannot/): put it at "
            "../shared/camvid beside the repository or set FCN_CAMVID_DIR"
        )
    return path


@pytest.fixture
def ros_domain(monkeypatch: pytest.MonkeyPatch):
    lease = _DomainLease()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(lease.domain_id))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        yield lease.domain_id
    finally:
        lease.close()


@pytest.fixture
def rclpy_context(ros_domain: int):
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    try:
        yield context
    finally:
        with contextlib.suppress(Exception):
            context.try_shutdown()


# The fixtures below import torch (seconds) only when a test asks for them, so that the
# ROS and bag tests start without it.
@pytest.fixture(scope="session")
def inference_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fcn_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FCN_PERCEPTION_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def seg_weights(tmp_path_factory, inference_cache) -> Path:
    from factories import make_segmentation_weights

    return make_segmentation_weights(tmp_path_factory.mktemp("seg"))


@pytest.fixture(scope="session")
def det_weights(tmp_path_factory, inference_cache) -> Path:
    from factories import make_detection_weights

    return make_detection_weights(tmp_path_factory.mktemp("det"))


@pytest.fixture(scope="session")
def seg_pair(seg_weights):
    from fcn_perception import load_predictor

    return (load_predictor("segmentation", "torch-cpu", seg_weights),
            load_predictor("segmentation", "onnxruntime-cpu", seg_weights))


@pytest.fixture(scope="session")
def det_pair(det_weights):
    from fcn_perception import load_predictor

    return (load_predictor("detection", "torch-cpu", det_weights),
            load_predictor("detection", "onnxruntime-cpu", det_weights))


@pytest.fixture(scope="module")
def one_torch_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [
        i for i in items if i.get_closest_marker("gpu") or i.get_closest_marker("tensorrt")
    ]
    if not gpu_items:
        return
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:  # any failure means: no usable GPU
        cuda = False
    try:
        import tensorrt  # noqa: F401

        trt = True
    except Exception:
        trt = False
    for item in gpu_items:
        if not cuda:
            item.add_marker(
                pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
            )
        elif item.get_closest_marker("tensorrt") and not trt:
            item.add_marker(pytest.mark.skip(reason="needs the tensorrt Python package"))
