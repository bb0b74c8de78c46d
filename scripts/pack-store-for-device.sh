#!/usr/bin/env bash
# Run HERE before a GPU training call: packs a token store (default out/gpu-store: the whole corpus,
# `uio prepare --inputs corpus --out out/gpu-store --heldout_fraction 0.03`, 41 MB) into the git-ignored
# .xfer-store/ with tokens.bin xz-compressed (about 15 MB), small enough to ride along in a device call.
# scripts/device-train-check.sh unpacks it there into out/gpu-store.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
store=${1:-$root/out/gpu-store}
[ -f "$store/index.bin" ] || { echo "pack-store: no token store at $store"; exit 2; }
rm -rf "$root/.xfer-store" && mkdir -p "$root/.xfer-store"
cp "$store/index.bin" "$root/.xfer-store/"
xz -T0 -6 -c "$store/tokens.bin" > "$root/.xfer-store/tokens.bin.xz"
ls -la "$root/.xfer-store"
