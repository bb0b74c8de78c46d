"""UIO memory forward pass (docs/method.md) on Hugging Face transformers, for the C++ memory tests:
encoder (segment + M <mem> tokens, encoder LoRA on q/v, explicit 4-D mask, memory positions (i+1)*l/M)
-> h_mem per layer -> transfer head (LoRA on k/v) -> K_mem, V_mem [G, M, D] -> decoder of every segment
and of the residual tail with the memory of all earlier segments in a DynamicCache (keys rotated at
0..t*M-1, tokens from t*M), with plain RoPE ("none") and, for the tiny Llama, linear RoPE scaling x4.

Cases (each a folder): model/ (save_pretrained; none for SmolLM2, which C++ loads from the same GGUF),
uio_weights.safetensors, config.json, reference.safetensors. Every result is cross-checked against a
from-scratch float64 forward (mask built by loops from the rule's wording), and the script asserts the
mask's behaviour (which ordinary tokens reach which memory token; each memory token equals a run under
transformers' own causal mask with the other memory tokens absent), that memory tokens never reach ordinary
tokens, that with zero LoRA B the encoder's ordinary tokens are the plain model, that the decoder without
memory is the plain model, and that every adapter, the memory and the linear RoPE visibly change results."""
import importlib.util
import json
import pathlib

import torch
from safetensors.torch import save_file

_spec = importlib.util.spec_from_file_location("_uio_memory_lib", pathlib.Path(__file__).with_name("_uio_memory_lib.py"))
lib = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lib)

LINEAR_FACTOR = 4.0
TINY = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})

CASES = {
    # name: (model kind, l, M, T, residual, seed, memory_rope variants)
    "llama_l16_m4": ("llama", 16, 4, 4, 5, 1101, ("none", "linear")),
    "llama_l16_m8": ("llama", 16, 8, 3, 9, 1202, ("none",)),
    "qwen2_l16_m4": ("qwen2", 16, 4, 3, 11, 1303, ("none",)),
    "smollm2_l64_m8": ("smollm2", 64, 8, 3, 17, 1404, ("none",)),
}
GGUF = pathlib.Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def tiny_model(kind: str, gen: torch.Generator):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    if kind == "llama":
        config = LlamaConfig(**TINY, tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    else:
        config = Qwen2Config(**TINY, tie_word_embeddings=True)
        model = Qwen2ForCausalLM(config)
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    lib.randomize(model, gen)
    model.set_attn_implementation("eager")  # additive float 4-D masks, honoured as given
    return model.eval()


def smollm2_model():
    import functools

    import gguf
    from transformers import AutoModelForCausalLM
    # transformers' GGUF loader rebuilds the same read-only gguf name map once per submodule (~400 times,
    # ~9 s here); memoize it for the duration of the load.
    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32,
                                                     attn_implementation="eager")
    finally:
        gguf.get_tensor_name_map = original
    return model.eval()


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30))


def check_close(what: str, got, want, tol: float):
    err = rel_err(got, want)
    assert err <= tol, f"uio_memory: {what}: relative max error {err:.3g} > {tol:g}"


