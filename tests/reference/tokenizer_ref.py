"""Reference ids for tests/tokenizer_test.cpp, from HF `tokenizers`, `sentencepiece` and transformers.

Writes under out_dir:
  corpus.bin            documents: u32 count, then per document u32 length + raw bytes (some hold
                        invalid UTF-8; references see bytes.decode("utf-8", "replace"), as HF would)
  repaired.bin          the same documents after bytes.decode("utf-8", "replace").encode("utf-8")
  llama3/tokenizer.json byte-level BPE trained here: Llama-3 Split regex + ByteLevel(use_regex=False),
                        ignore_merges, TemplateProcessing BOS, special and non-special added tokens;
                        tokenizer_config.json beside it
  smollm/tokenizer.json byte-level BPE trained here: Digits(individual) + ByteLevel(use_regex=True),
                        merges stored as "a b" strings (the older form)
  NAME.special.ids      per document u32 count + int32 ids, special tokens parsed (HF default)
  NAME.plain.ids        the same with special tokens encoded as text (encode_special_tokens=True)
  spm/tokenizer.model   SentencePiece BPE with byte fallback; spm.ids from the sentencepiece package;
                        spm.hf.ids from transformers' LlamaTokenizer.from_pretrained(spm/),
                        compared on the documents listed in spm.hf.comparable.json
  gguf/                 when models/*.gguf exists (scripts/get-model.sh): metadata.json (the tokenizer.ggml.* keys)
                        and gguf.ids from AutoTokenizer.from_pretrained(dir, gguf_file=...)
"""
import glob
import json
import os
import pathlib
import random
import struct
import sysconfig

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<think>", "</think>"]

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

PROSE = """The river had been rising for three days before anyone in the village thought to move the boats.
By then the water was brown and fast, carrying branches, fence posts, and once, improbably, a piano.
"We'll manage," said Mrs. O'Neill, who'd seen worse in '87 and wasn't about to panic. "It's only water."
She didn't say what everyone knew: the bridge (built 1923, repaired 1961) wouldn't last another night.
THEY'RE COMING BACK, shouted a boy from the hill — and they were: forty-two geese, in a ragged V.
"""


