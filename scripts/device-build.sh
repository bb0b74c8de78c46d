#!/usr/bin/env bash
# Run ON THE GPU MACHINE (docs/gpu.md): unpacks the carried Debian packages (.debs/) into a private
# prefix, builds uio against the machine's CUDA libtorch (torch 2.11 + CUDA 13 at /opt/torch/.venv)
# and runs the whole test suite there; CUDA variants of the tests run because a GPU is present.
# Extra arguments go to ctest (e.g. -R Llama); UIO_SKIP_TESTS=1 builds only; UIO_TARGETS=uio builds only those targets. Logs go to $OUT when set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${UIO_PYTHON:-/opt/torch/.venv/bin/python3}
prefix=${UIO_DEPS_PREFIX:-/tmp/uio-deps}
build=${BUILD_DIR:-$root/build-gpu}
out=${OUT:-/tmp}
ls .debs/*.deb >/dev/null 2>&1 || { echo "device-build: no .debs/ here; run scripts/fetch-device-deps.sh on the dev machine and copy .debs"; exit 2; }
if ls .whl/*.whl >/dev/null 2>&1; then  # Python packages the machine lacks (gguf), for tests/reference/
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/uio-site .whl/*.whl
  export PYTHONPATH=/tmp/uio-site${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p "$prefix"
for f in .debs/*.deb; do dpkg -x "$f" "$prefix"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
cmake -S . -B "$build" -G Ninja -DUIO_PYTHON="$python" -DUIO_DEPS_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release \
  2>&1 | tee "$out/configure.log" | grep -E "^-- uio|Error|error" || true
# shellcheck disable=SC2086
cmake --build "$build" -j "$(nproc)" ${UIO_TARGETS:+--target $UIO_TARGETS} 2>&1 | tee "$out/build.log" | tail -5
[ "${UIO_SKIP_TESTS:-0}" = 1 ] && exit 0
cd "$build"
ctest --output-on-failure -j 4 --output-junit "$out/ctest.xml" "$@" 2>&1 | tee "$out/ctest.log" | tail -40