def run_case(name: str, out: pathlib.Path):
    kind, l, M, T, residual, seed, ropes = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    if kind == "smollm2":
        if not GGUF.exists():
            print(f"uio_memory: {name} skipped ({GGUF} absent)", flush=True)
            return
        model = smollm2_model()
    else:
        model = tiny_model(kind, gen)
    spec = lib.Spec(l=l, M=M)
    C, H, G, D = lib.dims(model.config)
    n_layers = model.config.num_hidden_layers
    vocab = model.config.vocab_size
    weights = lib.make_uio_weights(model, spec, gen)
    n = T * l + residual
    doc = torch.randint(0, vocab, (n,), generator=gen)
    segments = [doc[t * l:(t + 1) * l] for t in range(T)] + [doc[T * l:]]
    tol = 1e-4 if kind != "smollm2" else 5e-4  # float32 HF vs float64 by hand
    small = kind != "smollm2"  # SmolLM2 (~2 s per forward here): fewer of the costlier cross-checks

    # Encoder + transfer head, per full segment (independently of the others).
    ref = {"ids": doc.clone()}
    ks, vs = [], []  # per segment: per layer [G, M, D]
    for s in range(T):
        h_mem, outs = lib.encode_hf(model, weights, spec, segments[s])
        if s == 0:
            outs0 = outs
        k, v = lib.transfer_hf(model, weights, spec, h_mem)
        for i in range(n_layers):
            assert h_mem[i].shape == (M, C) and k[i].shape == (G, M, D) and v[i].shape == (G, M, D)
            ref[f"h_mem.{s}.{i}"], ref[f"k_mem.{s}.{i}"], ref[f"v_mem.{s}.{i}"] = h_mem[i], k[i], v[i]
        ks.append(k)
        vs.append(v)
        if s == 0 or (small and s == T - 1):
            h_hand = lib.encode_by_hand(model, weights, spec, segments[s])
            k_hand, v_hand = lib.transfer_by_hand(model, weights, spec, h_hand)
            for i in range(n_layers):
                check_close(f"{name} h_mem.{s}.{i} vs by hand", h_mem[i], h_hand[i], tol)
                check_close(f"{name} k_mem.{s}.{i} vs by hand", k[i], k_hand[i], tol)
                check_close(f"{name} v_mem.{s}.{i} vs by hand", v[i], v_hand[i], tol)

    # Decoder of every segment and of the residual tail, memory of all earlier segments.
    def memory(t):
        return ([torch.cat([ks[s][i] for s in range(t)], dim=1) for i in range(n_layers)] if t else [],
                [torch.cat([vs[s][i] for s in range(t)], dim=1) for i in range(n_layers)] if t else [])

    for rope in ropes:
        factor = LINEAR_FACTOR if rope == "linear" else None
        key = "logits" if rope == "none" else f"logits_{rope}"
        for t in range(T + 1):
            mk, mv = memory(t)
            logits = lib.decode_hf(model, segments[t], mk, mv, factor)
            assert logits.shape == (segments[t].shape[0], vocab)
            ref[f"{key}.{t}"] = logits
            if small or t == T:
                check_close(f"{name} {key}.{t} vs by hand", logits,
                            lib.decode_by_hand(model, segments[t], mk, mv, factor), tol)
    self_checks(name, model, weights, spec, segments, ref, ks, vs, outs0, ropes, small)

    case = out / name
    case.mkdir(parents=True, exist_ok=True)
    if kind != "smollm2":
        model.save_pretrained(case / "model")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(case / "uio_weights.safetensors"))
    save_file({k: v.contiguous() for k, v in ref.items()}, str(case / "reference.safetensors"))
    (case / "config.json").write_text(json.dumps({
        "model": "model" if kind != "smollm2" else str(GGUF), "architecture": type(model).__name__,
        "l": l, "M": M, "T": T, "residual": residual, "n": n, "seed": seed,
        "encoder": {"r": spec.enc_r, "alpha": spec.enc_alpha, "targets": ["q_proj", "v_proj"]},
        "transfer": {"r": spec.tr_r, "alpha": spec.tr_alpha, "targets": ["k_proj", "v_proj"]},
        "memory_rope": list(ropes), "memory_rope_linear_factor": LINEAR_FACTOR,
        "memory_positions_encoder": [spec.mem_position(i) for i in range(M)],
        "ids": doc.tolist()}, indent=1))


