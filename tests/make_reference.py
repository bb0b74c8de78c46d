#!/usr/bin/env python3
"""Writes the reference data the C++ tests compare against: runs main(out_dir) of every module in
tests/reference/ (HF transformers models and logits, safetensors files, GGUF files, tokenizer ids...).
Each module owns a subfolder of --out; it is independent of uio's code."""
import argparse
import importlib.util
import pathlib
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated module names")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    here = pathlib.Path(__file__).resolve().parent / "reference"
    only = set(filter(None, args.only.split(",")))
    for path in sorted(here.glob("*.py")):
        if path.stem.startswith("_") or (only and path.stem not in only):
            continue
        t0 = time.time()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sub = out / path.stem
        sub.mkdir(parents=True, exist_ok=True)
        mod.main(sub)
        print(f"make_reference: {path.stem} -> {sub} ({time.time() - t0:.1f}s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
