#!/usr/bin/env bash
# Run HERE (Debian 12), before a GPU call: downloads what the GPU machine lacks into git-ignored
# folders carried to the device call: Debian packages (Boost.Program_options, PCRE2 headers) into
# .debs/, and Python wheels the test references need (gguf) into .whl/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/.debs" && cd "$root/.debs"
pkgs=(libboost-program-options1.74.0 libboost-program-options1.74-dev libboost1.74-dev libpcre2-dev libpcre2-8-0)
for p in "${pkgs[@]}"; do
  ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" 2>/dev/null || { apt-get update -qq && apt-get download "$p"; }
done
mkdir -p "$root/.whl"
ls "$root"/.whl/gguf-0.19.0-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d "$root/.whl" gguf==0.19.0
ls -la "$root/.debs" "$root/.whl"
