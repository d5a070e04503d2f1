#!/usr/bin/env bash
# Set up fcn_perception's development environment in .venv at the repository root.
#
#   scripts/setup.sh            set up what is missing or out of date (idempotent)
#   scripts/setup.sh --force    redo every step (but keep the venv)
#   scripts/setup.sh --check    exit 0 if up to date, 1 if not (changes nothing)
#
# Steps, each skipped when its inputs have not changed (stamps in .venv/.fcn_stamps/):
#   1. venv         create .venv with $PYTHON (default python3; CPython 3.10 - 3.14)
#   2. pip          pip install --require-hashes -r requirements.lock (every package pinned
#                   with hashes; compiled from requirements.in by `make lock`)
#   3. package      pip install -e . (fcn_perception itself, editable, no dependencies)
#   4. vision_msgs  build interfaces/vision_msgs with CMake into .venv, unless another
#                   vision_msgs is importable already (e.g. apt ROS 2 sourced)
# When nothing changed it returns in well under a second.
#
# Environment: PYTHON (interpreter for a new venv), FCN_VENV (venv path, default
# <repo>/.venv), FCN_SETUP_JOBS (parallel build jobs, default: number of cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FCN_VENV:-$ROOT/.venv}"
STAMPS="$VENV/.fcn_stamps"
MODE="${1:-}"
case "$MODE" in
  "" | --force | --check) ;;
  -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "setup.sh: unknown option '$MODE' (use --force, --check or --help)" >&2; exit 2 ;;
esac

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Python processes started from here must compute their library path for *this* venv
# (the ros-wheels-bootstrapper skips that when its guard variable is inherited).
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

# ---------------------------------------------------------------- input hashes
_hash_files() { # files relative to ROOT... -> one hash (a missing file hashes as its name)
  local f
  for f in "$@"; do
    printf '%s\n' "$f"
    if [[ -f "$ROOT/$f" ]]; then sha256sum < "$ROOT/$f"; fi
  done | sha256sum | cut -d' ' -f1
}
_interfaces_files() { (cd "$ROOT" && find interfaces -type f ! -name '*.pyc' | LC_ALL=C sort); }
_setup_scripts() { (cd "$ROOT" && find scripts -maxdepth 1 \( -name setup.sh -o -name "_*.sh" \) | LC_ALL=C sort); }

H_VENV="$(printf '%s\n' "$VENV" | sha256sum | cut -d' ' -f1)"
H_PIP="$(_hash_files requirements.lock)"
H_PKG="$(_hash_files setup.py setup.cfg package.xml)"
# shellcheck disable=SC2046
H_MSGS="$(_hash_files $(_interfaces_files) scripts/_build_vision_msgs.sh)"
# shellcheck disable=SC2046
H_ALL="$({ echo "$H_VENV $H_PIP $H_PKG $H_MSGS"; _hash_files $(_setup_scripts); } | sha256sum | cut -d' ' -f1)"

_stamp_ok() { [[ -f "$STAMPS/$1" && "$(< "$STAMPS/$1")" == "$2" ]]; }
_stamp_set() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }
_venv_ok() {
  [[ -x "$VENV/bin/python" && -f "$VENV/pyvenv.cfg" ]] || return 1
  # The interpreter the venv was made from must still exist.
  local home
  home="$(sed -n 's/^home *= *//p' "$VENV/pyvenv.cfg")"
  [[ -z "$home" || -d "$home" ]]
}
_empty_venv_dir() { find "$VENV" -mindepth 1 -maxdepth 1 ! -name .fcn_setup.lock -exec rm -rf {} +; }

# ---------------------------------------------------------------- fast path
if [[ "$MODE" != "--force" ]] && _venv_ok && _stamp_ok all "$H_ALL"; then
  [[ "$MODE" == "--check" ]] || log "up to date ($VENV)"
  exit 0
fi
if [[ "$MODE" == "--check" ]]; then
  log "not up to date ($VENV): run 'make setup'"
  exit 1
fi

