"""Runs the uio_memory package on exports that `uio export` wrote, for tests/python_package_test.cpp,
which compares the results with uio's own C++ path. For every base model of the job file (an HF
directory, or a .gguf file through transformers' GGUF loader; float32) and every case under it, loads
the export and writes to OUT: {name}.logits [n, V] (segment_logits of the case's document), {name}.greedy
(generate, greedy) and, when the case asks, {name}.sampled (generate with its temperature, top_k, top_p,
seed). A check at test time, not a reference generator (tests/reference/ holds those).

usage: cpp_check.py JOB.json OUT.safetensors
JOB.json: [{"model": PATH, "cases": [{"name", "export", "document": [ids], "prompt": [ids],
            "max_new_tokens": N, "sampled": {"temperature", "top_k", "top_p", "seed"} (optional)}]}, ...]"""
import functools
import json
import pathlib
import sys
import time

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from uio_memory import UioMemoryModel


def load_base(path: str):
    p = pathlib.Path(path)
    if p.suffix != ".gguf":
        return AutoModelForCausalLM.from_pretrained(str(p), dtype=torch.float32).eval()
    import gguf
    # transformers' GGUF loader rebuilds the same read-only name map once per submodule (~400 times for
    # SmolLM2) and parses the file twice (config, then weights): seconds each; memoize both for the load.
    originals = gguf.get_tensor_name_map, gguf.GGUFReader
    gguf.get_tensor_name_map, gguf.GGUFReader = (functools.lru_cache(maxsize=None)(f) for f in originals)
    try:
        return AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32).eval()
    finally:
        gguf.get_tensor_name_map, gguf.GGUFReader = originals


def main(job_file: str, out_file: str):
    # Small shapes, one token at a time: one thread is as fast, and two spin against each other on a busy
    # 2-core test machine (measured on SmolLM2 there: 3.5 s with one, 34 s with two).
    torch.set_num_threads(1)
    out = {}
    for entry in json.loads(pathlib.Path(job_file).read_text()):
        start = time.perf_counter()
        base = load_base(entry["model"])
        print(f"cpp_check: {entry['model']} loaded in {time.perf_counter() - start:.1f} s", flush=True)
        for case in entry["cases"]:
            start = time.perf_counter()
            model = UioMemoryModel.from_export(base, case["export"])
            name = case["name"]
            out[f"{name}.logits"] = model.segment_logits(case["document"]).float().contiguous()
            out[f"{name}.greedy"] = model.generate(case["prompt"], case["max_new_tokens"])
            if "sampled" in case:
                out[f"{name}.sampled"] = model.generate(case["prompt"], case["max_new_tokens"], **case["sampled"])
            print(f"cpp_check: {name} in {time.perf_counter() - start:.1f} s", flush=True)
    save_file(out, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:3])
