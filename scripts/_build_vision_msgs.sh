# shellcheck shell=bash
# Sourced by scripts/setup.sh (which defines ROOT, VENV, PY, PIP, log, die).
#
# build_vision_msgs: build the ROS interface package interfaces/vision_msgs with CMake
# against the ROS 2 wheels in $VENV and install it into $VENV, the way the wheels lay
# out their own message packages:
#   $VENV/lib/lib*.so                              (found at run time: the
#                                                   ros-wheels-bootstrapper puts
#                                                   sys.prefix/lib on LD_LIBRARY_PATH)
#   $VENV/lib/pythonX.Y/site-packages/vision_msgs  (the Python package)
#   $VENV/share/vision_msgs, $VENV/include/vision_msgs, $VENV/share/ament_index/...
# Skipped when another vision_msgs is importable (apt ROS 2 sourced, say); then it sets
# VISION_MSGS_EXTERNAL=1.

build_vision_msgs() {
  local src="$ROOT/interfaces/vision_msgs"
  local build="$VENV/.fcn_build/vision_msgs"
  local where venv_real
  venv_real="$(cd "$VENV" && pwd -P)"
  if where="$("$PY" -c 'import os, vision_msgs.msg as m; print(os.path.realpath(m.__file__))' 2> /dev/null)"; then
    case "$where" in
      "$venv_real"/* | "$VENV"/*) ;;
      *)
        log "vision_msgs: using the one already importable at ${where%/msg/*} (not building interfaces/vision_msgs)"
        # shellcheck disable=SC2034  # read by setup.sh
        VISION_MSGS_EXTERNAL=1  # setup.sh then stamps nothing: checked again next time
        return 0
        ;;
    esac
  fi

  command -v c++ > /dev/null || command -v g++ > /dev/null \
    || die "vision_msgs: a C/C++ compiler is needed (e.g. apt-get install build-essential)"
  "$PY" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
    || die "vision_msgs: the Python headers (Python.h) of $("$PY" -c 'import sys; print(sys.base_prefix)') are missing (e.g. apt-get install python3-dev)"
  local cmake=cmake
  if ! command -v cmake > /dev/null; then
    log "vision_msgs: no cmake on PATH: installing the cmake wheel into the venv"
    "${PIP[@]}" install --quiet cmake
    cmake="$VENV/bin/cmake"
  fi
  local gen=()
  if command -v ninja > /dev/null; then gen=(-G Ninja); fi
  local jobs="${FCN_SETUP_JOBS:-$(nproc 2> /dev/null || echo 2)}"

  log "vision_msgs: building interfaces/vision_msgs into $VENV (CMake, ~30-60 s)"
  local t0=$SECONDS
  # A build directory from another generator or source path cannot be reused.
  if [[ -f "$build/CMakeCache.txt" ]] \
    && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$build/CMakeCache.txt"; then
    rm -rf "$build"
  fi
  # Remove what an earlier build installed (a message may have been removed since).
  if [[ -f "$build/install_manifest.txt" ]]; then
    xargs -d '\n' rm -f < "$build/install_manifest.txt" || true
  fi
  mkdir -p "$build"
  (
    export PATH="$VENV/bin:$PATH"
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    "$cmake" -S "$src" -B "$build" "${gen[@]}" \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$PY" \
      -DPython3_FIND_VIRTUALENV=ONLY \
      -DBUILD_TESTING=OFF > "$build/configure.log" 2>&1 \
      || { tail -40 "$build/configure.log" >&2; die "vision_msgs: CMake configure failed (log: $build/configure.log)"; }
    "$cmake" --build "$build" --parallel "$jobs" > "$build/build.log" 2>&1 \
      || { tail -40 "$build/build.log" >&2; die "vision_msgs: build failed (log: $build/build.log)"; }
    "$cmake" --install "$build" > "$build/install.log" 2>&1 \
      || { tail -20 "$build/install.log" >&2; die "vision_msgs: install failed (log: $build/install.log)"; }
  )
  "$PY" -c 'import vision_msgs.msg as m; m.Detection2DArray(); m.LabelInfo()' \
    || die "vision_msgs: built and installed, but 'import vision_msgs.msg' fails in $PY"
  log "vision_msgs: built and installed in $((SECONDS - t0)) s"
}
