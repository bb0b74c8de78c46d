"""SmolLM2-135M-Instruct, the real model (models/*.gguf from scripts/get-model.sh), loaded by HF
transformers from the same GGUF file: token ids, float32 logits and 32-token greedy continuations of
three prompts, for the C++ model and tokenizer parity tests; and, for tests/cli_test.cpp, the text of the
first prompt's first 8 greedy tokens (reference.json "greedy_text0", cut at EOS, as `uio generate`
prints it). Skipped when no GGUF is present."""
import glob
import json
import os
import pathlib

import torch
from safetensors.torch import save_file
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "In 1869, Dmitri Mendeleev published a periodic table of 63 elements; today there are 118, and",
]


def main(out: pathlib.Path):
    models = pathlib.Path(__file__).resolve().parents[2] / "models"
    files = sorted(glob.glob(str(models / "SmolLM2*.gguf")))
    if not files:
        return
    path = files[0]
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    # transformers' GGUF loader omits SmolLM2's single-digit split (its tokenizer.json and llama.cpp have it).
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32).eval()
    tensors, meta = {}, {"gguf": path, "prompts": PROMPTS}
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
            # Greedy decoding with HF's own KV cache, past EOS too (uio's test decodes 32 tokens regardless).
            step = model(input_ids=ids, use_cache=True)
            generated = [int(step.logits[0, -1].argmax())]
            for _ in range(31):
                step = model(input_ids=torch.tensor([[generated[-1]]]), past_key_values=step.past_key_values,
                            use_cache=True)
                generated.append(int(step.logits[0, -1].argmax()))
        tensors[f"ids{i}"] = ids.contiguous()
        tensors[f"logits{i}"] = logits.contiguous()
        tensors[f"greedy{i}"] = torch.tensor([generated])
        if i == 0:
            first = generated[:8]
            if tok.eos_token_id in first:
                first = first[:first.index(tok.eos_token_id)]
            meta["greedy_text0"] = tok.decode(first, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(json.dumps(meta))
