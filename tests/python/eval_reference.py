"""Independent reference for `uio eval`'s perplexity harness (trainer/evaluate.h): plain HF transformers
on the same tokens. For each prefix length L and method, the summed cross-entropy of the last SCORED
predictions of ids[:L]: truncate = the model on the last WINDOW tokens only; linear / dynamic / yarn =
HF's own rope_parameters of that type with factor max(1, L / max_position_embeddings); ntk = the
NTK-aware base change theta * factor^(d / (d - 2)) with plain RoPE. Run by tests/eval_test.cpp.

usage: eval_reference.py MODEL_DIR IDS.safetensors SCORED WINDOW LENGTHS(comma) OUT.json"""
import copy
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM


def tail_loss(model, ids, scored):
    with torch.no_grad():
        logits = model(input_ids=ids.unsqueeze(0)).logits[0].double()
    logp = torch.log_softmax(logits[-scored - 1:-1], dim=-1)
    return float(-logp.gather(1, ids[-scored:].unsqueeze(1)).sum())


def main(model_dir, ids_path, scored, window, lengths, out):
    scored, window = int(scored), int(window)
    ids = load_file(ids_path)["ids"].long()
    base = AutoConfig.from_pretrained(model_dir)
    theta = base.rope_parameters["rope_theta"]
    trained = base.max_position_embeddings
    head_dim = base.hidden_size // base.num_attention_heads
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    result = {}
    for L in map(int, lengths.split(",")):
        prefix = ids[:L]
        factor = max(1.0, L / trained)
        row = {"truncate": tail_loss(plain, prefix[-min(L, window):], scored)}
        for method in ("linear", "ntk", "dynamic", "yarn"):
            config = copy.deepcopy(base)
            if factor == 1.0:
                config.rope_parameters = {"rope_type": "default", "rope_theta": theta}
            elif method == "ntk":
                config.rope_parameters = {"rope_type": "default",
                                          "rope_theta": theta * factor ** (head_dim / (head_dim - 2))}
            else:
                config.rope_parameters = {"rope_type": method, "rope_theta": theta, "factor": factor}
                if method == "yarn":
                    config.rope_parameters["original_max_position_embeddings"] = trained
            model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32).eval()
            row[method] = tail_loss(model, prefix, scored)
        result[str(L)] = row
    json.dump(result, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:7])
