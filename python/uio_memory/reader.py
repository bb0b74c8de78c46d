"""Reading a token stream with memory, piece by piece, as uio's MemoryReader does (docs/method.md §6): whole segments are compressed into memory, the current segment's tokens stay in the
decoder's KV cache, and when they reach l they are compressed and leave the cache. Generation and
sampling build on it (generate.py); the passes themselves are compressor.py and decoder.py."""
import torch

from .compressor import Compressor, Memory
from .decoder import SegmentDecoder


class MemoryReader:
    """State of one stream: its memory, how many segments it holds, and the current segment's tokens."""

    def __init__(self, compressor: Compressor, decoder: SegmentDecoder, chunk: int = 8):
        if chunk < 1:
            raise ValueError(f"uio_memory: chunk must be >= 1, got {chunk}")
        self.compressor, self.decoder, self.chunk = compressor, decoder, chunk
        self.l = compressor.l
        self.memory = Memory()
        self.segments = 0  # compressed so far
        self.pending = []  # token ids of the current, incomplete segment (in the decoder's cache)

    @property
    def device(self):
        return self.compressor.base.get_input_embeddings().weight.device

    @torch.no_grad()
    def read(self, ids) -> torch.Tensor:
        """Reads token ids (a prompt, or one generated token); returns the logits [V] after the last one.
        Whole segments whose logits nobody needs are compressed without being decoded, `chunk` per pass."""
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("uio_memory: nothing to read")
        l, i, last = self.l, 0, None
        if not self.pending:
            whole = (len(ids) - 1) // l
            for done in range(0, whole, self.chunk):
                count = min(self.chunk, whole - done)
                self._compress(ids[i:i + count * l], count)
                i += count * l
        while i < len(ids):
            piece = ids[i:i + l - len(self.pending)]
            i += len(piece)
            completes = len(self.pending) + len(piece) == l
            if completes and not self.pending and i < len(ids):
                self.pending = piece  # a whole segment with more tokens after it: compress only
            else:
                hidden = self._decode(piece)
                if i == len(ids):
                    last = self.compressor.base.get_output_embeddings()(hidden[0, -1])  # [V]
            if completes:
                self._compress(self.pending, 1)
                self.pending = []
        return last

    def _decode(self, piece: list) -> torch.Tensor:
        if not self.pending:
            self.decoder.start(self.segments, self.memory)
        hidden = self.decoder.read(torch.tensor([piece], dtype=torch.long, device=self.device))  # [1, T, C]
        self.pending.extend(piece)
        return hidden

    def _compress(self, ids: list, count: int):
        segments = torch.tensor(ids, dtype=torch.long, device=self.device).view(count, self.l)  # [S, l]
        self.compressor.add(self.memory, segments)
        self.segments += count
