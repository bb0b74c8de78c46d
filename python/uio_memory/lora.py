"""One LoRA adapter set (the encoder's, the transfer head's or the decoder's) applied to the base model's own linear
layers for the duration of one pass, through forward hooks: the base weights stay where the user put
them, exactly once in memory. Reading adapters from disk lives in export.py."""
import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LoraSpec:
    """What uio_config.json says of an adapter set: rank r, alpha (update scale alpha / r), targets."""

    rank: int
    alpha: float
    dropout: float
    targets: tuple

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoraAdapter(torch.nn.Module):
    """delta(x) = (alpha / r) B (A x) for the module at `target` (a path inside the base model).
    A [r, in] and B [out, r] stay float32 buffers (they are not trained here) and are cast to the
    activations' dtype per call, as uio does, so a bf16 model gets a bf16 delta."""

    def __init__(self, target: str, lora_A: torch.Tensor, lora_B: torch.Tensor, scale: float):
        super().__init__()
        self.target = target
        self.scale = scale
        self.register_buffer("lora_A", lora_A.float().contiguous())
        self.register_buffer("lora_B", lora_B.float().contiguous())

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.lora_A.to(device=x.device, dtype=x.dtype))  # [..., r]
        return F.linear(h, self.lora_B.to(device=x.device, dtype=x.dtype)) * self.scale  # [..., out]


class LoraSet(torch.nn.Module):
    """All adapters of one set. `applied(base)` puts them on the base model's projections inside a
    `with` block and takes them off again, even when the pass raises."""

    def __init__(self, spec: LoraSpec, adapters: list):
        super().__init__()
        self.spec = spec
        self.adapters = torch.nn.ModuleList(adapters)

    @contextlib.contextmanager
    def applied(self, base: torch.nn.Module):
        handles = []
        try:
            for adapter in self.adapters:
                module = base.get_submodule(adapter.target)
                handles.append(module.register_forward_hook(
                    lambda mod, args, out, adapter=adapter: out + adapter.delta(args[0])))
            yield
        finally:
            for handle in handles:
                handle.remove()
