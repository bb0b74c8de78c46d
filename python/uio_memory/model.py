"""UioMemoryModel: a Hugging Face Llama-family causal LM plus a compressor that `uio export` wrote, for
teacher-forced logits, perplexity and generation over documents far longer than the model's window.
It holds the user's model (one copy of its weights; adapters go on per pass) and the export's few
tensors; the passes are compressor.py, decoder.py and reader.py, the files export.py reads.
Dims: n document tokens, T full segments, l segment length, V vocabulary, C model dim."""
import pathlib

import torch
import torch.nn.functional as F

from .compressor import Compressor, Memory
from .decoder import SegmentDecoder
from .export import (CONFIG, DECODER_ADAPTER, ENCODER_ADAPTER, MEMORY_EMBEDDING, TRANSFER_ADAPTER, ExportError,
                     UioConfig, read_adapter, read_memory_embedding)
from .reader import MemoryReader
from .rope import MemoryRope
from .sampling import sample_token

# Attention implementations that take the explicit 4-D masks compression and memory need.
_MASKED_ATTENTION = ("sdpa", "eager")


class UioMemoryModel(torch.nn.Module):
    """`base` with the compressor of an export. Device and dtype follow the base model; inference only
    (training is `uio train`)."""

    def __init__(self, base, config: UioConfig, encoder, transfer, memory_embedding: torch.Tensor, chunk: int = 8,
                 decoder=None):
        super().__init__()
        if chunk < 1:
            raise ValueError(f"uio_memory: chunk must be >= 1, got {chunk}")
        self.base, self.config, self.chunk = base, config, chunk
        self.encoder, self.transfer, self.decoder = encoder, transfer, decoder  # decoder: None = frozen
        self.register_buffer("memory_embedding", memory_embedding)
        self.rope = MemoryRope(config.memory_rope, config.memory_rope_factor, base.config, base.model.rotary_emb,
                               config.path)

    @classmethod
    def from_export(cls, base_model, export_dir, chunk: int = 8) -> "UioMemoryModel":
        """Loads the export directory `export_dir` for `base_model` (an already loaded LlamaForCausalLM,
        Qwen2ForCausalLM, MistralForCausalLM, ...). The export is checked against the model's shapes;
        errors (ExportError) name the file and the key. `chunk`: segments compressed per batched pass."""
        export_dir = pathlib.Path(export_dir)
        if not hasattr(base_model, "model") or not hasattr(base_model.model, "layers"):
            raise ExportError(f"uio_memory: the base model ({type(base_model).__name__}) is not a Llama-family "
                              f"causal LM with model.layers; pass e.g. a LlamaForCausalLM, not a wrapper around one")
        attention = getattr(base_model.config, "_attn_implementation", None) or "eager"
        if attention not in _MASKED_ATTENTION:
            raise ExportError(f"uio_memory: the base model uses attn_implementation='{attention}', which cannot take "
                              f"the memory's 4-D attention masks; load it with attn_implementation='sdpa' or 'eager'")
        config = UioConfig.read(export_dir / CONFIG)
        config.check_base(base_model.config)
        encoder = read_adapter(export_dir / ENCODER_ADAPTER, config.encoder_lora, "encoder_lora", config.path,
                               base_model)
        transfer = read_adapter(export_dir / TRANSFER_ADAPTER, config.transfer_lora, "transfer_lora", config.path,
                                base_model)
        decoder = None  # beyond the paper: adapters on the decoder's own projections, when the export has them
        if config.decoder_lora is not None:
            decoder = read_adapter(export_dir / DECODER_ADAPTER, config.decoder_lora, "decoder_lora", config.path,
                                   base_model)
        elif (export_dir / DECODER_ADAPTER).exists():
            raise ExportError(f"{config.path}: has no key 'decoder_lora', but {export_dir / DECODER_ADAPTER} exists; "
                              f"the export is inconsistent (write it again with `uio export`)")
        embedding = read_memory_embedding(export_dir / MEMORY_EMBEDDING, base_model.config.hidden_size)
        device = base_model.get_input_embeddings().weight.device  # the export's tensors go where the model is
        return cls(base_model, config, encoder.to(device), transfer.to(device), embedding.to(device), chunk,
                   decoder.to(device) if decoder is not None else None).eval()

    # The passes: built per call, so they always see the base model where it is now.
    def _compressor(self) -> Compressor:
        return Compressor(self.base, self.config.segment_len, self.config.num_memory_tokens, self.encoder,
                          self.transfer, self.memory_embedding, self.config.sink_tokens, self.decoder)

    def _decoder(self) -> SegmentDecoder:
        return SegmentDecoder(self.base, self.rope, self.config.segment_len, self.config.num_memory_tokens,
                              self.decoder)

    def reader(self) -> MemoryReader:
        """A fresh MemoryReader for streaming a long input piece by piece (generate() uses one)."""
        return MemoryReader(self._compressor(), self._decoder(), self.chunk)

    def _ids(self, input_ids) -> torch.Tensor:
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1 or ids.numel() == 0:
            raise ValueError(f"uio_memory: expected token ids [n] or [1, n] with n > 0, got shape {list(ids.shape)}")
        return ids.to(self.base.get_input_embeddings().weight.device)

    @torch.no_grad()
    def segment_logits(self, input_ids) -> torch.Tensor:
        """Teacher-forced logits [n, V] of a document: its T = n // l full segments are compressed (`chunk` at
        a time), and every segment and the residual are decoded with the memory of all earlier segments."""
        ids = self._ids(input_ids)
        l, n = self.config.segment_len, ids.numel()
        compressor, decoder, memory = self._compressor(), self._decoder(), Memory()
        head = self.base.get_output_embeddings()
        logits = []
        T = n // l
        for c0 in range(0, T, self.chunk):
            K = min(self.chunk, T - c0)
            segments = ids[c0 * l:(c0 + K) * l].view(K, l)  # [K, l]
            compressor.add(memory, segments)
            for t in range(c0, c0 + K):
                decoder.start(t, memory)
                logits.append(head(decoder.read(segments[t - c0][None]))[0])  # [l, V]
        if n % l:
            decoder.start(T, memory)
            logits.append(head(decoder.read(ids[T * l:][None]))[0])  # [n - T*l, V]
        return torch.cat(logits)  # [n, V]

    def forward(self, input_ids) -> torch.Tensor:
        return self.segment_logits(input_ids)

    @torch.no_grad()
    def perplexity(self, input_ids) -> float:
        """exp of the mean next-token cross-entropy over the document's n - 1 predictions (the last token of a
        segment predicts the first of the next, as in uio's loss), softmax in float32."""
        ids = self._ids(input_ids)
        if ids.numel() < 2:
            raise ValueError("uio_memory: perplexity needs at least 2 tokens")
        logits = self.segment_logits(ids)
        return float(torch.exp(F.cross_entropy(logits[:-1].float(), ids[1:])))

    @torch.no_grad()
    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 eos_token_id=None, seed: int | None = None) -> torch.Tensor:
        """New token ids [k] (the prompt excluded) after reading `prompt_ids` segment by segment; generated
        tokens fill the current segment, which is compressed when it reaches l, as `uio generate --memory`
        does. Stops after max_new_tokens or after emitting eos_token_id (an id, a list of ids as HF configs
        give, or None: never). Greedy at temperature 0; else a seed gives uio's own draws (a private CPU
        generator), None uses torch's global generator."""
        ids = self._ids(prompt_ids)
        stop = set() if eos_token_id is None else {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        reader = self.reader()
        logits = reader.read(ids.tolist())  # [V]
        out = []
        for step in range(max_new_tokens):
            token = sample_token(logits, temperature, top_k, top_p, generator)
            out.append(token)
            if token in stop or step + 1 == max_new_tokens:
                break
            logits = reader.read([token])
        return torch.tensor(out, dtype=torch.long)