START=$SECONDS
mkdir -p "$VENV"
# One set-up at a time per venv (parallel `make test` runs, several shells).
exec 9> "$VENV/.fcn_setup.lock"
if command -v flock > /dev/null; then
  flock 9
  if [[ "$MODE" != "--force" ]] && _venv_ok && _stamp_ok all "$H_ALL"; then
    log "up to date ($VENV; set up by another process)"
    exit 0
  fi
fi
if [[ "$MODE" == "--force" ]]; then rm -f "$STAMPS"/{pip,package,vision_msgs,all}; fi

PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# ---------------------------------------------------------------- 1. venv
if _venv_ok && [[ -f "$STAMPS/venv" ]] && ! _stamp_ok venv "$H_VENV"; then
  # Made at another path (the repository was moved): its scripts point there.
  log "$VENV was made for another location: recreating it"
  _empty_venv_dir
fi
if ! _venv_ok; then
  BASE_PY="${PYTHON:-python3}"
  command -v "$BASE_PY" > /dev/null \
    || die "no '$BASE_PY' found: install Python 3.10-3.14 with venv and headers (e.g. apt-get install python3 python3-venv python3-dev) or set PYTHON=/path/to/python3"
  "$BASE_PY" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 14) else 1)' \
    || die "$BASE_PY is not CPython 3.10-3.14 (the ROS 2 Kilted wheels need one of those); set PYTHON=/path/to/python3.x"
  if [[ -e "$VENV/bin" ]]; then
    log "existing $VENV is broken: recreating it"
    _empty_venv_dir
  fi
  log "creating virtual environment $VENV with $("$BASE_PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$BASE_PY" -m venv "$VENV"
  "${PIP[@]}" install --quiet --upgrade pip
  rm -rf "$STAMPS"
fi
if ! _stamp_ok venv "$H_VENV"; then
  # A new venv, or one made by hand: run every step once.
  rm -rf "$STAMPS"
  _stamp_set venv "$H_VENV"
fi

# ---------------------------------------------------------------- 2. pip
if ! _stamp_ok pip "$H_PIP"; then
  avail_kb="$(df -Pk "$VENV" | awk 'NR==2 {print $4}')"
  if [[ -n "$avail_kb" && "$avail_kb" -lt $((12 * 1024 * 1024)) ]] \
    && ! "$PY" -c 'import torch' > /dev/null 2>&1; then
    log "WARNING: only $((avail_kb / 1024 / 1024)) GiB free for $VENV; torch with its CUDA libraries needs about 10 GiB"
  fi
  log "installing Python dependencies from requirements.lock (the first time: ~5 GB, mostly torch)"
  "${PIP[@]}" install --progress-bar off --require-hashes -r "$ROOT/requirements.lock"
  _stamp_set pip "$H_PIP"
fi

# ---------------------------------------------------------------- 3. package
if ! _stamp_ok package "$H_PKG"; then
  log "installing fcn_perception (editable)"
  mkdir -p "$VENV/.fcn_build"
  "${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT" > "$VENV/.fcn_build/editable.log" 2>&1 \
    || { tail -40 "$VENV/.fcn_build/editable.log" >&2; die "pip install -e . failed (log: $VENV/.fcn_build/editable.log)"; }
  _stamp_set package "$H_PKG"
fi

# ---------------------------------------------------------------- 4. vision_msgs
if ! _stamp_ok vision_msgs "$H_MSGS"; then
  # shellcheck source=scripts/_build_vision_msgs.sh
  source "$ROOT/scripts/_build_vision_msgs.sh"
  VISION_MSGS_EXTERNAL=0
  build_vision_msgs
  [[ "$VISION_MSGS_EXTERNAL" == 1 ]] || _stamp_set vision_msgs "$H_MSGS"
fi

# ---------------------------------------------------------------- check + stamp
"$PY" -c 'import rclpy, sensor_msgs.msg, vision_msgs.msg, fcn_perception' \
  || die "the environment does not import rclpy, sensor_msgs, vision_msgs and fcn_perception"
# With an external vision_msgs nothing is stamped: it may not be there next time.
if _stamp_ok vision_msgs "$H_MSGS"; then _stamp_set all "$H_ALL"; fi
log "done in $((SECONDS - START)) s; activate with: source ${VENV/#$PWD\//}/bin/activate"
