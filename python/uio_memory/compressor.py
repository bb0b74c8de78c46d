"""Compression (uio docs/method.md §3-4): the encoder (base model + encoder LoRA) reads each l-token segment
followed by M <mem> tokens and keeps every layer's post-RMSNorm attention input at the memory
positions; the transfer head (transfer LoRA on k_proj, v_proj) turns those into the memory's keys and
values. Segments are independent, so a batch of them is one forward. Reading with memory is decoder.py.
Dims: S segments, l segment length, M memory tokens, C model dim, G KV heads, D head dim, P entries."""
import contextlib

import torch

from .lora import LoraSet


def encoder_allowed(l: int, M: int) -> torch.Tensor:
    """[l + M, l + M] bool, True = may attend: ordinary tokens causal among themselves and blind to memory;
    memory token i sees ordinary tokens [0, (i+1) l/M) and itself, no other memory token."""
    allowed = torch.zeros(l + M, l + M, dtype=torch.bool)
    allowed[:l, :l] = torch.ones(l, l, dtype=torch.bool).tril()
    for i in range(M):
        allowed[l + i, : (i + 1) * (l // M)] = True
        allowed[l + i, l + i] = True
    return allowed


def encoder_positions(l: int, M: int) -> torch.Tensor:
    """[l + M] RoPE positions: ordinary token j at j, memory token i at (i+1) l/M, the end of what it sees."""
    return torch.cat([torch.arange(l), torch.arange(1, M + 1) * (l // M)])


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the additive float mask transformers' eager and SDPA attention both take
    (a 4-D mask reaches the attention layers as given)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


class Memory:
    """Per layer, the un-rotated keys and values [G, P, D]: the attention sink's first (`sink` entries, when
    the export keeps one), then every compressed segment, segment-major (entry sink + s*M + i is memory
    token i of segment s). Rotation depends on the segment that reads them."""

    def __init__(self):
        self.keys, self.values = [], []
        self.sink = 0

    def visible(self, segment: int, M: int) -> int:
        """Entries segment t reads: the sink and t segments' memory; none for segment 0 (its own tokens
        hold the sink's)."""
        return self.sink + segment * M if segment > 0 else 0

    @property
    def entries(self) -> int:
        return self.keys[0].shape[1] if self.keys else 0

    def append(self, keys: list, values: list):
        if not self.keys:
            self.keys, self.values = list(keys), list(values)
        else:
            self.keys = [torch.cat([a, b], 1) for a, b in zip(self.keys, keys)]
            self.values = [torch.cat([a, b], 1) for a, b in zip(self.values, values)]


class Compressor:
    """Encoder and transfer head over the user's base model (adapters applied per pass)."""

    def __init__(self, base, segment_len: int, num_memory_tokens: int, encoder: LoraSet, transfer: LoraSet,
                 memory_embedding: torch.Tensor, sink_tokens: int = 0, decoder: LoraSet | None = None):
        self.base, self.l, self.M, self.sink_tokens = base, segment_len, num_memory_tokens, sink_tokens
        self.encoder, self.transfer = encoder, transfer
        self.decoder = decoder  # the decoder's adapters (beyond the paper): the sink is the decoder's own keys
        self.memory_embedding = memory_embedding  # [C] float32
        self._allowed = encoder_allowed(self.l, self.M)
        self._positions = encoder_positions(self.l, self.M)

    def encode(self, segments: torch.Tensor) -> list:
        """Each layer's post-RMSNorm attention input at the memory positions, L x [S, M, C], of segments
        [S, l] of token ids."""
        S, l, M = segments.shape[0], self.l, self.M
        body = self.base.model
        tokens = body.embed_tokens(segments)  # [S, l, C]
        memory = self.memory_embedding.to(device=tokens.device, dtype=tokens.dtype).expand(S, M, -1)  # [S, M, C]
        mask = additive_mask(self._allowed.to(tokens.device), tokens.dtype).expand(S, 1, l + M, l + M)
        positions = self._positions.to(tokens.device).expand(S, l + M)
        hidden = [None] * len(body.layers)
        handles = [layer.input_layernorm.register_forward_hook(
            lambda mod, args, out, i=i: hidden.__setitem__(i, out[:, l:].clone()))  # not a view: frees [S, l, C]
            for i, layer in enumerate(body.layers)]
        try:
            with self.encoder.applied(self.base):
                body(inputs_embeds=torch.cat([tokens, memory], 1), attention_mask=mask, position_ids=positions,
                     use_cache=False)  # [S, l + M, C] in; only the captures are kept
        finally:
            for handle in handles:
                handle.remove()
        return hidden

    def transfer_head(self, hidden: list):
        """Memory keys and values, L x [G, S*M, D] each: the base k_proj / v_proj (bias included) plus the
        transfer LoRA, heads laid out as the base model's attention lays them out."""
        keys, values = [], []
        with self.transfer.applied(self.base):
            for h, layer in zip(hidden, self.base.model.layers):
                attn = layer.self_attn
                S, M, D = h.shape[0], h.shape[1], attn.head_dim
                for proj, out in ((attn.k_proj, keys), (attn.v_proj, values)):
                    kv = proj(h).view(S, M, -1, D)  # [S, M, G, D]
                    out.append(kv.permute(2, 0, 1, 3).reshape(kv.shape[2], S * M, D))  # [G, S*M, D]
        return keys, values

    def compress(self, segments: torch.Tensor):
        """Keys and values L x [G, S*M, D] of segments [S, l]."""
        return self.transfer_head(self.encode(segments))

    def add(self, memory: Memory, segments: torch.Tensor):
        """Appends segments [S, l] to `memory`; the document's first segment starts it with the sink."""
        if not memory.keys and self.sink_tokens > 0:
            memory.append(*self.sink(segments[0, :self.sink_tokens]))
            memory.sink = self.sink_tokens
        memory.append(*self.compress(segments))

    def sink(self, first: torch.Tensor):
        """The attention sink: the decoder's own un-rotated keys and values L x [G, k, D] of the document's
        first k tokens `first` [k], read by the base model with the decoder's adapters (none: the plain model)."""
        body, k = self.base.model, first.shape[0]
        hidden = [None] * len(body.layers)
        handles = [layer.input_layernorm.register_forward_hook(
            lambda mod, args, out, i=i: hidden.__setitem__(i, out.clone()))
            for i, layer in enumerate(body.layers)]
        adapters = self.decoder.applied(self.base) if self.decoder is not None else contextlib.nullcontext()
        keys, values = [], []
        with adapters:
            try:
                body(input_ids=first[None], use_cache=False)
            finally:
                for handle in handles:
                    handle.remove()
            for h, layer in zip(hidden, body.layers):
                attn = layer.self_attn
                for proj, out in ((attn.k_proj, keys), (attn.v_proj, values)):
                    kv = proj(h).view(k, -1, attn.head_dim)  # [k, G, D]
                    out.append(kv.permute(1, 0, 2).contiguous())  # [G, k, D]
        return keys, values
