#!/usr/bin/env python3
"""Why memory misses a needle in its own segment (docs/memory.md): where a frozen decoder's attention goes
when it answers a question about a sentence in the segment it is reading. For needle documents of natural
text and each export, it scores the answer and measures, per layer, the attention mass on the sink, memory,
earlier and local keys, on the needle's tokens and on the first k keys, and the attention entropy, under:

  memory         uio: the last segment read with the memory of the earlier ones (docs/method.md §5)
  memory+sink    the same with the document's first k tokens as plain keys and values ahead of the memory
                 (the `sink_tokens` option, §13; set here at inference whatever the export was trained with)
  plain-segment  the base model reading the last segment alone (truncation to one segment)
  plain-document the base model reading the whole document
  memory, answer past the boundary: the prompt fills its last segment exactly, as in `uio eval`'s needle
                 grid, so the answer's first token is read with the needle in its own segment and the
                 rest in a new segment, with the needle only in memory (scores only)

The model runs through the uio_memory package (python/) with eager attention; the probabilities come from
its attention modules (forward hooks). Dims: H query heads, Q answer rows, K keys, V vocabulary.

usage: .venv/bin/python scripts/attention-diagnostic.py --export untrained=out/export-untrained \\
           --text out/demo-corpus/austen/emma.txt --segments 3 --documents 4 --out out/attention.json
"""
import argparse
import dataclasses
import json
import math
import pathlib
import random
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))  # uio_memory from the tree
from uio_memory import UioMemoryModel  # noqa: E402
from uio_memory.compressor import Memory  # noqa: E402

# The evaluation's needle template (data/passkey.cpp, make_needle_prompt).
NEEDLE = " The special magic number is {}. "
QUESTION = " What is the special magic number mentioned in the text above? The special magic number is"
# The partition of a query's keys (masses sum to 1), then subsets of it.
PARTITION = ("sink", "memory", "earlier", "local")
SUBSETS = ("needle", "first")
CONDITIONS = ("memory", "memory+sink", "plain-segment", "plain-document")


@dataclasses.dataclass
class NeedleDocument:
    """Token ids [n], n a multiple of l: the answer's tokens end the last segment, the needle sentence
    ids[needle_begin:needle_end] and the question lie inside it too."""

    ids: torch.Tensor
    answer_len: int
    needle_begin: int
    needle_end: int
    answer: str = ""
    # The same last segment with the answer pushed past its end (uio eval's layout; empty: not measured).
    boundary_last: torch.Tensor | None = None

    @property
    def rows(self) -> torch.Tensor:
        """Positions whose next-token prediction is an answer token: the question's last token and every
        answer token but the last."""
        n = self.ids.numel()
        return torch.arange(n - self.answer_len - 1, n - 1)

    @property
    def answer_ids(self) -> torch.Tensor:
        return self.ids[-self.answer_len:]


def make_documents(tokenizer, haystack: list, l: int, segments: int, count: int, needle_depth: float,
                   digits: int, seed: int) -> list:
    """`count` needle documents of `segments` segments of l tokens, each from its own stretch of `haystack`
    (token ids of natural text): filler, then in the last segment filler, the needle at `needle_depth` of the
    room left, filler, the question and the answer. The number has `digits` digits, no leading zero."""
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    question = encode(QUESTION)
    n = segments * l
    stride = max(1, (len(haystack) - n) // max(1, count))
    if len(haystack) < n:
        raise ValueError(f"attention-diagnostic: the text has {len(haystack)} tokens, a document needs {n}")
    docs = []
    rng = random.Random(seed)
    for d in range(count):
        number = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(digits - 1))
        needle, answer = encode(NEEDLE.format(number)), encode(" " + number)
        if tokenizer.decode(answer).strip() != number:
            raise ValueError(f"attention-diagnostic: the answer ' {number}' does not round-trip through the tokenizer")

        def last_segment(shift):
            room = l - len(needle) - len(question) - len(answer)
            if room < 0:
                raise ValueError(f"attention-diagnostic: segment_len {l} cannot hold the needle and the question")
            before = round(needle_depth * room) + shift
            text = haystack[d * stride + (segments - 1) * l:][:room + shift]  # the last segment's own filler
            return text[:before] + needle + text[before:] + question, before

        body, before = last_segment(0)
        ids = haystack[d * stride:][:(segments - 1) * l] + body + answer
        assert len(ids) == n, (len(ids), n)
        begin = (segments - 1) * l + before
        boundary, _ = last_segment(len(answer))
        assert len(boundary) == l
        docs.append(NeedleDocument(torch.tensor(ids), len(answer), begin, begin + len(needle), number,
                                   torch.tensor(boundary + answer)))
    return docs


