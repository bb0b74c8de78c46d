"""scripts/attention-diagnostic.py on a tiny random Llama and export: its attention masses partition every
query's keys, equal a float64 recomputation from one layer's Q and K (no output_attentions involved), and with
no memory the decoder's attention is the plain model's; its memory, sink and past-the-boundary passes give
the package's own logits."""
import dataclasses
import importlib.util
import json
import math

import torch

from conftest import REPO, ref, tiny_model, write_export
from uio_memory import UioMemoryModel
from uio_memory.compressor import Memory


def _load_script():
    spec = importlib.util.spec_from_file_location("attention_diagnostic", REPO / "scripts" / "attention-diagnostic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


diag_mod = _load_script()
L, M, T, A, SINK = 16, 4, 3, 3, 2  # segment length, memory tokens, segments, answer tokens, sink tokens


def _setup(tmp_path, gen, sink_in_config=0):
    model = tiny_model("llama", int(torch.randint(1 << 30, (1,), generator=gen)))
    model.config._attn_implementation = "eager"
    spec = ref.Spec(l=L, M=M)
    weights = ref.make_uio_weights(model, spec, gen)
    export = write_export(tmp_path, model, weights, spec)
    if sink_in_config:
        config = json.loads((export / "uio_config.json").read_text())
        config["sink_tokens"] = sink_in_config
        (export / "uio_config.json").write_text(json.dumps(config))
    uio = UioMemoryModel.from_export(model, export)
    ids = torch.randint(model.config.vocab_size, (T * L,), generator=gen)
    last = torch.randint(model.config.vocab_size, (L + A,), generator=gen)
    doc = diag_mod.NeedleDocument(ids, A, (T - 1) * L + 5, (T - 1) * L + 9, "", last)
    return model, uio, doc


def _rotate(x, positions, theta):
    """RoPE in float64 on x [G, P, D] at positions [P] (rotate-half layout, as Llama's)."""
    D = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    angles = positions.double()[:, None] * inv_freq  # [P, D/2]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    half = torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)
    return x * cos + half * sin


def test_masses_partition_the_keys_and_equal_a_float64_recomputation_from_q_and_k(tmp_path, gen):
    model, uio, doc = _setup(tmp_path, gen)
    diag = diag_mod.Diagnostic(uio, SINK)
    kv = diag.compress(doc.ids[:(T - 1) * L].view(T - 1, L))
    rows = doc.rows - (T - 1) * L
    layer = 1
    captured = {}
    attn = model.model.layers[layer].self_attn
    handle = attn.register_forward_pre_hook(lambda mod, args, kwargs: captured.update(h=kwargs["hidden_states"]),
                                            with_kwargs=True)
    for sink in (0, SINK):
        memory = diag.memory(doc.ids, kv, sink)
        try:
            _, probs, P = diag.read_with_memory(doc.ids[(T - 1) * L:], T - 1, memory, rows)
        finally:
            if sink == SINK:
                handle.remove()
        assert P == sink + (T - 1) * M
        nb, ne = doc.needle_begin - (T - 1) * L, doc.needle_end - (T - 1) * L
        groups = diag.memory_groups(doc, P, sink)
        # Every query's masses over sink, memory, earlier and local keys sum to 1.
        for p in probs:
            masses = diag_mod.group_masses(p, groups)
            total = sum(masses[name] for name in diag_mod.PARTITION)
            assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
        got = diag_mod.layer_stats(probs, groups)[layer]

        # float64 from the layer's input: Q, K (memory keys rotated at 0..P-1, the segment's at P..), softmax.
        c = model.config
        H, G, D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        h = captured["h"][0].double()  # [L, C]
        q = (h @ attn.q_proj.weight.detach().double().T).view(L, H, D).transpose(0, 1)  # [H, L, D]
        k = (h @ attn.k_proj.weight.detach().double().T).view(L, G, D).transpose(0, 1)  # [G, L, D]
        theta = c.rope_parameters["rope_theta"]
        keys = torch.cat([_rotate(memory.keys[layer][:, :P].double(), torch.arange(P), theta),
                          _rotate(k, P + torch.arange(L), theta)], 1)  # [G, P + L, D]
        keys = keys.repeat_interleave(H // G, 0)  # [H, P + L, D]
        q = _rotate(q, P + torch.arange(L), theta)
        scores = q @ keys.transpose(1, 2) / math.sqrt(D)  # [H, L, P + L]
        allowed = torch.cat([torch.ones(L, P, dtype=torch.bool), torch.ones(L, L, dtype=torch.bool).tril()], 1)
        p = scores.masked_fill(~allowed, float("-inf")).softmax(-1)[:, rows]  # [H, Q, P + L]
        want = {"sink": p[..., :sink].sum(-1).mean(), "memory": p[..., sink:P].sum(-1).mean(),
                "local": p[..., P:].sum(-1).mean(), "needle": p[..., P + nb:P + ne].sum(-1).mean(),
                "first": p[..., :SINK].sum(-1).mean(),
                "entropy": -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1).mean()}
        for name, value in want.items():
            assert abs(got[name] - float(value)) <= 1e-5, (sink, name, got[name], float(value))
        assert got["earlier"] == 0.0
        # Not vacuous: the memory draws attention, the needle some, and the sink takes mass when it is there.
        assert got["memory"] > 0.01 and got["needle"] > 0.01
        assert (got["sink"] > 0.01) == bool(sink)


def test_with_no_memory_the_memory_mass_is_zero_and_attention_is_the_plain_models(tmp_path, gen):
    model, uio, doc = _setup(tmp_path, gen)
    diag = diag_mod.Diagnostic(uio, SINK)
    segment = doc.ids[(T - 1) * L:]
    rows = doc.rows - (T - 1) * L
    logits, probs, P = diag.read_with_memory(segment, 0, Memory(), rows)
    assert P == 0
    plain_logits, plain_probs = diag.read_plain(segment, rows)
    stats = diag_mod.layer_stats(probs, diag.memory_groups(doc, P, 0))
    plain = diag_mod.layer_stats(plain_probs, diag.plain_groups(doc, whole=False))
    for a, b in zip(stats, plain):
        assert a["memory"] == 0.0 and a["keys"] == b["keys"] == L
        assert abs(a["local"] - 1) <= 1e-6 and a["needle"] > 0.01
        for name in ("local", "needle", "first", "entropy"):
            assert abs(a[name] - b[name]) <= 1e-6
    # The plain model over the whole document: its keys are the earlier segments' and the last one's.
    _, whole_probs = diag.read_plain(doc.ids, doc.rows)
    for w in diag_mod.layer_stats(whole_probs, diag.plain_groups(doc, whole=True)):
        assert w["keys"] == T * L and abs(w["earlier"] + w["local"] - 1) <= 1e-6 and w["earlier"] > 0.01
    assert torch.allclose(logits, plain_logits, atol=1e-5)
    # With memory in front, the same segment's attention does change (else the comparison proves little).
    kv = diag.compress(doc.ids[:(T - 1) * L].view(T - 1, L))
    _, with_memory, _ = diag.read_with_memory(segment, T - 1, diag.memory(doc.ids, kv, 0), rows)
    assert with_memory[0].shape[-1] == (T - 1) * M + L


def test_the_memory_passes_give_the_packages_own_logits(tmp_path, gen):
    """memory+sink built by the script equals the package reading an export whose config keeps the sink, and
    the past-the-boundary answer equals the package's teacher-forced logits of that prompt."""
    model, uio_sink, doc = _setup(tmp_path, gen, sink_in_config=SINK)
    diag = diag_mod.Diagnostic(uio_sink, SINK)
    kv = diag.compress(doc.ids[:(T - 1) * L].view(T - 1, L))
    rows = doc.rows - (T - 1) * L
    logits, _, _ = diag.read_with_memory(doc.ids[(T - 1) * L:], T - 1, diag.memory(doc.ids, kv, SINK), rows)
    want = uio_sink.segment_logits(doc.ids)[doc.rows]
    assert torch.allclose(logits, want, atol=1e-5)

    scores = diag.answer_past_boundary(doc, kv)  # read without the sink: the export's sink is off for it
    uio = UioMemoryModel.from_export(model, tmp_path)
    uio.config = dataclasses.replace(uio.config, sink_tokens=0)
    ids = torch.cat([doc.ids[:(T - 1) * L], doc.boundary_last])
    answer_rows = torch.arange(T * L - 1, T * L + A - 1)
    want = diag_mod.answer_scores(uio.segment_logits(ids)[answer_rows], doc.boundary_last[L:])
    assert abs(scores["logp"] - want["logp"]) <= 1e-4 and scores["greedy"] == want["greedy"]
