"""Shared pieces of the uio_memory tests: tiny random Llama and Qwen2 models, random compressor weights
and the independent reference of the memory forward (tests/reference/_uio_memory_lib.py, HF
transformers with hooks and a float64 hand-written path), and an export directory written in the format
`uio export` writes (tests/python_package_test.cpp checks the package on exports uio itself wrote)."""
import importlib.util
import json
import pathlib

import pytest
import torch
from safetensors.torch import save_file

REPO = pathlib.Path(__file__).resolve().parents[2]
# Tiny shapes: one intra-op thread is faster than two spinning against ctest's other tests (2.2 s vs 4.2 s).
torch.set_num_threads(1)


def _load_reference():
    path = REPO / "tests" / "reference" / "_uio_memory_lib.py"
    spec = importlib.util.spec_from_file_location("_uio_memory_lib", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

TINY = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def tiny_model(kind: str, seed: int, **overrides):
    """A tiny random model, every parameter drawn fresh (norms and biases too): an untied Llama, or a tied
    Qwen2 with q/k/v biases."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    config = {**TINY, **overrides}
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**config, tie_word_embeddings=False))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**config, tie_word_embeddings=True))
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    ref.randomize(model, torch.Generator().manual_seed(seed))
    return model.eval()


def write_export(directory: pathlib.Path, model, weights: dict, spec, memory_rope="none", memory_rope_factor=1.0):
    """`weights` (the reference's names: encoder.layers.{i}.{proj}.lora_{A,B}, transfer..., memory_embedding)
    as an export: PEFT adapter directories, the <mem> embedding and uio_config.json."""
    c = model.config

    def adapter(name, rank, alpha, projections):
        sub = directory / f"{name}_adapter"
        sub.mkdir(parents=True, exist_ok=True)
        tensors = {f"base_model.model.model.layers.{i}.self_attn.{p}.lora_{ab}.weight":
                   weights[f"{name}.layers.{i}.{p}.lora_{ab}"]
                   for i in range(c.num_hidden_layers) for p in projections for ab in "AB"}
        save_file(tensors, str(sub / "adapter_model.safetensors"), metadata={"format": "pt"})
        (sub / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny", "r": rank,
            "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": list(projections), "bias": "none"}))
        return {"rank": rank, "alpha": alpha, "dropout": 0.0, "targets": list(projections)}

    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format": "uio-export", "version": 1, "segment_len": spec.l, "num_memory_tokens": spec.M,
        "memory_rope": memory_rope, "memory_rope_factor": memory_rope_factor,
        "encoder_lora": adapter("encoder", spec.enc_r, spec.enc_alpha, ("q_proj", "v_proj")),
        "transfer_lora": adapter("transfer", spec.tr_r, spec.tr_alpha, ("k_proj", "v_proj")),
        "base_model": {"path": "tiny", "architecture": c.model_type, "num_layers": c.num_hidden_layers,
                       "hidden_size": c.hidden_size, "vocab_size": c.vocab_size, "num_kv_heads": c.num_key_value_heads,
                       "head_dim": c.head_dim, "fingerprint": ""}}
    save_file({"memory_embedding": weights["memory_embedding"]}, str(directory / "memory_embedding.safetensors"))
    (directory / "uio_config.json").write_text(json.dumps(config, indent=2))
    return directory


def reference_logits(model, weights, spec, ids, rope_factor=None, by_hand=False):
    """The reference's teacher-forced logits [n, V] of a document: each full segment compressed on its own,
    every segment and the residual decoded with the memory of all earlier ones (float64 when by_hand)."""
    l, layers = spec.l, model.config.num_hidden_layers
    T = ids.numel() // l
    encode, transfer, decode = ((ref.encode_by_hand, ref.transfer_by_hand, ref.decode_by_hand) if by_hand else
                                (lambda *a: ref.encode_hf(*a)[0], ref.transfer_hf, ref.decode_hf))
    ks, vs = [], []
    for t in range(T):
        k, v = transfer(model, weights, spec, encode(model, weights, spec, ids[t * l:(t + 1) * l]))
        ks.append(k), vs.append(v)
    out = []
    for t in range(T + (1 if ids.numel() % l else 0)):
        mk = [torch.cat([ks[s][i] for s in range(t)], 1) for i in range(layers)] if t else []
        mv = [torch.cat([vs[s][i] for s in range(t)], 1) for i in range(layers)] if t else []
        out.append(decode(model, ids[t * l:(t + 1) * l], mk, mv, rope_factor))
    return torch.cat(out)


def rel_err(got, want) -> float:
    """Largest absolute difference relative to the largest |want|."""
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


@pytest.fixture
def gen(request):
    """A generator seeded from the test's name: fresh random inputs that reproduce."""
    return torch.Generator().manual_seed(sum(map(ord, request.node.name)) * 7919)
