#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds and runs the whole test suite through ctest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export UIO_PYTHON="${UIO_PYTHON:-$root/.venv/bin/python}"  # for the helper scripts uio runs (plots, comparisons)
bash "$root/scripts/setup.sh"
bash "$root/scripts/get-model.sh" >/dev/null  # SmolLM2-135M (GGUF) for the real-model parity tests
bash "$root/scripts/build.sh"
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${JOBS:-$(nproc)}" "$@"
