"""A damaged export, or one made for another model, is refused with a message that names the file and
the key or tensor, what was found and what was expected."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ref, tiny_model, write_export
from uio_memory import ExportError, UioMemoryModel


@pytest.fixture
def setup(tmp_path, gen):
    model = tiny_model("llama", 5150)
    spec = ref.Spec(l=16, M=4)
    export = write_export(tmp_path / "export", model, ref.make_uio_weights(model, spec, gen), spec)
    return model, export


def _edit_json(path, edit):
    j = json.loads(path.read_text())
    edit(j)
    path.write_text(json.dumps(j))


def _refused(model, export, *fragments):
    with pytest.raises(ExportError) as e:
        UioMemoryModel.from_export(model, export)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)


def test_the_unchanged_export_loads(setup):
    UioMemoryModel.from_export(*setup)


def test_a_missing_directory_or_config_says_what_an_export_holds(setup, tmp_path):
    model, export = setup
    _refused(model, tmp_path / "nothing", "nothing/uio_config.json: no such file", "encoder_adapter/")


def test_a_training_checkpoint_is_sent_to_uio_export(setup):
    model, export = setup
    _edit_json(export / "uio_config.json", lambda j: j.update(format="uio-memory"))
    _refused(model, export, "uio_config.json: format is 'uio-memory'", "uio export --checkpoint")


@pytest.mark.parametrize("key, value, message", [
    ("num_layers", 4, "key 'base_model.num_layers' is 4"),
    ("hidden_size", 96, "key 'base_model.hidden_size' is 96"),
    ("vocab_size", 161, "key 'base_model.vocab_size' is 161"),
    ("num_kv_heads", 4, "key 'base_model.num_kv_heads' is 4"),
])
def test_an_export_for_another_base_model_names_the_key(setup, key, value, message):
    model, export = setup
    _edit_json(export / "uio_config.json", lambda j: j["base_model"].update({key: value}))
    _refused(model, export, "uio_config.json: " + message, "load the base model the compressor was trained on")


@pytest.mark.parametrize("edit, message", [
    (lambda j: j.pop("segment_len"), "missing key 'segment_len' (int)"),
    (lambda j: j.update(num_memory_tokens="4"), "key 'num_memory_tokens' is '4', expected int"),
    (lambda j: j.update(num_memory_tokens=5), "segment_len (16) must be a positive multiple of num_memory_tokens (5)"),
    (lambda j: j.update(memory_rope="longrope"), "key 'memory_rope' is 'longrope', expected one of none, linear"),
    (lambda j: j.update(memory_rope_factor=0), "key 'memory_rope_factor' is 0.0, expected > 0"),
    (lambda j: j["encoder_lora"].pop("rank"), "missing key 'encoder_lora.rank' (int)"),
])
def test_a_malformed_config_names_the_key(setup, edit, message):
    model, export = setup
    _edit_json(export / "uio_config.json", edit)
    _refused(model, export, "uio_config.json: " + message)


def test_memory_rope_scaling_on_a_model_that_scales_its_own_rope_is_refused(setup, tmp_path, gen):
    _, export = setup
    _edit_json(export / "uio_config.json", lambda j: j.update(memory_rope="dynamic", memory_rope_factor=2.0))
    scaled = tiny_model("llama", 6, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})
    _refused(scaled, export, "key 'memory_rope' is 'dynamic'", "already scales it ('linear')")


def test_adapter_config_that_disagrees_with_uio_config_is_refused(setup):
    model, export = setup
    _edit_json(export / "transfer_adapter" / "adapter_config.json", lambda j: j.update(r=5))
    _refused(model, export, "transfer_adapter/adapter_config.json: key 'r' is 5", "transfer_lora has 3")


def test_missing_and_misshapen_adapter_tensors_name_the_tensor(setup):
    model, export = setup
    weights_file = export / "encoder_adapter" / "adapter_model.safetensors"
    original = load_file(str(weights_file))
    name = "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight"
    save_file({k: v for k, v in original.items() if k != name}, str(weights_file))
    _refused(model, export, f"encoder_adapter/adapter_model.safetensors: missing tensor '{name}'")
    save_file({**original, name: original[name][:, :3].contiguous()}, str(weights_file))
    _refused(model, export, f"tensor '{name}' has shape [32, 3]", "expects [32, 4]")
    save_file({**original, "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight": torch.randn(4, 64)},
              str(weights_file))
    _refused(model, export, "tensor 'base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight' has no place")


def test_a_wrong_memory_embedding_is_refused(setup):
    model, export = setup
    path = export / "memory_embedding.safetensors"
    save_file({"memory_embedding": torch.randn(65)}, str(path))
    _refused(model, export, "memory_embedding.safetensors: tensor 'memory_embedding' has shape [65]", "expects [64]")
    path.unlink()
    _refused(model, export, "memory_embedding.safetensors: no such file")


def test_flash_attention_is_refused_for_its_missing_4d_masks(setup):
    model, export = setup
    model.config._attn_implementation = "flash_attention_2"
    _refused(model, export, "attn_implementation='flash_attention_2'", "'sdpa' or 'eager'")


def test_too_long_a_document_for_plain_memory_positions_names_the_limit(setup, gen):
    model, export = setup
    uio = UioMemoryModel.from_export(model, export)  # window 256, l 16, M 4: at most 61 segments
    ids = torch.randint(model.config.vocab_size, (62 * 16,), generator=gen)
    with pytest.raises(ExportError, match=re.escape("at most 61 segments")):
        uio.segment_logits(ids)


def test_decoder_adapters_named_in_the_config_but_missing_or_unnamed_but_present_are_refused(setup):
    model, export = setup
    spec = {"rank": 2, "alpha": 4.0, "dropout": 0.0, "targets": ["q_proj", "o_proj"]}
    _edit_json(export / "uio_config.json", lambda j: j.update(decoder_lora=spec))
    _refused(model, export, "decoder_adapter/adapter_config.json: no such file")
    _edit_json(export / "uio_config.json", lambda j: j.update(decoder_lora=dict(spec, rank=0)))
    _refused(model, export, "key 'decoder_lora.rank' is 0, expected > 0")
    _edit_json(export / "uio_config.json", lambda j: j.pop("decoder_lora"))
    (export / "decoder_adapter").mkdir()
    _refused(model, export, "has no key 'decoder_lora'", "decoder_adapter")
