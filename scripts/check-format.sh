#!/usr/bin/env bash
# Fails (naming the files) when a C++ source under the source folders differs from what clang-format
# makes of it with the repository's .clang-format. Run `clang-format -i FILE` to fix one.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check-format: clang-format is not installed (scripts/setup.sh installs it)"; exit 1; }
mapfile -t files < <(git ls-files -- 'data/*.h' 'data/*.cpp' 'model/*.h' 'model/*.cpp' 'optim/*.h' 'optim/*.cpp' \
  'trainer/*.h' 'trainer/*.cpp' 'tools/*.h' 'tools/*.cpp' 'tests/*.h' 'tests/*.cpp')
clang-format --dry-run -Werror "${files[@]}"
echo "check-format: ${#files[@]} files follow .clang-format"
