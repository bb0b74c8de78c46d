"""GGUF reference files for tests/gguf_test.cpp, written with gguf-py's GGUFWriter (independent of uio):

  types.gguf      v3: metadata of every value type (nested arrays, tokenizer-style keys) and one tensor
                  per ggml type uio dequantises, quantised by gguf.quants.quantize from random normal
                  data, plus blocks of random bytes (finite fp16 scales) for every type; the K-quants,
                  which gguf-py cannot quantise, are random bytes only.
  v2.gguf         the same writer output with the version field set to 2 and general.alignment 64.
  llama.gguf      a tiny GQA Llama as llama.cpp's converter lays it out (Q/K rows permuted, Llama-3
                  rope_freqs.weight, an untied output.weight), mixed F32/F16/Q8_0 tensors.
  qwen2.gguf      a tiny Qwen2: q/k/v biases, no permutation, tied embeddings (no output.weight).

For every tensor, manifest.json names a raw little-endian float32 .bin holding the reference values:
gguf.quants.dequantize(...) of the stored bytes, and for the model files the HF-layout tensor, which
is transformers' own GGUF reverse permutation (LlamaTensorProcessor) applied to that.
"""
import json
import pathlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

LEGACY = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
K_QUANTS = [T.Q4_K, T.Q6_K]
# Byte offsets of the fp16 fields of each block format (they must hold finite values).
FP16_FIELDS = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q4_K: [0, 2], T.Q6_K: [208]}


def random_fp16_bits(rng, n):
    """Random fp16 bit patterns of every class (normal, subnormal, zero, inf), never NaN."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    nan = ((bits & 0x7C00) == 0x7C00) & ((bits & 0x03FF) != 0)
    bits[nan] &= 0xFC00  # NaN -> inf of the same sign
    return bits


def random_blocks(rng, qtype, rows, row_len):
    """Random block bytes with finite, moderate fp16 scales: every quant bit pattern occurs."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * row_len // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        scale = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(rows, row_len // block * size)


class Writer:
    """GGUFWriter plus the reference manifest."""

    def __init__(self, out_dir, name, arch):
        self.out_dir, self.name = out_dir, name
        self.w = gguf.GGUFWriter(str(out_dir / name), arch)
        self.entries = []

    def tensor(self, tname, raw, qtype, shape, expected):
        """`raw`: the stored array (np.uint8 bytes for quantised types); `expected`: reference floats."""
        if raw.dtype == np.uint8:
            self.w.add_tensor(tname, raw, raw_shape=raw.shape, raw_dtype=qtype)
        else:
            self.w.add_tensor(tname, raw, raw_dtype=qtype if qtype in (T.BF16,) else None)
        expected = np.ascontiguousarray(expected, dtype=np.float32)
        assert list(expected.shape) == list(shape), (tname, expected.shape, shape)
        ref = f"{self.name}.{tname}.bin"
        expected.tofile(self.out_dir / ref)
        self.entries.append({"file": self.name, "tensor": tname, "type": qtype.name, "shape": list(shape), "ref": ref})

    def close(self):
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()
        return self.entries


def stored(raw, qtype):
    """What gguf-py dequantises from the bytes as stored."""
    return gguf.quants.dequantize(raw, qtype)


def add_dtype_tensors(wr, rng, prefix=""):
    shape2 = (3, 64)
    x = rng.standard_normal(shape2).astype(np.float32)
    wr.tensor(prefix + "f32", x, T.F32, shape2, stored(x, T.F32))
    h = (rng.standard_normal(shape2) * np.array([1.0, 1e-6, 1e4], dtype=np.float32)[:, None]).astype(np.float16)
    wr.tensor(prefix + "f16", h, T.F16, shape2, stored(h, T.F16))
    hb = random_fp16_bits(rng, 3 * 64).view(np.float16).reshape(shape2)
    wr.tensor(prefix + "f16_bits", hb, T.F16, shape2, stored(hb, T.F16))
    b = gguf.quants.quantize(x * 3, T.BF16)
    wr.tensor(prefix + "bf16", b, T.BF16, shape2, stored(b, T.BF16))
    for q in LEGACY:
        data = rng.standard_normal((4, 96)).astype(np.float32)
        raw = gguf.quants.quantize(data, q)
        wr.tensor(prefix + q.name.lower(), raw, q, data.shape, stored(raw, q))
        raw = random_blocks(rng, q, 2, 64)
        wr.tensor(prefix + q.name.lower() + "_bits", raw, q, (2, 64), stored(raw, q))
    for q in K_QUANTS:
        raw = random_blocks(rng, q, 3, 512)
        wr.tensor(prefix + q.name.lower() + "_bits", raw, q, (3, 512), stored(raw, q))
    # A 3-D tensor: torch shape is the GGUF dims reversed.
    data = rng.standard_normal((2, 3, 64)).astype(np.float32)
    raw = gguf.quants.quantize(data, T.Q8_0)
    wr.tensor(prefix + "q8_0_3d", raw, T.Q8_0, (2, 3, 64), stored(raw, T.Q8_0))


