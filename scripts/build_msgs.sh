#!/usr/bin/env bash
# Build an interface package with plain CMake and install it into the venv.
#
#   scripts/build_msgs.sh [PACKAGE_DIR]   (default: spatialthinker_msgs)
#
# BUILD_TYPE (default Release) is the CMake build type; the Makefile builds the
# test-only packages with None (no optimisation flags: about a fifth less CPU
# time, and tests do not need fast serialisation of a few small messages).
#
# The package itself is a standard ament_cmake package (colcon builds it
# unchanged); the wheel-environment workaround is injected from here. The
# Makefile also builds the test-only interface packages in scripts/test_interfaces/
# with it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${VENV:-$root/.venv-jazzy}" && pwd)
src=$(cd "${1:-$root/spatialthinker_msgs}" && pwd)
pkg=$(basename "$src")
# One CMake build directory per distribution and package (the Makefile passes
# BUILD_DIR); the distribution is read from the venv's rclpy wheel when it is not given.
if [ -z "${BUILD_DIR:-}" ]; then
  distro=kilted
  if compgen -G "$venv/lib/python3*/site-packages/ros_jazzy_rclpy-*.dist-info" >/dev/null; then
    distro=jazzy
  fi
  BUILD_DIR=$root/build/$distro/$pkg
fi
build=$BUILD_DIR
# One build at a time in a build directory, whoever starts it (make, or by hand).
mkdir -p "$(dirname "$build")"
exec 9>"$build.lock"
flock 9
# A CMake cache stores the absolute paths of the venv it was made for: one made
# for another venv (of the same distribution) is dropped, never reused.
if [ -f "$build/CMakeCache.txt" ] \
  && ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$venv" "$build/CMakeCache.txt"; then
  rm -rf "$build"
fi
mkdir -p "$build"
export PATH="$venv/bin:$PATH"
export CMAKE_PREFIX_PATH="$venv"
export AMENT_PREFIX_PATH="$venv"
cmake -S "$src" -B "$build" \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$venv/bin/python" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DCMAKE_PROJECT_INCLUDE="$root/scripts/cmake/wheel_env_fixups.cmake" \
  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" >"$build.log" 2>&1 || { cat "$build.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >>"$build.log" 2>&1 || { tail -50 "$build.log"; exit 1; }
cmake --install "$build" >>"$build.log" 2>&1 || { tail -50 "$build.log"; exit 1; }
echo "$pkg installed into $venv"
