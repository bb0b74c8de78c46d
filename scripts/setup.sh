#!/usr/bin/env bash
# Installs everything uio needs on a fresh Debian 12 machine; safe to run again (idempotent).
# System packages come from apt; Python packages go into .venv at the repository root.
# The torch wheel is pinned to the CPU build (torch==2.13.0) and a constraints file keeps every
# later pip step from replacing it with a multi-gigabyte CUDA build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

apt_packages=(cmake ninja-build g++ ccache pkg-config clang-format
  libboost-program-options-dev libgtest-dev libgmock-dev libpcre2-dev
  libsentencepiece-dev nlohmann-json3-dev libgloo-dev python3-venv)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
pip=".venv/bin/python -m pip"
cat > .venv/uio-constraints.txt <<'C'
torch==2.13.0
C
want="torch==2.13.0 transformers safetensors gguf peft numpy sentencepiece protobuf matplotlib"
if ! .venv/bin/python -c 'import torch, transformers, safetensors, gguf, peft, numpy, sentencepiece, matplotlib; assert torch.__version__.startswith("2.13.0")' 2>/dev/null; then
  echo "setup: installing Python packages into .venv"
  PIP_CONSTRAINT="$root/.venv/uio-constraints.txt" $pip install -q --disable-pip-version-check torch==2.13.0
  PIP_CONSTRAINT="$root/.venv/uio-constraints.txt" $pip install -q --disable-pip-version-check $want
fi
# The Python package for users of HF transformers (python/, distribution uio-memory) and pytest for its
# tests: reinstalled when its sources change (a stamp of them beside the venv) or it does not import.
stamp=$(cat python/pyproject.toml python/uio_memory/*.py | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/uio-memory.stamp 2>/dev/null)" != "$stamp" ] || ! .venv/bin/python -c 'import uio_memory, pytest' 2>/dev/null; then
  echo "setup: installing python/ (uio-memory) and pytest into .venv"
  rm -rf python/build  # a stale build/lib would ship modules since removed from python/
  PIP_CONSTRAINT="$root/.venv/uio-constraints.txt" $pip install -q --disable-pip-version-check pytest ./python
  echo "$stamp" > .venv/uio-memory.stamp
fi
echo "setup: done ($(.venv/bin/python -c 'import torch;print("torch", torch.__version__)'))"
