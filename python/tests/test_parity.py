"""Teacher-forced logits of the package equal the independent reference's (tests/reference/
_uio_memory_lib.py) on tiny random Llama and Qwen2 models, with plain and linear memory RoPE; the
other memory RoPE kinds give transformers' own frequencies; bf16 follows the model's dtype."""
import pytest
import torch

from conftest import ref, reference_logits, rel_err, tiny_model, write_export
from uio_memory import UioMemoryModel
from uio_memory.rope import MemoryRope

FP32_TOL = 1e-5  # relative to the largest |logit|; the reference runs the same transformers modules in fp32


@pytest.mark.parametrize("kind, memory_rope, l, M, T, residual", [
    ("llama", "none", 16, 4, 4, 5),
    ("llama", "linear", 16, 8, 3, 9),
    ("qwen2", "none", 16, 4, 3, 11),
])
def test_segment_logits_equal_the_reference(tmp_path, gen, kind, memory_rope, l, M, T, residual):
    model = tiny_model(kind, int(torch.randint(1 << 30, (1,), generator=gen)))
    spec = ref.Spec(l=l, M=M)
    weights = ref.make_uio_weights(model, spec, gen)
    factor = 4.0 if memory_rope == "linear" else 1.0
    uio = UioMemoryModel.from_export(model, write_export(tmp_path, model, weights, spec, memory_rope, factor))
    ids = torch.randint(model.config.vocab_size, (T * l + residual,), generator=gen)

    got = uio.segment_logits(ids)
    want = reference_logits(model, weights, spec, ids, factor if memory_rope == "linear" else None)
    assert got.shape == (ids.numel(), model.config.vocab_size)
    assert rel_err(got, want) <= FP32_TOL
    # The memory really changes what later segments see (else parity would prove little).
    with torch.no_grad():
        alone = model(input_ids=ids[l:2 * l][None]).logits[0]
    assert rel_err(got[l:2 * l], alone) > 1e-2


def test_segment_logits_equal_the_float64_forward_by_hand(tmp_path, gen):
    model = tiny_model("llama", 4242)
    spec = ref.Spec(l=16, M=4)
    weights = ref.make_uio_weights(model, spec, gen)
    uio = UioMemoryModel.from_export(model, write_export(tmp_path, model, weights, spec))
    ids = torch.randint(model.config.vocab_size, (3 * 16 + 7,), generator=gen)
    assert rel_err(uio.segment_logits(ids), reference_logits(model, weights, spec, ids, by_hand=True)) <= 1e-4


def test_perplexity_is_the_exponent_of_the_mean_next_token_loss(tmp_path, gen):
    model = tiny_model("qwen2", 77)
    spec = ref.Spec(l=16, M=4)
    weights = ref.make_uio_weights(model, spec, gen)
    uio = UioMemoryModel.from_export(model, write_export(tmp_path, model, weights, spec))
    ids = torch.randint(model.config.vocab_size, (2 * 16 + 3,), generator=gen)
    logp = reference_logits(model, weights, spec, ids).double().log_softmax(-1)
    want = torch.exp(-logp[:-1].gather(1, ids[1:, None]).mean())
    assert uio.perplexity(ids) == pytest.approx(float(want), rel=1e-5)


def _hf_inv_freq(rope_parameters, seq_len=None, **config):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    cfg = LlamaConfig(**{**config, "rope_parameters": rope_parameters})
    kind = rope_parameters["rope_type"]
    fn = LlamaRotaryEmbedding.compute_default_rope_parameters if kind == "default" else ROPE_INIT_FUNCTIONS[kind]
    return fn(cfg, seq_len=seq_len) if seq_len else fn(cfg)


@pytest.mark.parametrize("factor", [2.0, 5.5])
def test_memory_rope_frequencies_are_transformers_own(factor):
    """linear, dynamic (at the segment's span, in and past the window) and yarn as transformers computes
    them; ntk (uio's fixed NTK-aware kind) is the plain RoPE of base theta * factor^(D / (D - 2))."""
    from transformers import LlamaConfig
    shape = dict(hidden_size=64, num_attention_heads=4, head_dim=16, max_position_embeddings=40)
    theta = 10000.0
    model_config = LlamaConfig(**shape, rope_parameters={"rope_type": "default", "rope_theta": theta})

    def ours(kind):
        return MemoryRope(kind, factor, model_config, None, "uio_config.json")

    want, _ = _hf_inv_freq({"rope_type": "linear", "rope_theta": theta, "factor": factor}, **shape)
    assert torch.equal(ours("linear").inv_freq(10), want)
    for span in (24, 40, 41, 97):
        want, _ = _hf_inv_freq({"rope_type": "dynamic", "rope_theta": theta, "factor": factor}, seq_len=span, **shape)
        assert torch.allclose(ours("dynamic").inv_freq(span), want, rtol=1e-6, atol=0), span
    yarn = ours("yarn")
    want, scaling = _hf_inv_freq({"rope_type": "yarn", "rope_theta": theta, "factor": factor,
                                  "original_max_position_embeddings": 40}, **shape)
    assert torch.allclose(yarn.inv_freq(50), want, rtol=1e-6, atol=0)
    assert yarn.attention_scaling == pytest.approx(scaling)
    want, _ = _hf_inv_freq({"rope_type": "default", "rope_theta": theta * factor ** (16 / 14)}, **shape)
    assert torch.allclose(ours("ntk").inv_freq(10), want, rtol=1e-6, atol=0)
    # And the kinds differ from plain RoPE, so a kind silently ignored would fail above.
    plain, _ = _hf_inv_freq({"rope_type": "default", "rope_theta": theta}, **shape)
    for kind in ("linear", "ntk", "yarn"):
        assert not torch.allclose(ours(kind).inv_freq(97), plain)
    assert not torch.allclose(ours("dynamic").inv_freq(97), plain)


def test_bf16_model_gives_bf16_logits_close_to_fp32(tmp_path, gen):
    model = tiny_model("llama", 31337)
    spec = ref.Spec(l=16, M=4)
    weights = ref.make_uio_weights(model, spec, gen)
    export = write_export(tmp_path, model, weights, spec, "dynamic", 2.0)
    ids = torch.randint(model.config.vocab_size, (3 * 16 + 6,), generator=gen)
    fp32 = UioMemoryModel.from_export(model, export).segment_logits(ids)
    bf16 = UioMemoryModel.from_export(model.to(torch.bfloat16), export).segment_logits(ids)
    assert bf16.dtype == torch.bfloat16
    assert rel_err(bf16, fp32) < 5e-2
