"""HF tokenizers' encoding speed, for `uio bench tokenizer` (tools/bench.cpp), on the documents uio
encoded: the Rust tokenizer behind transformers' AutoTokenizer, loaded from the same model (a .gguf
file or an HF directory), one thread (encode per document) and all threads (encode_batch); special
tokens written in the text are encoded as text, as uio's are.
Prints one JSON line last: {"single_seconds", "single_first_seconds", "batch_seconds", "tokens",
"threads", "tokenizers"}; seconds are the best of --runs passes, "single_first_seconds" the first
(HF's word cache empty).

Documents file: u32 count, then per document u32 length and its bytes (little-endian); bytes that are
not UTF-8 are replaced by U+FFFD, as uio's tokenizer does."""
import argparse
import json
import os
import struct
import sys
import time

# llama.cpp pre-tokenizer names whose HF tokenizer splits digits one by one before the byte-level regex.
SINGLE_DIGIT_PRE = {"smollm", "starcoder", "refact", "codeshell"}


def read_documents(path):
    with open(path, "rb") as f:
        data = f.read()
    (count,), pos, docs = struct.unpack_from("<I", data, 0), 4, []
    for _ in range(count):
        (n,) = struct.unpack_from("<I", data, pos)
        docs.append(data[pos + 4:pos + 4 + n].decode("utf-8", errors="replace"))
        pos += 4 + n
    if pos != len(data):
        sys.exit(f"{path}: {len(data) - pos} bytes after the {count} documents; the file is not in the expected layout")
    return docs


def gguf_pre(path):
    import gguf
    field = gguf.GGUFReader(path).fields.get("tokenizer.ggml.pre")
    return bytes(field.parts[field.data[0]]).decode() if field is not None else ""


def load_tokenizer(model):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer
    if model.endswith(".gguf"):
        tok = AutoTokenizer.from_pretrained(os.path.dirname(model), gguf_file=os.path.basename(model))
        # transformers' GGUF loader omits the single-digit split that the model's tokenizer.json (and
        # llama.cpp) apply; put it back, as tests/reference/smollm2.py does.
        if gguf_pre(model) in SINGLE_DIGIT_PRE:
            tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        tok = AutoTokenizer.from_pretrained(model)
    if not tok.is_fast:
        sys.exit(f"{model}: transformers gave a slow (Python) tokenizer; this bench measures HF tokenizers (Rust)")
    backend = tok.backend_tokenizer
    # Special tokens written in the text ("<filename>" in a manual) stay text, as in uio's encode
    # with parse_special off (what prepare and the bench use); HF's default would cut them out.
    backend.encode_special_tokens = True
    return backend


def timed_runs(runs, fn):
    """(first pass's seconds, best seconds, result)"""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times[0], min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--documents", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    # Rayon sizes its pool once, from this variable, at the first parallel call.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    import tokenizers

    docs = read_documents(args.documents)
    tok = load_tokenizer(os.path.abspath(args.model))
    first, single, ids = timed_runs(args.runs, lambda: [tok.encode(d, add_special_tokens=False).ids for d in docs])
    _, batch, encodings = timed_runs(args.runs, lambda: tok.encode_batch(docs, add_special_tokens=False))
    tokens = sum(len(x) for x in ids)
    if tokens != sum(len(e.ids) for e in encodings):
        sys.exit("encode and encode_batch gave different token counts")
    print(json.dumps({"single_seconds": single, "single_first_seconds": first, "batch_seconds": batch,
                      "tokens": tokens, "threads": args.threads, "tokenizers": tokenizers.__version__}))


if __name__ == "__main__":
    main()
