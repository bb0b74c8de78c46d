"""RoPE of the decoder's memory + segment sequence (uio_config.json's memory_rope): the inverse
frequencies of each kind, computed in float32 as uio's model/rope.cpp does, and the rotary module put in
place of the base model's own for a decoder pass. `none` keeps the base model's own rotary embedding
(its own scaling included). The encoder always uses the base model's own RoPE; that is not here."""
import contextlib
import math

import torch

from .export import ExportError

# YaRN's constants as uio sets them for memory_rope = yarn (the defaults of HF's rope_parameters).
_YARN_BETA_FAST, _YARN_BETA_SLOW = 32.0, 1.0


def _base_inv_freq(dim: int, theta: float) -> torch.Tensor:
    """1 / theta^(2i/D), i = 0..D/2-1, float32."""
    exponent = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (theta ** exponent)


def _yarn_inv_freq(dim: int, theta: float, factor: float, original: int):
    """YaRN (arXiv 2309.00071): interpolate low frequencies, keep high ones, ramp in between; cos/sin
    scaled by 0.1 ln(factor) + 1."""
    def correction_dim(rotations):
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(_YARN_BETA_FAST)), 0.0)
    high = min(math.ceil(correction_dim(_YARN_BETA_SLOW)), float(dim - 1))
    if low == high:
        high += 0.001  # a zero-width ramp would divide by zero
    pos_freqs = theta ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    ramp = ((torch.arange(dim // 2).float() - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # share of the unscaled frequency
    scaling = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return interpolation * (1 - keep) + extrapolation * keep, scaling


class MemoryRope:
    """cos/sin of decoder positions for one segment. Memory entry p sits at position p and token j of
    segment t at t*M + j (docs/method.md §5: one position sequence); dynamic NTK scales to the segment's whole span
    t*M + l, so a segment's memory and tokens share frequencies however many of its tokens are read."""

    def __init__(self, kind: str, factor: float, model_config, own_rotary: torch.nn.Module, config_path: str):
        self.kind, self.factor, self.own_rotary, self.config_path = kind, factor, own_rotary, config_path
        self.max_position = model_config.max_position_embeddings
        heads = model_config.num_attention_heads
        self.head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
        params = getattr(model_config, "rope_parameters", None) or {}
        self.theta = float(params.get("rope_theta", getattr(model_config, "rope_theta", 10000.0)))
        self.attention_scaling = 1.0
        d = self.head_dim
        if kind == "linear":
            self._inv_freq = _base_inv_freq(d, self.theta) / factor
        elif kind == "ntk":  # NTK-aware, fixed: stretch the base so the longest wavelength grows by `factor`
            self._inv_freq = _base_inv_freq(d, self.theta * factor ** (d / (d - 2)))
        elif kind == "yarn":
            self._inv_freq, self.attention_scaling = _yarn_inv_freq(d, self.theta, factor, self.max_position)
        else:
            self._inv_freq = _base_inv_freq(d, self.theta)

    def inv_freq(self, span: int) -> torch.Tensor:
        if self.kind != "dynamic" or span <= self.max_position:
            return self._inv_freq
        d = self.head_dim
        base = self.theta * (self.factor * span / self.max_position - (self.factor - 1)) ** (d / (d - 2))
        return _base_inv_freq(d, base)

    def check_span(self, segment: int, span: int, l: int, M: int):
        if self.kind == "none" and span > self.max_position:
            raise ExportError(
                f"{self.config_path}: memory_rope = none, and segment {segment} needs decoder positions up to {span} "
                f"but the base model was trained on {self.max_position}; with l = {l} and M = {M} a document may "
                f"have at most {(self.max_position - l) // M + 1} segments. Train the compressor with memory_rope = "
                f"dynamic (or linear, ntk, yarn) for longer documents")

    def cos_sin(self, x: torch.Tensor, positions: torch.Tensor, span: int):
        """cos, sin [B, T, D] in x's dtype for positions [B, T]."""
        if self.kind == "none":
            return self.own_rotary(x, positions)
        freq = self.inv_freq(span).to(device=positions.device)
        angles = positions[..., None].float() * freq  # [B, T, D/2]
        emb = torch.cat((angles, angles), dim=-1)  # [B, T, D]
        return ((emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype))

    @contextlib.contextmanager
    def installed(self, body: torch.nn.Module, span: int):
        """The base model's body computes its tokens' cos/sin with this RoPE inside the block."""
        if self.kind == "none":
            yield
            return
        own = body.rotary_emb
        body.rotary_emb = _SpanRotary(self, span)
        try:
            yield
        finally:
            body.rotary_emb = own


class _SpanRotary(torch.nn.Module):
    """Stands in for the model's rotary embedding (same call: x, position_ids -> cos, sin)."""

    def __init__(self, rope: MemoryRope, span: int):
        super().__init__()
        self.rope, self.span = rope, span

    def forward(self, x, position_ids):
        return self.rope.cos_sin(x, position_ids, self.span)
