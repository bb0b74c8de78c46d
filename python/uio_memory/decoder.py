"""The decoder with memory (uio docs/method.md §5): the untouched base model (with the decoder's adapters when
the export has them, beyond the paper, §13) reads segment t with the memory of
segments 0..t-1 prepended in every layer, as a transformers DynamicCache prefix of rotated keys.
Memory entry p is at position p (the sink's entries first, when the export keeps one), token j of the
segment after the P entries it reads; every token sees all of that
memory and its own segment causally (within a sliding window, for Mistral). Compression is
compressor.py. Dims: T tokens, P memory entries, G KV heads, D head dim, C model dim."""
import contextlib
import inspect

import torch
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import rotate_half

from .compressor import Memory, additive_mask
from .rope import MemoryRope


def decoder_allowed(memory: int, cached: int, tokens: int, sliding_window=None, device=None) -> torch.Tensor:
    """[T, P + cached + T] bool: all P memory entries, then the segment's own keys causally (cached ones
    first). A sliding window counts the segment's own tokens only, as uio's attention does."""
    query = torch.arange(cached, cached + tokens, device=device)[:, None]  # [T, 1] position in the segment
    key = torch.arange(cached + tokens, device=device)[None]  # [1, cached + T]
    own = key <= query
    if sliding_window:
        own &= query - key < sliding_window
    return torch.cat([torch.ones(tokens, memory, dtype=torch.bool, device=device), own], 1)


def _cache_keyword(body) -> str:
    """transformers 5.24 renamed the forward's past_key_values to cache (the old name warns)."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


class SegmentDecoder:
    """Reads the tokens of one segment, in one call or several (generation), over a KV cache that
    starts with the segment's memory prefix."""

    def __init__(self, base, rope: MemoryRope, segment_len: int, num_memory_tokens: int, decoder=None):
        self.base, self.rope = base, rope
        self.decoder = decoder  # the decoder's LoraSet, or None: the frozen base model
        self.l, self.M = segment_len, num_memory_tokens
        self.sliding_window = getattr(base.config, "sliding_window", None)  # Mistral's; Qwen2's only when on
        self._cache_keyword = _cache_keyword(base.model)
        self.segment, self.cached, self.cache, self.P = 0, 0, None, 0

    @property
    def span(self) -> int:
        """The decoder's positions in this segment: [0, P + l), P the memory entries it reads."""
        return self.P + self.l

    def start(self, segment: int, memory: Memory):
        """A fresh cache for segment t: the memory entries it reads (the sink's and t*M), keys rotated at 0..P-1."""
        P = memory.visible(segment, self.M)
        self.rope.check_span(segment, P + self.l, self.l, self.M)
        if P > memory.entries:
            raise ValueError(f"uio_memory: segment {segment} needs {P} memory entries, only {memory.entries} exist")
        self.segment, self.cached, self.cache, self.P = segment, 0, DynamicCache(), P
        if P == 0:
            return
        first = memory.keys[0]
        positions = torch.arange(P, device=first.device)[None]  # [1, P]
        cos, sin = self.rope.cos_sin(first, positions, self.span)  # [1, P, D]
        cos, sin = cos[:, None], sin[:, None]  # [1, 1, P, D]
        for i, (k, v) in enumerate(zip(memory.keys, memory.values)):
            k = k[None, :, :P]  # [1, G, P, D]
            self.cache.update(k * cos + rotate_half(k) * sin, v[None, :, :P], i)

    def read(self, ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states [1, T, C] of token ids [1, T] that continue the segment."""
        T = ids.shape[1]
        if self.cached + T > self.l:
            raise ValueError(f"uio_memory: {self.cached + T} tokens in one segment exceed segment_len {self.l}")
        P, device = self.P, ids.device
        dtype = self.base.get_input_embeddings().weight.dtype
        mask = additive_mask(decoder_allowed(P, self.cached, T, self.sliding_window, device), dtype)[None, None]
        positions = (P + self.cached + torch.arange(T, device=device))[None]  # [1, T]
        adapters = self.decoder.applied(self.base) if self.decoder is not None else contextlib.nullcontext()
        with self.rope.installed(self.base.model, self.span), adapters:
            out = self.base.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                  use_cache=True, **{self._cache_keyword: self.cache})
        self.cached += T
        return out.last_hidden_state
