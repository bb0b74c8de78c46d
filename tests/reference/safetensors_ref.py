"""Reference safetensors files for tests/safetensors_test.cpp, written by Python's safetensors and
transformers (never by uio), with every tensor's raw bytes beside them so the C++ test compares bit-exactly.

Layout of out_dir:
  basic.safetensors        save_file of random tensors of every supported dtype, odd shapes, a scalar and
                           an empty tensor; metadata {"format": "pt"} (one key, so the bytes are deterministic)
  basic.json               [{name, dtype, shape, raw}] with raw a file name under raw/ holding the bytes
  metadata.safetensors     one tensor and several metadata keys (Python writes them in random order)
  metadata.json            {"metadata": {...}}
  sharded/                 a tiny LlamaForCausalLM saved by transformers' save_pretrained in several shards
  sharded.json             like basic.json, for every tensor in the sharded model
"""
import json
import pathlib

import torch
from safetensors.torch import save_file

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def raw_bytes(t: torch.Tensor) -> bytes:
    # Through uint8 so bf16 (unknown to numpy) keeps its exact bits.
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_manifest(out_dir: pathlib.Path, stem: str, tensors: dict) -> None:
    raw_dir = out_dir / "raw"
    raw_dir.mkdir(exist_ok=True)
    entries = []
    for i, (name, t) in enumerate(sorted(tensors.items())):
        raw = f"{stem}_{i}.bin"
        (raw_dir / raw).write_bytes(raw_bytes(t))
        entries.append({"name": name, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "raw": raw})
    (out_dir / f"{stem}.json").write_text(json.dumps(entries, indent=1))


def basic_tensors(g: torch.Generator) -> dict:
    return {
        "model.layers.0.weight": torch.randn(3, 5, 7, generator=g),
        "half": torch.randn(13, generator=g).half(),
        "brain": (torch.randn(2, 3, 1, 5, generator=g) * 100).bfloat16(),
        "ids": torch.randint(-2**62, 2**62, (4, 3), generator=g, dtype=torch.int64),
        "scalar": torch.randn((), generator=g),
        "empty": torch.empty(0, 4),
        "double": torch.randn(3, 2, generator=g, dtype=torch.float64),
        "i32": torch.randint(-2**31, 2**31 - 1, (7,), generator=g, dtype=torch.int32),
        "i16": torch.randint(-2**15, 2**15 - 1, (3, 3), generator=g, dtype=torch.int16),
        "i8": torch.randint(-128, 127, (5,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (9,), generator=g, dtype=torch.uint8),
        "mask": torch.randint(0, 2, (2, 5), generator=g).bool(),
        "a.odd": torch.randn(1, 11, generator=g).half(),
    }


def write_sharded(out_dir: pathlib.Path, g: torch.Generator) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():  # RMSNorm weights start as ones; every tensor should be random
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    model.save_pretrained(out_dir / "sharded", max_shard_size="12KB", safe_serialization=True)
    write_manifest(out_dir, "sharded", dict(model.state_dict()))


def main(out_dir: pathlib.Path) -> None:
    g = torch.Generator().manual_seed(20240611)
    tensors = basic_tensors(g)
    save_file(tensors, str(out_dir / "basic.safetensors"), metadata={"format": "pt"})
    write_manifest(out_dir, "basic", tensors)

    metadata = {"format": "pt", "source": "safetensors_ref.py", "unicode": "héllo ✓", "empty": ""}
    save_file({"w": torch.randn(4, 4, generator=g)}, str(out_dir / "metadata.safetensors"), metadata=metadata)
    (out_dir / "metadata.json").write_text(json.dumps({"metadata": metadata}))

    write_sharded(out_dir, g)


if __name__ == "__main__":
    import sys

    main(pathlib.Path(sys.argv[1]))