def self_checks(name, model, weights, spec, segments, ref, ks, vs, outs0, ropes, small):
    l, M = spec.l, spec.M
    n_layers = model.config.num_hidden_layers

    # 1. Mask behaviour: ordinary token j of segment 0 reaches memory token i (layer >= 1) iff j < (i+1)*l/M;
    #    layer 0's h_mem is the normed <mem> embedding, reached by nothing.
    base = [ref[f"h_mem.0.{i}"] for i in range(n_layers)]
    scale = max(float(b.abs().max()) for b in base)
    for j in (range(l) if small else (l // M - 1, l // M, l - 1)):
        ids = segments[0].clone()
        ids[j] = (ids[j] + 1 + j) % model.config.vocab_size
        h, _ = lib.encode_hf(model, weights, spec, ids)
        assert torch.equal(h[0], base[0]), f"{name}: layer 0 h_mem changed with token {j}"
        for i in range(M):
            diff = max(float((h[layer][i] - base[layer][i]).abs().max()) for layer in range(1, n_layers))
            if j < spec.mem_position(i):
                assert diff > 1e-3 * scale, f"{name}: memory token {i} does not see token {j} (diff {diff:.3g})"
            else:
                assert diff <= 1e-6 * scale, f"{name}: memory token {i} sees token {j} (diff {diff:.3g})"
    #    And memory token i equals a run of the first (i+1)*l/M tokens plus one <mem> under transformers' own
    #    causal mask (no custom mask, default positions): it sees those tokens and itself, no other <mem>.
    for i in (range(M) if small else (0, M - 1)):
        alone = lib.encode_one_memory_causal(model, weights, spec, segments[0], i)
        for layer in range(n_layers):
            check_close(f"{name}: h_mem.0.{layer} memory token {i} vs causal run without the others",
                        base[layer][i], alone[layer], 1e-5)

    # 2. Memory tokens never reach ordinary tokens: the encoder's layer outputs at the ordinary positions are
    #    those of the same encoder (LoRA on) run without memory tokens.
    _, without = lib.encode_hf(model, weights, spec, segments[0], with_memory=False)
    for i in range(n_layers):
        check_close(f"{name}: encoder layer {i} ordinary outputs with vs without memory", outs0[i][:l], without[i], 1e-5)

    # 3. All LoRA B zero: the encoder's ordinary outputs are the plain model's hidden states. The decoder
    #    takes no adapter at all; without memory (t = 0) it is the plain model on that segment.
    zero_b = {k: (torch.zeros_like(v) if k.endswith("lora_B") else v) for k, v in weights.items()}
    h_zero, zero_outs = lib.encode_hf(model, zero_b, spec, segments[0])
    with torch.no_grad():
        plain = model(input_ids=segments[0][None], use_cache=False, output_hidden_states=True)
    for i in range(n_layers - 1):  # hidden_states[i + 1] is layer i's output (the last one is after the final norm)
        check_close(f"{name}: zero-B encoder layer {i} vs plain model", zero_outs[i][:l], plain.hidden_states[i + 1][0], 1e-5)
    check_close(f"{name}: logits.0 (no memory) vs plain model", ref["logits.0"], plain.logits[0], 1e-5)

    # 4. Everything matters: the encoder LoRA moves h_mem, the transfer LoRA moves K/V, memory moves logits,
    #    linear RoPE moves logits (except at position 0).
    assert rel_err(h_zero[n_layers - 1], base[n_layers - 1]) > 1e-2, f"{name}: encoder LoRA has no visible effect"
    k_zero, v_zero = lib.transfer_hf(model, zero_b, spec, base)
    for i in range(n_layers):
        assert rel_err(k_zero[i], ks[0][i]) > 1e-2 and rel_err(v_zero[i], vs[0][i]) > 1e-2, \
            f"{name}: transfer LoRA of layer {i} has no visible effect"
    no_mem = lib.decode_hf(model, segments[1], [], [])
    assert rel_err(no_mem, ref["logits.1"]) > 1e-2, f"{name}: memory has no visible effect on logits.1"
    if "linear" in ropes:
        assert rel_err(ref["logits_linear.2"], ref["logits.2"]) > 1e-2, f"{name}: linear RoPE has no visible effect"
        check_close(f"{name}: logits_linear.0 vs logits.0 (position 0)", ref["logits_linear.0"][:1], ref["logits.0"][:1], 1e-5)


def main(out_dir: pathlib.Path):
    torch.manual_seed(0)
    for name in CASES:
        run_case(name, out_dir)
