"""Tiny random Hugging Face models (Llama with GQA + llama3 RoPE, untied Llama + linear, Llama + YaRN,
Llama + dynamic NTK, Mistral with a binding sliding window, Llama with attention_bias (q/k/v/o biases),
Qwen2 with q/k/v bias), saved with
save_pretrained, and their float32 logits on random token ids, for the C++ parity tests.
Every parameter is drawn fresh (norm weights and biases too), each model from its own seed."""
import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

COMMON = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

MODELS = {
    # name: (config class, model class, extra config, seed, sequence length, save kwargs)
    "llama_gqa_llama3": (LlamaConfig, LlamaForCausalLM, dict(
        tie_word_embeddings=True, max_position_embeddings=64,
        rope_parameters={"rope_type": "llama3", "rope_theta": 50000.0, "factor": 4.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16}), 101, 40, {}),
    "llama_untied_linear": (LlamaConfig, LlamaForCausalLM, dict(
        tie_word_embeddings=False, num_key_value_heads=4, max_position_embeddings=64,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5}), 202, 40,
        dict(max_shard_size="60KB")),  # sharded: exercises model.safetensors.index.json
    "llama_yarn": (LlamaConfig, LlamaForCausalLM, dict(
        tie_word_embeddings=False, max_position_embeddings=128,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 32}), 303, 40, {}),
    "llama_dynamic": (LlamaConfig, LlamaForCausalLM, dict(
        tie_word_embeddings=True, max_position_embeddings=24,
        rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}), 404, 40, {}),
    "mistral_window": (MistralConfig, MistralForCausalLM, dict(
        tie_word_embeddings=False, max_position_embeddings=128, sliding_window=12, head_dim=16,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), 505, 40, {}),
    # attention_bias: Llama gives q/k/v and o_proj a bias (Qwen2, below, q/k/v only).
    "llama_attention_bias": (LlamaConfig, LlamaForCausalLM, dict(
        tie_word_embeddings=False, max_position_embeddings=64, attention_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), 707, 40, {}),
    "qwen2_bias": (Qwen2Config, Qwen2ForCausalLM, dict(
        tie_word_embeddings=True, max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), 606, 40, {}),
}


def randomize(model: torch.nn.Module, gen: torch.Generator):
    """Fresh random values everywhere: never the init's ones (norms) or zeros (biases)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def main(out: pathlib.Path):
    for name, (config_cls, model_cls, extra, seed, seq_len, save_kwargs) in MODELS.items():
        gen = torch.Generator().manual_seed(seed)
        config = config_cls(**{**COMMON, **extra})
        model = model_cls(config).eval()
        randomize(model, gen)
        model_dir = out / name
        model.save_pretrained(model_dir, **save_kwargs)
        ids = torch.randint(0, config.vocab_size, (2, seq_len), generator=gen)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits.float()
        save_file({"ids": ids.contiguous(), "logits": logits.contiguous()}, str(model_dir / "reference.safetensors"))
        (model_dir / "reference.json").write_text(json.dumps({"seed": seed, "seq_len": seq_len}))
