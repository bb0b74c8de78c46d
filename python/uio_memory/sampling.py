"""Choosing the next token from logits, exactly as uio's sampler does (model/generate.cpp), so a seed
gives the same draws in both: greedy at temperature 0, else softmax(logits / temperature) on the CPU
in float32, cut to the top-k ids and to the smallest set whose probability reaches top_p."""
import torch


def sample_token(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> int:
    """logits [V] -> one token id. `generator`: a CPU generator (None: torch's global one)."""
    if logits.dim() != 1:
        raise ValueError(f"uio_memory: sample_token expects logits [V], got {list(logits.shape)}")
    if temperature <= 0:
        return int(logits.argmax())
    scaled = logits.to("cpu", torch.float32) / temperature
    if 0 < top_k < scaled.numel():
        kth = scaled.topk(top_k).values.min()
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = scaled.sort(dim=0, descending=True)
        probs = ordered.softmax(0)
        # Keep the smallest prefix whose mass reaches top_p: drop ids whose preceding mass already does.
        drop = (probs.cumsum(0) - probs) >= top_p
        scaled = scaled.scatter(0, order, ordered.masked_fill(drop, float("-inf")))
    return int(torch.multinomial(scaled.softmax(0), 1, replacement=False, generator=generator))
