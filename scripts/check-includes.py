#!/usr/bin/env python3
"""Checks that every #include "..." in the source folders points down the layer order
data/format <- data <- model <- optim <- trainer <- tools (a folder may include itself and any folder
below it; tests may include anything). Prints each violation as file:line and exits 1 when there is one.
The build enforces the same order (each library compiles against only the folders below it); this check
names the offending line directly. Usage: check-includes.py [REPO_ROOT]"""
import pathlib
import re
import sys

ORDER = ["data/format", "data", "model", "optim", "trainer", "tools"]


def layer_of(rel: str) -> int:
    # data/format/x.h belongs to data/format, data/x.h to data (longest matching prefix wins).
    best = None
    for i, folder in enumerate(ORDER):
        if rel == folder or rel.startswith(folder + "/"):
            if best is None or len(folder) > len(ORDER[best]):
                best = i
    return -1 if best is None else best


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[1])
    include = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
    bad = []
    checked = 0
    for folder in ORDER:
        for path in sorted((root / folder).glob("*.[hc]*")):
            rel = path.relative_to(root).as_posix()
            own = layer_of(rel)
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = include.match(line)
                if not m:
                    continue
                checked += 1
                target = layer_of(m.group(1))
                if target < 0:
                    bad.append(f"{rel}:{number}: includes \"{m.group(1)}\", which is in no source folder")
                elif target > own:
                    bad.append(f"{rel}:{number}: {ORDER[own]}/ includes \"{m.group(1)}\" from {ORDER[target]}/, "
                               f"which is above it (order: {' <- '.join(ORDER)})")
    for line in bad:
        print(line)
    print(f"check-includes: {checked} includes checked, {len(bad)} against the layer order")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
