#!/usr/bin/env bash
# GPU check: run the GPU and TensorRT paths on a machine with an NVIDIA GPU, with the
# project's virtual environment and nothing from the internet, in at most 8 minutes.
#
#   scripts/gpu_check.sh [--iterations N] [--budget-s S] [--skip torch tensorrt node tests]
#
# Steps (scripts/gpu_check.py; each records its outcome, a failing one does not stop the
# others, steps left after the time budget (7 min) are recorded as skipped):
#   1. torch-cuda backend, fp16 + channels_last, on the shipped models: label and box
#      parity with torch-cpu on the bundled demo frames (fcn_perception/data/camvid_sample);
#      frames/s at 360x480 for batch 1 (whole Predictor) and 8 (segmentation network), and
#      a CUDA graph of the segmentation network (does it help?)
#   2. TensorRT, when `import tensorrt` works: fp16 engines of both models and an int8
#      segmentation engine (built with fcn_perception's build plan: strongly typed on
#      TensorRT 10 and 11), the same parity checks, frames/s
#   3. end-to-end latency of segmentation_node over Fast DDS (camera stamp -> labels)
#   4. the GPU-marked tests: pytest -m "gpu or tensorrt"
# and writes docs/bench_gpu.md (device name, versions, tables, every check).
#
# Environment: FCN_VENV (default .venv), the virtual environment `make setup` made;
# FCN_GPU_WHEELS, a folder of extra wheels carried to an offline machine (for example
# tensorrt-cu12 or -cu13 with its -libs and -bindings), installed with --no-index into a
# temporary folder first.
#
# Exit status: 0 all checks passed; 1 a check failed (docs/bench_gpu.md says which);
# 2 no usable virtual environment; 77 no CUDA GPU: one line "gpu_check: SKIPPED: ..." on
# stderr, nothing measured, docs/bench_gpu.md untouched (77 is automake's "skipped":
# non-zero, so that no script mistakes a machine without a GPU for a pass).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
case "${1:-}" in -h | --help) sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
VENV="${FCN_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "gpu_check: FAILED: no virtual environment at $VENV (run 'make setup' where there is internet, or set FCN_VENV)" >&2
  exit 2
fi
if [ -n "${FCN_GPU_WHEELS:-}" ]; then
  SITE="$(mktemp -d /tmp/fcn_gpu_site.XXXXXX)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$FCN_GPU_WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV" PYTHONUNBUFFERED=1
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((100 + RANDOM % 100))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
exec timeout --signal=INT 480 "$PY" scripts/gpu_check.py "$@"
