"""The UIO training step the way a user would write it without uio: HF transformers + PEFT, eager
PyTorch, one document of T segments read in chunks of K (uio's `tbptt`-like schedule: inside a chunk
the gradient flows through the chunk's own memories, older memories enter detached). Same shapes as
`uio bench train` (random weights of a named shape or an HF directory), same GPU, same run: `uio bench
train --compare_python` runs it and prints the ratio. Written by us, for the comparison only.

Per chunk: the encoder (PEFT adapter "encoder" on q/v) reads K segments plus M <mem> tokens each with
UIO's mask and positions; forward hooks on every layer's input_layernorm keep the memory positions'
states; the transfer head (adapter "transfer" on k/v) turns them into keys and values; the decoder
(adapters off) reads each segment with all earlier memories as a rotated DynamicCache prefix and a
per-row mask; cross-entropy over the segments; backward; then one AdamW step over the document.

usage: uio_step_hf.py --shape llama2-7b --tokens 32768 --chunk 4 --device cuda   (prints one JSON line)"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
from transformers.cache_utils import DynamicCache

SHAPES = {
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0,
                         max_position_embeddings=8192, tie_word_embeddings=True),
    "llama2-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, rope_theta=10000.0,
                      max_position_embeddings=4096, tie_word_embeddings=False),
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
                      max_position_embeddings=8192, tie_word_embeddings=False),
}


def build(args, dtype, device):
    if args.model.endswith(".gguf"):  # dequantised by transformers, as uio dequantises it
        directory, name = os.path.split(os.path.abspath(args.model))
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=dtype)
    elif args.model:
        config = AutoConfig.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    else:
        config = LlamaConfig(**SHAPES[args.shape])
        torch.manual_seed(args.seed)
        with torch.device(device):  # random init on the device itself: seconds for 7B, not minutes on the host
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.to(device).requires_grad_(False)
    enc = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    tr = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=["k_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(model, enc, adapter_name="encoder", autocast_adapter_dtype=True)
    model.add_adapter("transfer", tr)
    for name, p in model.named_parameters():  # both adapters train, in float32 (master weights)
        if "lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)
    return config, model


def encoder_mask(l, M, device, dtype):
    allowed = torch.zeros(l + M, l + M, dtype=torch.bool, device=device)
    allowed[:l, :l] = torch.ones(l, l, dtype=torch.bool, device=device).tril()
    for i in range(M):
        allowed[l + i, : (i + 1) * (l // M)] = True
        allowed[l + i, l + i] = True
    mask = torch.zeros(l + M, l + M, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--model", default="", help="an HF directory or .gguf file instead of --shape")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--segment-len", type=int, default=1024)
    ap.add_argument("--memory-tokens", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[args.dtype]
    device = torch.device(args.device)
    config, model = build(args, dtype, device)
    inner = model.base_model.model  # LlamaForCausalLM with LoRA layers inside
    layers = inner.model.layers
    l, M, K = args.segment_len, args.memory_tokens, args.chunk
    T = args.tokens // l
    C = config.hidden_size
    G = config.num_key_value_heads
    D = getattr(config, "head_dim", None) or C // config.num_attention_heads
    eos = config.eos_token_id if isinstance(config.eos_token_id, int) else 2
    mem = torch.nn.Parameter(inner.model.embed_tokens.weight[eos].detach().float().clone())
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    trainable = lora + [mem]

    def train_all():  # PEFT freezes the inactive adapter (set_adapter, leaving disable_adapter); both train here
        for p in lora:
            p.requires_grad_(True)

    def use_adapter(name):
        model.set_adapter(name)
        train_all()
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    emask = encoder_mask(l, M, device, dtype)
    epos = torch.cat([torch.arange(l), (torch.arange(M) + 1) * (l // M)]).to(device)[None]
    rotary = inner.model.rotary_emb

    captured = []
    hooks = [layer.input_layernorm.register_forward_hook(lambda m, i, o: captured.append(o[:, l:]))
             for layer in layers]

    def step(doc):
        segments = doc.view(T, l)
        older_k = [None] * len(layers)
        older_v = [None] * len(layers)
        for c0 in range(0, T, K):
            k_rows = min(K, T - c0)
            seg = segments[c0:c0 + k_rows]
            # Encoder: K segments and their <mem> tokens, adapter "encoder".
            use_adapter("encoder")
            captured.clear()
            x = torch.cat([inner.model.embed_tokens(seg), mem.to(dtype).expand(k_rows, M, C)], 1)
            inner.model(inputs_embeds=x, attention_mask=emask.expand(k_rows, 1, -1, -1),
                        position_ids=epos.expand(k_rows, -1), use_cache=False)
            # Transfer head, adapter "transfer": keys and values of every layer at the memory positions.
            use_adapter("transfer")
            chunk_k, chunk_v = [], []
            for i, layer in enumerate(layers):
                h = captured[i]  # [k_rows, M, C]
                chunk_k.append(layer.self_attn.k_proj(h).view(k_rows, M, G, D).transpose(1, 2))  # [k, G, M, D]
                chunk_v.append(layer.self_attn.v_proj(h).view(k_rows, M, G, D).transpose(1, 2))
            # Decoder, adapters off: row r reads memories 0 .. c0 + r - 1 (older detached, the chunk's attached).
            P = (c0 + k_rows - 1) * M
            with model.disable_adapter():
                cache = DynamicCache()
                mem_pos = torch.arange(P, device=device)[None]
                cos, sin = rotary(seg.new_zeros(1, P, C, dtype=dtype), mem_pos) if P else (None, None)
                for i in range(len(layers)):
                    parts_k = ([older_k[i]] if older_k[i] is not None else []) + \
                              [chunk_k[i][r] for r in range(k_rows - 1)]
                    parts_v = ([older_v[i]] if older_v[i] is not None else []) + \
                              [chunk_v[i][r] for r in range(k_rows - 1)]
                    if P:
                        kk = torch.cat(parts_k, 1)[None].expand(k_rows, -1, -1, -1)  # [k, G, P, D]
                        vv = torch.cat(parts_v, 1)[None].expand(k_rows, -1, -1, -1)
                        c, s = cos[:, None].to(dtype), sin[:, None].to(dtype)
                        rot = torch.cat([-kk[..., D // 2:], kk[..., : D // 2]], -1)
                        cache.update(kk * c + rot * s, vv, i)
                rows = torch.arange(k_rows, device=device)
                pos = (c0 + rows)[:, None] * M + torch.arange(l, device=device)[None]  # [k, l]
                allowed_mem = torch.arange(P, device=device)[None] < ((c0 + rows) * M)[:, None]  # [k, P]
                allowed = torch.cat([allowed_mem[:, None].expand(-1, l, -1),
                                     torch.ones(l, l, dtype=torch.bool, device=device).tril().expand(k_rows, -1, -1)], 2)
                mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
                out = inner.model(input_ids=seg, past_key_values=cache if P else None, attention_mask=mask[:, None],
                                  position_ids=pos, use_cache=False)
                logits = inner.lm_head(out.last_hidden_state).float()
            targets = doc[c0 * l + 1: (c0 + k_rows) * l + 1]
            pred = logits.reshape(-1, logits.size(-1))[: targets.numel()]
            loss = F.cross_entropy(pred, targets, reduction="sum") / (doc.numel() - 1)
            train_all()  # a frozen leaf would drop its gradient in backward
            loss.backward()
            for i in range(len(layers)):  # this chunk's memories reach later chunks detached
                new_k = chunk_k[i].detach().transpose(0, 1).reshape(G, k_rows * M, D)
                new_v = chunk_v[i].detach().transpose(0, 1).reshape(G, k_rows * M, D)
                older_k[i] = new_k if older_k[i] is None else torch.cat([older_k[i], new_k], 1)
                older_v[i] = new_v if older_v[i] is None else torch.cat([older_v[i], new_v], 1)
        opt.step()
        opt.zero_grad(set_to_none=True)

    gen = torch.Generator().manual_seed(args.seed)
    doc = torch.randint(config.vocab_size, (T * l,), generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step(doc)  # warm-up
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step(doc)
        sync()
        times.append(time.perf_counter() - t0)
    for h in hooks:
        h.remove()
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    print(json.dumps({"tokens": T * l, "chunk": K, "seconds": seconds, "tokens_per_s": T * l / seconds,
                      "peak_gb": peak, "shape": args.model or args.shape}))


if __name__ == "__main__":
    main()
