"""Helpers for uio_memory.py: the UIO memory forward pass (encoder with <mem> tokens and LoRA on Q/V,
transfer head with LoRA on K/V, decoder with the memory KV prepended) written twice, so that each
checks the other:
  * on Hugging Face transformers (explicit 4-D masks, position_ids, forward hooks, DynamicCache);
  * "by hand": a from-scratch float64 Llama forward (RMSNorm, RoPE, GQA attention with a mask built
    by loops over (query, key) straight from the rule's wording, SwiGLU).
Not run as a reference module itself (its name starts with "_")."""
import contextlib
import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


@dataclasses.dataclass
class Spec:
    l: int  # segment length
    M: int  # memory tokens per segment
    enc_r: int = 4  # encoder LoRA rank and alpha (q_proj, v_proj)
    enc_alpha: float = 8.0
    tr_r: int = 3  # transfer head LoRA rank and alpha (k_proj, v_proj)
    tr_alpha: float = 5.0

    def __post_init__(self):
        assert self.l % self.M == 0, f"l={self.l} must be a multiple of M={self.M}"

    def mem_position(self, i: int) -> int:
        """RoPE position of memory token i in the encoder, and the number of ordinary tokens it sees."""
        return (i + 1) * self.l // self.M


# ---------------------------------------------------------------------------------------------------
# Shapes of the base model
def dims(config):
    C = config.hidden_size
    H = config.num_attention_heads
    G = config.num_key_value_heads
    D = getattr(config, "head_dim", None) or C // H
    return C, H, G, D


def randomize(model: torch.nn.Module, gen: torch.Generator):
    """Fresh random values in every parameter: norm weights around 1, biases and matrices around 0."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def make_uio_weights(model, spec: Spec, gen: torch.Generator) -> dict:
    """Random trainable weights, LoRA B random too so that every adapter changes the result. A ~ N(0, 0.3/sqrt(in));
    B is scaled to the base projection W it adapts so that (alpha/r) B A x is about 15% of W x whatever the
    model (B ~ N(0, 0.3/sqrt(r)) on the tiny models, larger on SmolLM2's bigger weights). <mem> ~ N(0, std of
    the token embeddings)."""
    C, H, G, D = dims(model.config)
    w = {}
    for i, layer in enumerate(model.model.layers):
        for head, r, alpha, projs in (("encoder", spec.enc_r, spec.enc_alpha, ("q_proj", "v_proj")),
                                      ("transfer", spec.tr_r, spec.tr_alpha, ("k_proj", "v_proj"))):
            for proj in projs:
                W = getattr(layer.self_attn, proj).weight.detach()  # [out, in]
                b_std = 0.5 * float(W.std()) * math.sqrt(C) / ((alpha / r) * math.sqrt(r))
                w[f"{head}.layers.{i}.{proj}.lora_A"] = torch.randn(r, C, generator=gen) * (0.3 / math.sqrt(C))
                w[f"{head}.layers.{i}.{proj}.lora_B"] = torch.randn(W.shape[0], r, generator=gen) * b_std
    emb_std = float(model.get_input_embeddings().weight.detach().std())
    w["memory_embedding"] = torch.randn(C, generator=gen) * emb_std
    return {k: v.float().contiguous() for k, v in w.items()}


# ---------------------------------------------------------------------------------------------------
# Hugging Face path
class LoraLinear(torch.nn.Module):
    """y = base(x) (weight and bias) + (alpha / r) * B (A x)."""

    def __init__(self, base: torch.nn.Linear, A: torch.Tensor, B: torch.Tensor, scale: float):
        super().__init__()
        self.base, self.A, self.B, self.scale = base, A, B, scale

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.A), self.B)


@contextlib.contextmanager
def encoder_lora(model, weights: dict, spec: Spec):
    """Puts the encoder's LoRA on q_proj and v_proj of every layer for the duration of the block."""
    saved = []
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        for proj in ("q_proj", "v_proj"):
            base = getattr(attn, proj)
            A, B = weights[f"encoder.layers.{i}.{proj}.lora_A"], weights[f"encoder.layers.{i}.{proj}.lora_B"]
            setattr(attn, proj, LoraLinear(base, A, B, spec.enc_alpha / spec.enc_r))
            saved.append((attn, proj, base))
    try:
        yield
    finally:
        for attn, proj, base in saved:
            setattr(attn, proj, base)