def write_types(out_dir, rng):
    wr = Writer(out_dir, "types.gguf", "llama")
    w = wr.w
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo wörld")
    w.add_uint64("test.u64", 1 << 60)
    w.add_int64("test.i64", -(1 << 60))
    w.add_float64("test.f64", 0.1)
    w.add_key_value("test.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr_i16", [-5, 7], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("test.arr_u64", [1 << 40, 3], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.arr_f64", [0.25, -1.5], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("test.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_array("test.nested", [[1, 2], [3]])  # arrays of INT32 arrays
    # Tokenizer metadata as llama.cpp writes it.
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(["<s>", "</s>", "a", "b", "ab"])
    w.add_token_scores([0.0, -1.0, -2.5, -3.0, -4.0])
    w.add_token_types([3, 3, 1, 1, 1])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    add_dtype_tensors(wr, rng)
    return wr.close()


def write_v2(out_dir, rng):
    wr = Writer(out_dir, "v2.gguf", "llama")
    wr.w.add_custom_alignment(64)
    wr.w.add_string("test.string", "version two")
    add_dtype_tensors(wr, rng, prefix="v2.")
    entries = wr.close()
    path = out_dir / "v2.gguf"
    data = bytearray(path.read_bytes())
    assert data[4:8] == (3).to_bytes(4, "little")
    data[4:8] = (2).to_bytes(4, "little")  # v2 and v3 share the layout
    path.write_bytes(bytes(data))
    return entries


def llama_permute(w, n_head, n_head_kv=None):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF rotary halves -> interleaved pairs)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_factors(theta, head_dim, factor, low, high, old_ctx):
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    out = []
    for f in freqs:
        wavelen = 2 * np.pi / f
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_model(out_dir, rng, arch):
    H, G, D, C, F, L, V_ = 4, 2, 16, 64, 96, 2, 40
    name = f"{arch}.gguf"
    wr = Writer(out_dir, name, arch)
    w = wr.w
    w.add_context_length(256)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(G)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(500000.0)
    w.add_rope_dimension_count(D)
    w.add_token_list([f"t{i}" for i in range(V_)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    permute = arch == "llama"
    processor = LlamaTensorProcessor(config={"num_attention_heads": H, "num_key_value_heads": G})

    def add(gguf_name, hf_name, hf_value, qtype):
        """Stores the HF tensor as llama.cpp would and records transformers' view of it as reference."""
        value = hf_value
        if permute and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
            value = llama_permute(hf_value, H, G if ".attn_k." in gguf_name else None)
        if qtype == T.F32:
            raw = value.astype(np.float32)
        elif qtype == T.F16:
            raw = value.astype(np.float16)
        else:
            raw = gguf.quants.quantize(value, qtype)
        deq = stored(raw, qtype)
        ref = processor.process(deq, gguf_name).weights if permute else deq  # transformers' reverse permute
        if qtype == T.F32:
            assert np.array_equal(ref, hf_value), gguf_name  # the reverse really inverts the permutation
        wr.tensor(gguf_name, raw, qtype, hf_value.shape, deq)
        hf_ref = f"{name}.hf.{hf_name}.bin"
        np.ascontiguousarray(ref, dtype=np.float32).tofile(out_dir / hf_ref)
        wr.entries[-1]["hf_name"] = hf_name
        wr.entries[-1]["hf_ref"] = hf_ref

    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    add("token_embd.weight", "model.embed_tokens.weight", randn(V_, C), T.Q8_0)
    for i in range(L):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        add(p + "attn_norm.weight", q + "input_layernorm.weight", randn(C), T.F32)
        add(p + "attn_q.weight", q + "self_attn.q_proj.weight", randn(H * D, C), T.Q8_0 if i == 0 else T.F32)
        add(p + "attn_k.weight", q + "self_attn.k_proj.weight", randn(G * D, C), T.F16 if i == 0 else T.F32)
        add(p + "attn_v.weight", q + "self_attn.v_proj.weight", randn(G * D, C), T.F32)
        if arch == "qwen2":
            add(p + "attn_q.bias", q + "self_attn.q_proj.bias", randn(H * D), T.F32)
            add(p + "attn_k.bias", q + "self_attn.k_proj.bias", randn(G * D), T.F32)
            add(p + "attn_v.bias", q + "self_attn.v_proj.bias", randn(G * D), T.F32)
        add(p + "attn_output.weight", q + "self_attn.o_proj.weight", randn(C, H * D), T.Q4_0)
        add(p + "ffn_norm.weight", q + "post_attention_layernorm.weight", randn(C), T.F32)
        add(p + "ffn_gate.weight", q + "mlp.gate_proj.weight", randn(F, C), T.Q5_1)
        add(p + "ffn_up.weight", q + "mlp.up_proj.weight", randn(F, C), T.F16)
        add(p + "ffn_down.weight", q + "mlp.down_proj.weight", randn(C, F), T.Q4_1)
    add("output_norm.weight", "model.norm.weight", randn(C), T.F32)
    if arch == "llama":
        add("output.weight", "lm_head.weight", randn(V_, C), T.Q5_0)
        factors = llama3_factors(500000.0, D, 8.0, 1.0, 4.0, 8192)
        wr.tensor("rope_freqs.weight", factors, T.F32, factors.shape, factors)
    return wr.close()


def main(out_dir: pathlib.Path):
    rng = np.random.default_rng(20240604)
    entries = write_types(out_dir, rng) + write_v2(out_dir, rng)
    entries += write_model(out_dir, rng, "llama") + write_model(out_dir, rng, "qwen2")
    (out_dir / "manifest.json").write_text(json.dumps(entries, indent=1))


if __name__ == "__main__":
    import sys
    main(pathlib.Path(sys.argv[1]))