def stdlib_text(limit):
    """Python's own sources and license: prose in docstrings and comments, and real code."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py")) + [p for p in [root / "LICENSE.txt"] if p.exists()]
    out, total = [], 0
    for f in files:
        data = f.read_bytes()
        out.append(data)
        total += len(data)
        if total >= limit:
            break
    return out


def rand_chars(rng, lo, hi, n):
    return "".join(chr(rng.randint(lo, hi)) for _ in range(n))


def make_documents(rng):
    docs = []
    # Real code and prose, cut into documents of random size so that documents start and end anywhere.
    for blob in stdlib_text(1_200_000):
        i = 0
        while i < len(blob):
            n = rng.choice([200, 1000, 5000, 20000])
            docs.append(blob[i:i + n])
            i += n
    emoji = ["😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇯🇵", "1️⃣", "❤️", "🤖", "🧪", "🏳️‍🌈", "✨", "🐍"]
    spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t ", "\u00a0", "\u3000", "\u2009",
              "\u200b", "\u0085", "\u2028", "\x0b", "\x0c", "          "]
    scripts = [(0x4E00, 0x9FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xD7A3), (0x0400, 0x04FF),
               (0x0370, 0x03FF), (0x0600, 0x06FF), (0x0900, 0x097F), (0x0E00, 0x0E7F), (0x00C0, 0x024F)]
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(5, 60)):
            kind = rng.random()
            if kind < 0.2:
                line = rng.choice(PROSE.splitlines())
                parts.append(line.upper() if rng.random() < 0.1 else line)
            elif kind < 0.35:
                parts.append(rng.choice([str(rng.randint(0, 10**rng.randint(1, 12))),
                                         f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 6)}f}",
                                         f"{rng.randint(1, 9999):,}", f"{rng.randint(1900, 2100)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                                         f"v{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}",
                                         "٣٤٥", "½", "²³", "Ⅻ"]))
            elif kind < 0.5:
                parts.append("".join(rng.choice(spaces) for _ in range(rng.randint(1, 8))))
            elif kind < 0.6:
                parts.append("".join(rng.choice(emoji) for _ in range(rng.randint(1, 5))))
            elif kind < 0.75:
                lo, hi = rng.choice(scripts)
                parts.append(rand_chars(rng, lo, hi, rng.randint(1, 12)))
            elif kind < 0.8:
                parts.append(rng.choice(SPECIALS + ADDED + ["<|im_sta", "<think", "<|", "|>", "<<|im_end|>>"]))
            elif kind < 0.85:
                parts.append(rng.choice(["I'M", "we'LL", "You'Re", "it's", "'s", "don't", "'"]))
            elif kind < 0.9:
                # any code point of the Basic Multilingual Plane but surrogates
                parts.append("".join(chr(c) for c in (rng.randint(0x20, 0xFFFD) for _ in range(rng.randint(1, 6)))
                                     if not 0xD800 <= c <= 0xDFFF))
            else:
                parts.append(rng.choice(["def f(x):\n    return x**2  # square\n", "if (a && b) { c++; }",
                                         "SELECT * FROM t WHERE id=42;", "https://example.com/a?b=c&d=e",
                                         "x := <-ch", "λx.x", "$HOME/.config", "¯\\_(ツ)_/¯"]))
            parts.append(rng.choice(["", " ", "\n", " "]))
        docs.append("".join(parts).encode("utf-8"))
    # Invalid UTF-8: stray continuation bytes, truncated sequences, overlongs, surrogates, bytes F5..FF.
    bad = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xf4\x90\x80\x80",
           b"\xff", b"\xfe\xfe", b"\xe0\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xc2\x41"]
    for _ in range(300):
        base = rng.choice(docs[-1500:])
        cut = bytearray()
        for i in range(0, len(base), 37):
            cut += base[i:i + 37]
            if rng.random() < 0.3:
                cut += rng.choice(bad)
        docs.append(bytes(cut))
    docs.append(b"")
    docs.append(b"   ")
    docs.append(b" " * 5000 + b"x")
    docs.append(b"\n" * 3000)
    return docs


def write_docs(path, docs):
    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(docs)))
        for d in docs:
            f.write(struct.pack("<I", len(d)))
            f.write(d)


def write_ids(path, id_lists):
    with open(path, "wb") as f:
        for ids in id_lists:
            f.write(struct.pack("<I", len(ids)))
            f.write(struct.pack(f"<{len(ids)}i", *ids))


def texts(docs):
    return [d.decode("utf-8", errors="replace") for d in docs]


def train_byte_level(pre_tokenizer, training_text, ignore_merges):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text, trainer=trainer)
    tok.add_tokens(ADDED)
    return tok


def encode_both(tok, strs, out_dir, name):
    tok.encode_special_tokens = False
    write_ids(out_dir / f"{name}.special.ids", [e.ids for e in tok.encode_batch(strs, add_special_tokens=False)])
    tok.encode_special_tokens = True
    write_ids(out_dir / f"{name}.plain.ids", [e.ids for e in tok.encode_batch(strs, add_special_tokens=False)])
    tok.encode_special_tokens = False


def byte_level_references(out_dir, docs, strs, training_text):
    from tokenizers import Regex, pre_tokenizers, processors

    # Llama-3 style.
    tok = train_byte_level(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), training_text, ignore_merges=True)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])])
    d = out_dir / "llama3"
    d.mkdir(exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"},
        "chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"}))
    encode_both(tok, strs, out_dir, "llama3")
    with_bos = tok.encode("hello world", add_special_tokens=True).ids
    (out_dir / "llama3.expect.json").write_text(json.dumps({
        "bos": bos, "eos": tok.token_to_id("<|end_of_text|>"), "hello_with_bos": with_bos,
        "think": tok.token_to_id("<think>"), "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "decoded_special": tok.decode(with_bos + [tok.token_to_id("<think>")], skip_special_tokens=False),
        "decoded_skip": tok.decode(with_bos + [tok.token_to_id("<think>")], skip_special_tokens=True)}))

    # SmolLM2 style, merges saved in the older "a b" form.
    tok = train_byte_level(pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]), training_text, ignore_merges=False)
    d = out_dir / "smollm"
    d.mkdir(exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    j = json.loads((d / "tokenizer.json").read_text())
    j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    (d / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False))
    encode_both(tok, strs, out_dir, "smollm")


def sentencepiece_references(out_dir, strs, training_text):
    import sentencepiece as spm

    d = out_dir / "spm"
    d.mkdir(exist_ok=True)
    lines = [l for t in training_text for l in t.splitlines() if l.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(d / "tokenizer"), vocab_size=3000, model_type="bpe",
        byte_fallback=True, character_coverage=0.99, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True,
        allow_whitespace_only_pieces=True, user_defined_symbols=ADDED, minloglevel=2, num_threads=2)
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    write_ids(out_dir / "spm.ids", [sp.encode(s) for s in strs])
    # transformers' LlamaTokenizer agrees with SentencePiece except where it knowingly differs: its
    # Metaspace adds no dummy prefix to text that starts with a space, and it cuts added/control tokens
    # out before SentencePiece sees the text (so no prefix before them). Those documents are left out.
    from transformers import LlamaTokenizer

    hf = LlamaTokenizer.from_pretrained(str(d))
    comparable = [i for i, s in enumerate(strs)
                  if not s[:1].isspace() and not any(t in s for t in ADDED + ["<s>", "</s>", "<unk>"])]
    write_ids(out_dir / "spm.hf.ids", [hf.encode(s, add_special_tokens=False) for s in strs])
    (out_dir / "spm.hf.comparable.json").write_text(json.dumps(comparable))


def gguf_references(out_dir, strs):
    models = pathlib.Path(__file__).resolve().parents[2] / "models"  # scripts/get-model.sh puts it there
    files = sorted(glob.glob(str(models / "*.gguf")))
    if not files:
        return
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    path = files[0]
    reader = GGUFReader(path)
    meta = {}
    for key in ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"]:
        field = reader.get_field(key)
        if field is not None:
            meta[key] = field.contents()
    if meta.get("tokenizer.ggml.model") != "gpt2":
        return
    d = out_dir / "gguf"
    d.mkdir(exist_ok=True)
    (d / "metadata.json").write_text(json.dumps(meta, ensure_ascii=False))
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    backend = tok.backend_tokenizer
    if meta.get("tokenizer.ggml.pre") == "smollm":
        # transformers' GGUF loader gives "smollm" GPT-2's pre-tokenizer without the single-digit split
        # that SmolLM2's own tokenizer.json (and llama.cpp) apply; restore it so the reference is the model's.
        from tokenizers import pre_tokenizers
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    backend.encode_special_tokens = False
    write_ids(d / "gguf.ids", [e.ids for e in backend.encode_batch(strs, add_special_tokens=False)])
    (d / "source.txt").write_text(path)


def main(out_dir: pathlib.Path):
    rng = random.Random(20240604)
    docs = make_documents(rng)
    write_docs(out_dir / "corpus.bin", docs)
    strs = texts(docs)
    write_docs(out_dir / "repaired.bin", [s.encode("utf-8") for s in strs])
    training_text = strs[::3]
    byte_level_references(out_dir, docs, strs, training_text)
    sentencepiece_references(out_dir, strs, training_text)
    gguf_references(out_dir, strs)


if __name__ == "__main__":
    import sys

    main(pathlib.Path(sys.argv[1]))