def additive(allowed: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Boolean [q, k] (True = may attend) -> the 4-D additive float mask [1, 1, q, k] that transformers'
    eager attention adds to the scores (a 4-D mask is passed through create_causal_mask untouched)."""
    out = torch.zeros(allowed.shape, dtype=dtype)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[None, None]


def encoder_allowed(spec: Spec, with_memory: bool = True) -> torch.Tensor:
    """[l + M, l + M] boolean: ordinary tokens causal among themselves, never see memory; memory token i
    sees ordinary tokens j < (i+1)*l/M and itself only."""
    l, M = spec.l, spec.M
    L = l + M if with_memory else l
    q = torch.arange(L)[:, None]
    k = torch.arange(L)[None, :]
    q_mem, k_mem = q >= l, k >= l
    ordinary = ~q_mem & ~k_mem & (k <= q)
    mem_limit = (q - l + 1) * (l // M)  # (i+1)*l/M for query memory token i
    mem_to_ord = q_mem & ~k_mem & (k < mem_limit)
    mem_to_self = q_mem & k_mem & (k == q)
    return ordinary | mem_to_ord | mem_to_self


def encoder_positions(spec: Spec, with_memory: bool = True) -> torch.Tensor:
    ordinary = list(range(spec.l))
    memory = [spec.mem_position(i) for i in range(spec.M)] if with_memory else []
    return torch.tensor([ordinary + memory])


def _run_encoder(model, weights, spec, embeds, mask, position_ids):
    """Encoder forward (LoRA on) on embeds [1, L, C]; returns (input_layernorm outputs, layer outputs) per
    layer, each [L, C], captured with forward hooks."""
    normed, outs, hooks = {}, {}, []
    for i, layer in enumerate(model.model.layers):
        hooks.append(layer.input_layernorm.register_forward_hook(
            lambda mod, inp, out, i=i: normed.__setitem__(i, out[0].detach().clone())))
        hooks.append(layer.register_forward_hook(
            lambda mod, inp, out, i=i: outs.__setitem__(i, (out[0] if isinstance(out, tuple) else out)[0].detach().clone())))
    try:
        with encoder_lora(model, weights, spec), torch.no_grad():
            model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    n_layers = model.config.num_hidden_layers
    return [normed[i] for i in range(n_layers)], [outs[i] for i in range(n_layers)]


def _memory_embeds(weights, count, dtype):
    return weights["memory_embedding"].to(dtype)[None, None].expand(1, count, -1)


def encode_hf(model, weights: dict, spec: Spec, ids: torch.Tensor, with_memory: bool = True):
    """Encoder of one segment (ids [l]) with the encoder LoRA. Returns (h_mem, outs): h_mem[layer] = the
    input_layernorm output at the M memory positions [M, C]; outs[layer] = the layer's output [L, C]."""
    embeds = model.get_input_embeddings()(ids[None])  # [1, l, C]
    if with_memory:
        embeds = torch.cat([embeds, _memory_embeds(weights, spec.M, embeds.dtype)], dim=1)  # [1, l + M, C]
    mask = additive(encoder_allowed(spec, with_memory), embeds.dtype)
    normed, outs = _run_encoder(model, weights, spec, embeds, mask, encoder_positions(spec, with_memory))
    return ([n[spec.l:] for n in normed] if with_memory else None), outs


def encode_one_memory_causal(model, weights: dict, spec: Spec, ids: torch.Tensor, i: int):
    """Memory token i alone, without a custom mask: the first (i+1)*l/M tokens then one <mem>, under
    transformers' own causal mask and default positions (so <mem> sits at (i+1)*l/M). Its h_mem [layers][C]
    must equal encode_hf's h_mem[layer][i]: an independent check of the mask and the positions."""
    embeds = model.get_input_embeddings()(ids[None, :spec.mem_position(i)])
    embeds = torch.cat([embeds, _memory_embeds(weights, 1, embeds.dtype)], dim=1)
    normed, _ = _run_encoder(model, weights, spec, embeds, None, None)
    return [n[-1] for n in normed]


def transfer_hf(model, weights: dict, spec: Spec, h_mem: list):
    """K_mem, V_mem per layer, [G, M, D] each: the base k_proj / v_proj (bias included) plus the transfer
    LoRA, output features split into G heads of D (head g = features g*D .. g*D+D-1), un-rotated."""
    C, H, G, D = dims(model.config)
    ks, vs = [], []
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            res = []
            for proj in ("k_proj", "v_proj"):
                lin = LoraLinear(getattr(layer.self_attn, proj), weights[f"transfer.layers.{i}.{proj}.lora_A"],
                                 weights[f"transfer.layers.{i}.{proj}.lora_B"], spec.tr_alpha / spec.tr_r)
                y = lin(h_mem[i])  # [M, G*D]
                res.append(y.view(-1, G, D).transpose(0, 1).contiguous())  # [G, M, D]
            ks.append(res[0])
            vs.append(res[1])
    return ks, vs


def linear_rope_config(config, factor: float):
    """The same config with linear RoPE scaling (positions divided by factor) for the decoder."""
    cfg = copy.deepcopy(config)
    cfg.rope_parameters = {"rope_type": "linear", "rope_theta": config.rope_parameters["rope_theta"],
                           "factor": float(factor)}
    return cfg


@contextlib.contextmanager
def decoder_rope(model, rope_factor: float | None):
    """Swaps in the model's own rotary embedding class built with linear scaling (None: leave as is)."""
    if rope_factor is None:
        yield model.model.rotary_emb
        return
    original = model.model.rotary_emb
    model.model.rotary_emb = type(original)(linear_rope_config(model.config, rope_factor))
    try:
        yield model.model.rotary_emb
    finally:
        model.model.rotary_emb = original


def decoder_allowed(n_mem: int, length: int) -> torch.Tensor:
    """[length, n_mem + length]: every token sees all memory entries, causal among the segment's tokens."""
    q = torch.arange(length)[:, None]
    k = torch.arange(n_mem + length)[None, :]
    return (k < n_mem) | (k - n_mem <= q)


def decode_hf(model, ids: torch.Tensor, ks: list, vs: list, rope_factor: float | None = None):
    """Decoder (base weights, no LoRA) on ids [len] with memory: ks[layer], vs[layer] [G, P, D] un-rotated
    (P = t*M, possibly 0). Memory keys are rotated at positions 0..P-1 and put in a DynamicCache; the
    tokens take positions P..P+len-1. Returns logits [len, V]."""
    from transformers import DynamicCache
    P = ks[0].shape[1] if ks else 0
    n = ids.shape[0]
    with decoder_rope(model, rope_factor) as rotary, torch.no_grad():
        cache = DynamicCache(config=model.config)
        if P > 0:
            cos, sin = rotary(ks[0], torch.arange(P)[None])  # [1, P, D]
            for i, (k, v) in enumerate(zip(ks, vs)):
                k_rot, _ = apply_rotary_pos_emb(k[None], k[None], cos, sin)  # [1, G, P, D]
                cache.update(k_rot, v[None].clone(), i)
            assert cache.get_seq_length() == P
        mask = additive(decoder_allowed(P, n))
        out = model(input_ids=ids[None], attention_mask=mask, position_ids=torch.arange(P, P + n)[None],
                    past_key_values=cache, use_cache=True)  # (5.24 also calls it `cache`)
    return out.logits[0].float()


# ---------------------------------------------------------------------------------------------------
# By hand (float64), for cross-checks only
def _rope_inv_freq(config, D: int, factor: float | None):
    theta = config.rope_parameters["rope_theta"]
    assert config.rope_parameters.get("rope_type", "default") == "default", "hand path handles plain RoPE only"
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    return inv / factor if factor else inv


def _rotate(x, pos, inv_freq):
    """x [heads, L, D] rotated at positions pos [L] (pairs (d, d + D/2), as Llama's rotate_half)."""
    ang = pos.double()[:, None] * inv_freq[None]  # [L, D/2]
    cos, sin = torch.cos(ang), torch.sin(ang)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _lin(mod, x, lora=None):
    y = x @ mod.weight.double().T
    if mod.bias is not None:
        y = y + mod.bias.double()
    if lora is not None:
        A, B, scale = lora
        y = y + scale * (x @ A.double().T) @ B.double().T
    return y


def _rms(mod, x):
    return mod.weight.double() * x / torch.sqrt((x * x).mean(-1, keepdim=True) + mod.variance_epsilon)


@torch.no_grad()
def forward_by_hand(model, x, pos, allowed, lora=None, prefix=None, rope_factor=None):
    """x [L, C] input embeddings, pos [L] positions, allowed [L, P + L] boolean (P prefix entries first),
    lora: {(layer, proj): (A, B, scale)}, prefix: list per layer of (k_rot [G, P, D], v [G, P, D]).
    Returns (normed inputs per layer [L, C], logits [L, V]) in float64."""
    C, H, G, D = dims(model.config)
    inv = _rope_inv_freq(model.config, D, rope_factor)
    lora = lora or {}
    h = x.double()
    normed = []
    for i, layer in enumerate(model.model.layers):
        a = layer.self_attn
        n = _rms(layer.input_layernorm, h)
        normed.append(n)
        q = _lin(a.q_proj, n, lora.get((i, "q_proj"))).view(-1, H, D).transpose(0, 1)
        k = _lin(a.k_proj, n, lora.get((i, "k_proj"))).view(-1, G, D).transpose(0, 1)
        v = _lin(a.v_proj, n, lora.get((i, "v_proj"))).view(-1, G, D).transpose(0, 1)
        q, k = _rotate(q, pos, inv), _rotate(k, pos, inv)
        if prefix is not None:
            k = torch.cat([prefix[i][0].double(), k], dim=1)
            v = torch.cat([prefix[i][1].double(), v], dim=1)
        rep = H // G  # query head j uses KV head j // rep
        k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
        s = (q @ k.transpose(1, 2)) / math.sqrt(D)
        s = s.masked_fill(~allowed[None], float("-inf"))
        o = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(-1, H * D)
        h = h + _lin(a.o_proj, o)
        m = layer.mlp
        n2 = _rms(layer.post_attention_layernorm, h)
        h = h + _lin(m.down_proj, F.silu(_lin(m.gate_proj, n2)) * _lin(m.up_proj, n2))
    logits = _lin(model.lm_head, _rms(model.model.norm, h))
    return normed, logits


def encoder_allowed_by_loops(l: int, M: int) -> torch.Tensor:
    allowed = torch.zeros(l + M, l + M, dtype=torch.bool)
    for q in range(l + M):
        for k in range(l + M):
            if q < l:
                allowed[q, k] = k < l and k <= q
            else:
                i = q - l
                allowed[q, k] = (k < l and k < (i + 1) * l // M) or k == q
    return allowed


@torch.no_grad()
def encode_by_hand(model, weights, spec: Spec, ids):
    emb = model.get_input_embeddings().weight.double()[ids]
    x = torch.cat([emb, weights["memory_embedding"].double()[None].expand(spec.M, -1)])
    pos = torch.tensor(list(range(spec.l)) + [(i + 1) * spec.l // spec.M for i in range(spec.M)])
    lora = {(i, p): (weights[f"encoder.layers.{i}.{p}.lora_A"], weights[f"encoder.layers.{i}.{p}.lora_B"],
                     spec.enc_alpha / spec.enc_r)
            for i in range(model.config.num_hidden_layers) for p in ("q_proj", "v_proj")}
    normed, _ = forward_by_hand(model, x, pos, encoder_allowed_by_loops(spec.l, spec.M), lora=lora)
    return [n[spec.l:] for n in normed]


@torch.no_grad()
def transfer_by_hand(model, weights, spec: Spec, h_mem):
    C, H, G, D = dims(model.config)
    ks, vs = [], []
    for i, layer in enumerate(model.model.layers):
        out = []
        for p in ("k_proj", "v_proj"):
            lora = (weights[f"transfer.layers.{i}.{p}.lora_A"], weights[f"transfer.layers.{i}.{p}.lora_B"],
                    spec.tr_alpha / spec.tr_r)
            y = _lin(getattr(layer.self_attn, p), h_mem[i].double(), lora)  # [M, G*D]
            out.append(torch.stack([y[:, g * D:(g + 1) * D] for g in range(G)]))  # [G, M, D]
        ks.append(out[0])
        vs.append(out[1])
    return ks, vs


@torch.no_grad()
def decode_by_hand(model, ids, ks, vs, rope_factor=None):
    """ks, vs per layer [G, P, D] un-rotated; returns logits [len, V] float64."""
    C, H, G, D = dims(model.config)
    inv = _rope_inv_freq(model.config, D, rope_factor)
    P, n = (ks[0].shape[1] if ks else 0), ids.shape[0]
    prefix = [(_rotate(k.double(), torch.arange(P), inv), v.double()) for k, v in zip(ks, vs)] if P else None
    allowed = torch.zeros(n, P + n, dtype=torch.bool)
    for q in range(n):
        for k in range(P + n):
            allowed[q, k] = k < P or (k - P) <= q
    x = model.get_input_embeddings().weight.double()[ids]
    _, logits = forward_by_hand(model, x, torch.arange(P, P + n), allowed, prefix=prefix, rope_factor=rope_factor)
    return logits
