#!/usr/bin/env bash
# Build spatialthinker_msgs with plain CMake and install it into the venv.
# The package itself is a standard ament_cmake package (colcon builds it
# unchanged); the wheel-environment workaround is injected from here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}
build=$root/build/spatialthinker_msgs
mkdir -p "$build"
export PATH="$venv/bin:$PATH"
export CMAKE_PREFIX_PATH="$venv"
export AMENT_PREFIX_PATH="$venv"
cmake -S "$root/spatialthinker_msgs" -B "$build" \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$venv/bin/python" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DCMAKE_PROJECT_INCLUDE="$root/tools/cmake/wheel_env_fixups.cmake" \
  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$build.log" 2>&1 || { cat "$build.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >>"$build.log" 2>&1 || { tail -50 "$build.log"; exit 1; }
cmake --install "$build" >>"$build.log" 2>&1 || { tail -50 "$build.log"; exit 1; }
echo "spatialthinker_msgs installed into $venv"
