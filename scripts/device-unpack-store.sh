#!/usr/bin/env bash
# Run ON THE GPU MACHINE: unpacks the token store that scripts/pack-store-for-device.sh packed into
# .xfer-store/ (carried in a call) into STORE (default out/gpu-store). Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
store=${STORE:-out/gpu-store}
if [ ! -f "$store/index.bin" ] && [ -f .xfer-store/tokens.bin.xz ]; then
  mkdir -p "$store" && cp .xfer-store/index.bin "$store/"
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"), 1 << 22)' \
    .xfer-store/tokens.bin.xz "$store/tokens.bin"
fi
[ -f "$store/index.bin" ] || { echo "device-unpack-store: no token store at $store; copy .xfer-store over (docs/gpu.md)"; exit 2; }
