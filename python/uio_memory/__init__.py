"""uio_memory: run a memory compressor trained by uio (UIO-LLMs, arXiv 2406.18173) on a Hugging Face
transformers Llama-family model. `UioMemoryModel.from_export(base_model, export_dir)` is the entry."""
from .export import ExportError, UioConfig
from .model import UioMemoryModel
from .reader import MemoryReader
from .sampling import sample_token

__all__ = ["ExportError", "MemoryReader", "UioConfig", "UioMemoryModel", "sample_token"]
