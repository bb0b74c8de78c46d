"""Loads an export written by `uio export` with PEFT, on the HF base model, as another tool would:
peft.PeftModel.from_pretrained(base, EXPORT/encoder_adapter) and .../transfer_adapter (and
.../decoder_adapter when the export has one), and writes every layer's LoRA'd projections of the inputs in
INPUTS ("x", [N, hidden]; "xo", [N, heads * head_dim] for o_proj) to OUT as layers.{i}.{proj} tensors
(q_proj/v_proj of the encoder adapter, k_proj/v_proj of the transfer adapter, q/k/v/o_proj of the decoder
adapter, under the prefixes encoder., transfer. and decoder.). Run by tests/export_test.cpp (a check at test time, not a reference generator: tests/reference/ holds those).

usage: peft_export.py EXPORT BASE INPUTS OUT   (BASE: an HF directory or a .gguf file)"""
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


def load_base(path):
    if path.endswith(".gguf"):
        return AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                    dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def main(export, base, inputs, out):
    tensors = load_file(inputs)
    x = tensors["x"]
    result = {}
    adapters = [("encoder", ("q_proj", "v_proj")), ("transfer", ("k_proj", "v_proj"))]
    if os.path.isdir(os.path.join(export, "decoder_adapter")):  # beyond the paper; o_proj reads INPUTS' "xo"
        adapters.append(("decoder", ("q_proj", "k_proj", "v_proj", "o_proj")))
    for adapter, projections in adapters:
        model = PeftModel.from_pretrained(load_base(base), os.path.join(export, adapter + "_adapter")).eval()
        layers = model.base_model.model.model.layers
        with torch.no_grad():
            for i, layer in enumerate(layers):
                for proj in projections:
                    inp = tensors["xo"] if proj == "o_proj" else x
                    result[f"{adapter}.layers.{i}.{proj}"] = getattr(layer.self_attn, proj)(inp).contiguous()
    save_file(result, out)


if __name__ == "__main__":
    main(*sys.argv[1:5])
