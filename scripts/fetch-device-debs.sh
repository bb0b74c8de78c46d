#!/usr/bin/env bash
# Run HERE (Debian 12), before a GPU call: downloads the Debian packages the GPU machine lacks
# (Boost.Program_options, PCRE2 headers) into .debs/ (git-ignored; carried to the device call).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/.debs" && cd "$root/.debs"
pkgs=(libboost-program-options1.74.0 libboost-program-options1.74-dev libboost1.74-dev libpcre2-dev libpcre2-8-0)
for p in "${pkgs[@]}"; do
  ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" 2>/dev/null || { apt-get update -qq && apt-get download "$p"; }
done
ls -la "$root/.debs"
