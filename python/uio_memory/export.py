"""Reading the directory `uio export` writes (uio_config.json, encoder_adapter/ and transfer_adapter/ as
PEFT LoRA adapters, decoder_adapter/ when the compressor has decoder adapters, memory_embedding.safetensors)
and checking it against the base model the user
loaded. Every error names the file and the key or tensor, what was found, what was expected, and
the fix. The memory forward itself lives in compressor.py and decoder.py."""
import json
import pathlib
import re
from dataclasses import dataclass

import torch
from peft import LoraConfig
from safetensors import safe_open

from .lora import LoraAdapter, LoraSet, LoraSpec

MEMORY_ROPE_KINDS = ("none", "linear", "ntk", "dynamic", "yarn")
ENCODER_ADAPTER = "encoder_adapter"
TRANSFER_ADAPTER = "transfer_adapter"
DECODER_ADAPTER = "decoder_adapter"
MEMORY_EMBEDDING = "memory_embedding.safetensors"
CONFIG = "uio_config.json"

# PEFT's name of a LoRA weight on a causal LM: base_model.model.<module path>.lora_{A,B}.weight.
_PEFT_NAME = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")


class ExportError(ValueError):
    """An export directory that cannot serve this base model; the message says where and why."""


@dataclass(frozen=True)
class BaseShape:
    """The shapes of a base model that a compressor depends on (uio_config.json's base_model keys)."""

    num_layers: int
    hidden_size: int
    vocab_size: int
    num_kv_heads: int
    head_dim: int

    @staticmethod
    def of(config) -> "BaseShape":
        heads = config.num_attention_heads
        return BaseShape(config.num_hidden_layers, config.hidden_size, config.vocab_size,
                         getattr(config, "num_key_value_heads", None) or heads,
                         getattr(config, "head_dim", None) or config.hidden_size // heads)


@dataclass(frozen=True)
class UioConfig:
    """uio_config.json of an export: l, M, the decoder's memory RoPE, the adapter specs, the base."""

    path: str
    segment_len: int          # l
    num_memory_tokens: int    # M
    memory_rope: str          # none | linear | ntk | dynamic | yarn
    memory_rope_factor: float
    sink_tokens: int          # the document's first tokens kept as raw keys/values ahead of the memory
    encoder_lora: LoraSpec
    transfer_lora: LoraSpec
    base_path: str            # where the base model was when the compressor was trained
    base_shape: BaseShape
    decoder_lora: LoraSpec | None = None  # beyond the paper; None (absent): the frozen decoder

    @staticmethod
    def read(path: pathlib.Path) -> "UioConfig":
        try:
            j = json.loads(path.read_text())
        except FileNotFoundError:
            raise ExportError(f"{path}: no such file; from_export expects a directory written by `uio export` "
                              f"({CONFIG}, {ENCODER_ADAPTER}/, {TRANSFER_ADAPTER}/, {MEMORY_EMBEDDING})") from None
        except json.JSONDecodeError as e:
            raise ExportError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(j, dict):
            raise ExportError(f"{path}: expected a JSON object, found {type(j).__name__}")
        fmt = j.get("format")
        if fmt == "uio-memory":
            raise ExportError(f"{path}: format is 'uio-memory' (a training checkpoint's compressor); write an export "
                              f"first: uio export --checkpoint DIR --out EXPORT_DIR")
        if fmt != "uio-export":
            raise ExportError(f"{path}: key 'format' is {fmt!r}, expected 'uio-export' (written by `uio export`)")
        if j.get("version") != 1:
            raise ExportError(f"{path}: key 'version' is {j.get('version')!r}; this package reads version 1")

        def get(obj, key, kind, where=""):
            name = where + key
            if key not in obj:
                raise ExportError(f"{path}: missing key '{name}' ({kind.__name__})")
            value = obj[key]
            ok = isinstance(value, kind) if kind is not float else isinstance(value, (int, float))
            if not ok or isinstance(value, bool):
                raise ExportError(f"{path}: key '{name}' is {value!r}, expected {kind.__name__}")
            return float(value) if kind is float else value

        def lora(key):
            obj = get(j, key, dict)
            targets = get(obj, "targets", list, key + ".")
            if not targets or not all(isinstance(t, str) for t in targets):
                raise ExportError(f"{path}: key '{key}.targets' is {targets!r}, expected a list of projection names")
            spec = LoraSpec(get(obj, "rank", int, key + "."), get(obj, "alpha", float, key + "."),
                            get(obj, "dropout", float, key + "."), tuple(targets))
            if spec.rank <= 0:
                raise ExportError(f"{path}: key '{key}.rank' is {spec.rank}, expected > 0")
            return spec

        l, M = get(j, "segment_len", int), get(j, "num_memory_tokens", int)
        if l <= 0 or M <= 0 or l % M:
            raise ExportError(f"{path}: segment_len ({l}) must be a positive multiple of num_memory_tokens ({M})")
        kind = get(j, "memory_rope", str)
        if kind not in MEMORY_ROPE_KINDS:
            raise ExportError(f"{path}: key 'memory_rope' is {kind!r}, expected one of {', '.join(MEMORY_ROPE_KINDS)}")
        factor = get(j, "memory_rope_factor", float)
        if not factor > 0:
            raise ExportError(f"{path}: key 'memory_rope_factor' is {factor}, expected > 0")
        sink = j.get("sink_tokens", 0)  # absent in exports written before the option
        if not isinstance(sink, int) or isinstance(sink, bool) or not 0 <= sink <= l:
            raise ExportError(f"{path}: key 'sink_tokens' is {sink!r}, expected an integer in [0, segment_len = {l}]")
        base = get(j, "base_model", dict)
        shape = BaseShape(*(get(base, key, int, "base_model.")
                            for key in ("num_layers", "hidden_size", "vocab_size", "num_kv_heads", "head_dim")))
        decoder = lora("decoder_lora") if "decoder_lora" in j else None  # absent when off
        return UioConfig(str(path), l, M, kind, factor, sink, lora("encoder_lora"), lora("transfer_lora"),
                         str(base.get("path", "")), shape, decoder)

    def check_base(self, model_config):
        """Throws when the loaded base model is not shaped like the one the compressor was trained on."""
        have = BaseShape.of(model_config)
        hf_key = {"num_layers": "num_hidden_layers", "num_kv_heads": "num_key_value_heads"}
        for key, want in vars(self.base_shape).items():
            if getattr(have, key) != want:
                raise ExportError(
                    f"{self.path}: key 'base_model.{key}' is {want} (the compressor was trained on "
                    f"{self.base_path or 'another model'}), but this model has {getattr(have, key)} "
                    f"({hf_key.get(key, key)} in its config); load the base model the compressor was trained on")
        rope_type = rope_type_of(model_config)
        if self.memory_rope != "none" and rope_type != "default":
            raise ExportError(f"{self.path}: key 'memory_rope' is '{self.memory_rope}', which replaces the base "
                              f"model's RoPE, but this model already scales it ('{rope_type}'); such a compressor "
                              f"must be trained with memory_rope = none")


def rope_type_of(model_config) -> str:
    """The base model's RoPE kind ('default' when unscaled), from transformers 5's rope_parameters or the
    older rope_scaling."""
    params = getattr(model_config, "rope_parameters", None) or getattr(model_config, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default"))
    return "default" if kind in (None, "none") else kind


def read_adapter(directory: pathlib.Path, spec: LoraSpec, spec_key: str, config_path: str,
                 base: torch.nn.Module) -> LoraSet:
    """One PEFT adapter directory as a LoraSet on `base`: its adapter_config.json must agree with
    uio_config.json's `spec_key`, and every (layer, target) pair needs lora_A [r, in] and lora_B [out, r]
    fitting the base model's own projection."""
    config_file = directory / "adapter_config.json"
    if not config_file.is_file():
        raise ExportError(f"{config_file}: no such file; expected the PEFT LoRA adapter that `uio export` writes")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{config_file}: not valid JSON ({e})") from None
    if raw.get("peft_type") != "LORA":
        raise ExportError(f"{config_file}: key 'peft_type' is {raw.get('peft_type')!r}, expected 'LORA'")
    peft = LoraConfig.from_pretrained(str(directory))
    if peft.use_rslora or peft.use_dora:
        raise ExportError(f"{config_file}: rsLoRA and DoRA adapters are not what uio writes (use_rslora / use_dora)")
    targets = peft.target_modules if not isinstance(peft.target_modules, str) else [peft.target_modules]
    for key, found, want in (("r", peft.r, spec.rank), ("lora_alpha", float(peft.lora_alpha), spec.alpha),
                             ("target_modules", sorted(targets), sorted(spec.targets))):
        if found != want:
            raise ExportError(f"{config_file}: key '{key}' is {found}, but {config_path} says {spec_key} has {want}; "
                              f"the export is inconsistent (write it again with `uio export`)")

    weights_file = directory / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ExportError(f"{weights_file}: no such file; expected the adapter's weights")
    tensors = {}
    with safe_open(str(weights_file), framework="pt") as f:
        for name in f.keys():
            match = _PEFT_NAME.fullmatch(name)
            if not match:
                raise ExportError(f"{weights_file}: tensor '{name}' is not a PEFT LoRA weight "
                                  f"(base_model.model.<module>.lora_A|B.weight)")
            tensors[(match.group(1), match.group(2))] = f.get_tensor(name)

    adapters = []
    layers = base.model.layers
    for i, layer in enumerate(layers):
        for target in spec.targets:
            found = [n for n, _ in layer.named_modules() if n.split(".")[-1] == target]
            if len(found) != 1:
                raise ExportError(f"{config_path}: {spec_key} targets '{target}', which layer {i} of this model "
                                  f"does not have exactly once (found {found})")
            path = f"model.layers.{i}.{found[0]}"
            module = base.get_submodule(path)
            want = {"A": (spec.rank, module.in_features), "B": (module.out_features, spec.rank)}
            pair = {}
            for ab in "AB":
                name = f"base_model.model.{path}.lora_{ab}.weight"
                t = tensors.pop((path, ab), None)
                if t is None:
                    raise ExportError(f"{weights_file}: missing tensor '{name}'")
                if tuple(t.shape) != want[ab]:
                    raise ExportError(f"{weights_file}: tensor '{name}' has shape {list(t.shape)}, this model's "
                                      f"{path} with rank {spec.rank} expects {list(want[ab])}")
                pair[ab] = t
            adapters.append(LoraAdapter(path, pair["A"], pair["B"], spec.scale))
    if tensors:
        (path, ab), _ = next(iter(tensors.items()))
        raise ExportError(f"{weights_file}: tensor 'base_model.model.{path}.lora_{ab}.weight' has no place in this "
                          f"model's layers and targets {list(spec.targets)}")
    return LoraSet(spec, adapters)


def read_memory_embedding(path: pathlib.Path, hidden_size: int) -> torch.Tensor:
    """The <mem> token's embedding [C], float32."""
    if not path.is_file():
        raise ExportError(f"{path}: no such file; expected the <mem> embedding that `uio export` writes")
    with safe_open(str(path), framework="pt") as f:
        if "memory_embedding" not in f.keys():
            raise ExportError(f"{path}: no tensor 'memory_embedding' (found {list(f.keys())})")
        t = f.get_tensor("memory_embedding")
    if tuple(t.shape) != (hidden_size,):
        raise ExportError(f"{path}: tensor 'memory_embedding' has shape {list(t.shape)}, this model's hidden_size "
                          f"expects [{hidden_size}]")
    if not torch.isfinite(t).all():
        raise ExportError(f"{path}: tensor 'memory_embedding' holds non-finite values")
    return t.float()