# ---- attention probabilities of the answer rows ------------------------------------------------------------
class AttentionProbe:
    """Forward hooks on every layer's attention module that keep, of each call, the probabilities [H, Q, K] of
    the query rows `rows` (indices into that call's queries), as float64. Needs eager attention: SDPA and
    flash attention return no probabilities."""

    def __init__(self, base, rows: torch.Tensor):
        self.base, self.rows = base, rows
        self.probs = [None] * len(base.model.layers)
        self.handles = []

    def _keep(self, i, module, args, out):
        if not isinstance(out, tuple) or len(out) < 2 or out[1] is None:
            raise RuntimeError("attention-diagnostic: the attention module returned no probabilities; load the "
                               "model with attn_implementation='eager'")
        self.probs[i] = out[1][0][:, self.rows].detach().double()  # [H, Q, K]

    def __enter__(self):
        for i, layer in enumerate(self.base.model.layers):
            self.handles.append(layer.self_attn.register_forward_hook(
                lambda mod, args, out, i=i: self._keep(i, mod, args, out)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []


def group_masses(probs: torch.Tensor, groups: dict) -> dict:
    """Attention mass [H, Q] on each key range (name -> (begin, end) on the key axis) of probs [H, Q, K]."""
    return {name: probs[..., b:e].sum(-1) for name, (b, e) in groups.items()}


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Attention entropy [H, Q] in nats of probs [H, Q, K] (masked keys have p = 0 and add nothing)."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def layer_stats(probs: list, groups: dict) -> list:
    """Per layer: each group's mass and the entropy, averaged over heads and rows."""
    out = []
    for p in probs:
        masses = group_masses(p, groups)
        row = {name: float(m.mean()) for name, m in masses.items()}
        row["entropy"] = float(entropy(p).mean())
        row["keys"] = p.shape[-1]
        out.append(row)
    return out


def answer_scores(logits: torch.Tensor, answer: torch.Tensor) -> dict:
    """logits [Q, V] of the rows predicting `answer` [Q]: log-probabilities and whether greedy decoding
    (teacher-forced argmax, equal to free greedy decoding while it stays right) writes the whole answer."""
    logp = logits.double().log_softmax(-1).gather(1, answer[:, None])[:, 0]  # [Q]
    return {"logp": float(logp.sum()), "token_logp": [float(x) for x in logp],
            "greedy": bool((logits.argmax(-1) == answer).all())}


def partition(**ranges) -> dict:
    """Key ranges of PARTITION (absent: empty), then SUBSETS."""
    return {name: ranges.get(name, (0, 0)) for name in PARTITION + SUBSETS}


# ---- the conditions -----------------------------------------------------------------------------------------
class Diagnostic:
    """One export on one base model (eager attention). `sink`: the tokens kept as the attention sink in the
    memory+sink condition and counted as `first` keys elsewhere."""

    def __init__(self, uio: UioMemoryModel, sink: int):
        self.uio, self.base, self.sink = uio, uio.base, sink
        self.l, self.M = uio.config.segment_len, uio.config.num_memory_tokens
        self.head = self.base.get_output_embeddings()

    @torch.no_grad()
    def compress(self, segments: torch.Tensor):
        """Memory keys and values of segments [S, l], `chunk` segments per encoder pass."""
        compressor = self.uio._compressor()
        keys, values = [], []
        for c in range(0, segments.shape[0], self.uio.chunk):
            k, v = compressor.compress(segments[c:c + self.uio.chunk])
            keys.append(k), values.append(v)
        return [torch.cat(k, 1) for k in zip(*keys)], [torch.cat(v, 1) for v in zip(*values)]

    @torch.no_grad()
    def memory(self, first: torch.Tensor, kv, sink: int) -> Memory:
        """The memory a later segment reads: the sink's `sink` entries of the document's first tokens `first`
        (the base model's own keys and values), then the compressed segments' keys and values `kv`."""
        memory = Memory()
        if sink:
            memory.append(*self.uio._compressor().sink(first[:sink]))
            memory.sink = sink
        if kv is not None:
            memory.append(*kv)
        return memory

    @torch.no_grad()
    def read_with_memory(self, segment: torch.Tensor, t: int, memory: Memory, rows: torch.Tensor):
        """Segment t's tokens [l'] decoded with `memory`: logits [Q, V] and per-layer probabilities [H, Q, K]
        of `rows` (positions in the segment), and P, the memory entries read."""
        decoder = self.uio._decoder()
        decoder.start(t, memory)
        with AttentionProbe(self.base, rows) as probe:
            hidden = decoder.read(segment[None])  # [1, l', C]
        return self.head(hidden[0, rows]), probe.probs, decoder.P

    @torch.no_grad()
    def read_plain(self, ids: torch.Tensor, rows: torch.Tensor):
        """The base model alone over ids [n] (positions from 0): logits [Q, V] and probabilities of `rows`."""
        with AttentionProbe(self.base, rows) as probe:
            hidden = self.base.model(input_ids=ids[None], use_cache=False).last_hidden_state  # [1, n, C]
        return self.head(hidden[0, rows]), probe.probs

    def memory_conditions(self, doc: NeedleDocument, boundary: bool = True) -> dict:
        """memory and memory+sink (attention and scores), and the answer past the segment boundary (scores)."""
        l, ids = self.l, doc.ids
        T = ids.numel() // l
        if T < 2 or ids.numel() % l:
            raise ValueError(f"attention-diagnostic: a document needs >= 2 whole segments of {l}, has {ids.numel()}")
        kv = self.compress(ids[:(T - 1) * l].view(T - 1, l))
        rows = doc.rows - (T - 1) * l
        out = {}
        for name, sink in (("memory", 0), ("memory+sink", self.sink)):
            logits, probs, P = self.read_with_memory(ids[(T - 1) * l:], T - 1, self.memory(ids, kv, sink), rows)
            out[name] = {"layers": layer_stats(probs, self.memory_groups(doc, P, sink)),
                         **answer_scores(logits, doc.answer_ids)}
        if boundary and doc.boundary_last is not None:
            out["memory, answer past the boundary"] = self.answer_past_boundary(doc, kv)
        return out

    @torch.no_grad()
    def answer_past_boundary(self, doc: NeedleDocument, kv) -> dict:
        """uio eval's layout: the prompt ends its last segment exactly, so its last token predicts the answer's
        first with the needle in its own segment, and the answer's other tokens are read in a new segment
        with every earlier one (the needle's included) in memory only."""
        l, A = self.l, doc.answer_len
        T = doc.ids.numel() // l
        last, answer = doc.boundary_last[:l], doc.boundary_last[l:]
        memory = self.memory(doc.ids, kv, 0)
        first, _, _ = self.read_with_memory(last, T - 1, memory, torch.tensor([l - 1]))  # [1, V]
        memory.append(*self.compress(last[None]))
        rest, _, _ = self.read_with_memory(answer[:-1], T, memory, torch.arange(A - 1))  # [A-1, V]
        return answer_scores(torch.cat([first, rest]), answer)

    def memory_groups(self, doc: NeedleDocument, P: int, sink: int) -> dict:
        """Key ranges of the last segment read after P memory entries, the first `sink` of them the sink's."""
        s0 = doc.ids.numel() - self.l  # the last segment's first token
        return partition(sink=(0, sink), memory=(sink, P), local=(P, P + self.l),
                         needle=(P + doc.needle_begin - s0, P + doc.needle_end - s0), first=(0, self.sink))

    def plain_groups(self, doc: NeedleDocument, whole: bool) -> dict:
        """Key ranges of the plain model reading the whole document, or its last segment alone."""
        n = doc.ids.numel()
        s0 = n - self.l
        if whole:
            return partition(earlier=(0, s0), local=(s0, n), needle=(doc.needle_begin, doc.needle_end),
                             first=(0, self.sink))
        return partition(local=(0, self.l), needle=(doc.needle_begin - s0, doc.needle_end - s0), first=(0, self.sink))

    def plain_conditions(self, doc: NeedleDocument) -> dict:
        s0 = doc.ids.numel() - self.l
        out = {}
        logits, probs = self.read_plain(doc.ids[s0:], doc.rows - s0)
        out["plain-segment"] = {"layers": layer_stats(probs, self.plain_groups(doc, False)),
                                **answer_scores(logits, doc.answer_ids)}
        logits, probs = self.read_plain(doc.ids, doc.rows)
        out["plain-document"] = {"layers": layer_stats(probs, self.plain_groups(doc, True)),
                                 **answer_scores(logits, doc.answer_ids)}
        return out


# ---- summary ------------------------------------------------------------------------------------------------
def summarise(per_doc: list) -> dict:
    """Per condition: mean log-probability, greedy hits, and per-layer stats averaged over documents, plus
    their mean over layers."""
    out = {}
    names = [name for name in per_doc[0]]
    for name in names:
        runs = [doc[name] for doc in per_doc]
        row = {"documents": len(runs), "logp": sum(r["logp"] for r in runs) / len(runs),
               "greedy": sum(r["greedy"] for r in runs),
               "token_logp": [sum(r["token_logp"][i] for r in runs) / len(runs)
                              for i in range(len(runs[0]["token_logp"]))]}
        if "layers" in runs[0]:
            keys = [k for k in runs[0]["layers"][0] if k != "keys"]
            layers = [{k: sum(r["layers"][i][k] for r in runs) / len(runs) for k in keys}
                      for i in range(len(runs[0]["layers"]))]
            row["layers"] = layers
            row["mean_over_layers"] = {k: sum(x[k] for x in layers) / len(layers) for k in keys}
        out[name] = row
    return out


def markdown(label: str, summary: dict, sink: int) -> str:
    lines = [f"### {label}", "",
             f"| condition | log p(answer) | greedy | sink | memory | earlier | local | needle | first {sink} keys "
             f"| needle / local | entropy (nats) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        m = row.get("mean_over_layers")
        cells = ([f"{m[k]:.3f}" for k in PARTITION + SUBSETS] + [f"{m['needle'] / m['local']:.3f}", f"{m['entropy']:.2f}"]
                 if m else [""] * 8)
        lines.append(f"| {name} | {row['logp']:.2f} | {row['greedy']}/{row['documents']} | " + " | ".join(cells) + " |")
    attended = [name for name, row in summary.items() if "layers" in row]
    lines += ["", "Per layer: needle mass / memory mass / entropy", "",
              "| layer | " + " | ".join(attended) + " |", "|---|" + "---|" * len(attended)]
    for i in range(len(summary[attended[0]]["layers"])):
        cells = [summary[name]["layers"][i] for name in attended]
        lines.append(f"| {i} | " + " | ".join(f"{c['needle']:.3f} / {c['memory']:.3f} / {c['entropy']:.2f}"
                                              for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--export", action="append", required=True,
                    help="LABEL=DIR of a `uio export` (repeatable; the same base model for all)")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf", help="base model: .gguf or HF dir")
    ap.add_argument("--text", required=True, help="a long natural text file: the haystack")
    ap.add_argument("--segments", type=int, default=3, help="segments per document (>= 2)")
    ap.add_argument("--documents", type=int, default=4)
    ap.add_argument("--needle_depth", type=float, default=0.5, help="needle position in the last segment's room")
    ap.add_argument("--digits", type=int, default=5)
    ap.add_argument("--sink", type=int, default=4, help="sink tokens of the memory+sink condition")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = pathlib.Path(a.model)
    kw = dict(gguf_file=model.name) if model.suffix == ".gguf" else {}
    where = str(model.parent) if model.suffix == ".gguf" else str(model)
    tokenizer = AutoTokenizer.from_pretrained(where, **kw)
    base = AutoModelForCausalLM.from_pretrained(where, attn_implementation="eager", dtype=torch.float32, **kw).eval()
    haystack = tokenizer(pathlib.Path(a.text).read_text(encoding="utf-8"), add_special_tokens=False).input_ids

    results = {"model": a.model, "text": pathlib.Path(a.text).name, "segments": a.segments, "documents": a.documents,
               "needle_depth": a.needle_depth, "digits": a.digits, "sink": a.sink, "seed": a.seed,
               "command": "python3 scripts/attention-diagnostic.py " + " ".join(argv or sys.argv[1:]), "exports": {}}
    plain_cache = {}  # (l, document) -> plain conditions: the same for every export of that l
    report = []
    for spec in a.export:
        label, _, path = spec.partition("=")
        if not path:
            label, path = pathlib.Path(spec).name, spec
        uio = UioMemoryModel.from_export(base, path)
        diag = Diagnostic(uio, a.sink)
        docs = make_documents(tokenizer, haystack, diag.l, a.segments, a.documents, a.needle_depth, a.digits, a.seed)
        per_doc = []
        for d, doc in enumerate(docs):
            t0 = time.time()
            result = diag.memory_conditions(doc)
            key = (diag.l, d)
            if key not in plain_cache:
                plain_cache[key] = diag.plain_conditions(doc)
            result.update(plain_cache[key])
            per_doc.append(result)
            print(f"{label}: document {d + 1}/{len(docs)} ({time.time() - t0:.0f} s): " +
                  ", ".join(f"{n} {r['logp']:.2f}{' hit' if r['greedy'] else ''}" for n, r in result.items()),
                  file=sys.stderr, flush=True)
        summary = summarise(per_doc)
        results["exports"][label] = {
            "export": pathlib.Path(path).name, "segment_len": diag.l, "num_memory_tokens": diag.M,
            "trained_sink_tokens": uio.config.sink_tokens, "answers": [doc.answer for doc in docs],
            "needles": [[doc.needle_begin, doc.needle_end] for doc in docs], "summary": summary,
            "per_document": per_doc}
        report.append(markdown(f"{label} (l = {diag.l}, M = {diag.M}, {a.segments} segments, "
                               f"{len(docs)} documents)", summary, a.sink))
    text = "\n".join(report)
    print(text)
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
