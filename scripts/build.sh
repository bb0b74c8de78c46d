#!/usr/bin/env bash
# Configures and builds uio (the library, `uio` and the tests) into build/ with Ninja.
# Extra arguments go to CMake's configure step (e.g. -DUIO_ASAN=ON). BUILD_DIR overrides build/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
if [ ! -f "$build/build.ninja" ] || [ $# -gt 0 ]; then
  cmake -S "$root" -B "$build" -G Ninja "$@"
fi
cmake --build "$build" -j "${JOBS:-$(nproc)}"
