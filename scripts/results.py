"""Regenerates the README's results section and docs/results.md from the headline run's result files,
so that no number in either is typed by hand.

scripts/device-headline.sh writes one folder (default docs/results/headline/) on the GPU machine:
  gpu.txt          nvidia-smi's name, memory and driver, one line per GPU
  commit.txt       the short git hash the GPU binary was built from
  train.log        the log of `uio train`, ending with "train wall seconds: N"
  metrics.jsonl    training step lines and validation lines of `uio train`
  uio_config.json  the exported compressor's config
  train.png        the loss curve (scripts/plot-train.py)
  main/, one-segment/, passkey-1m/   `uio eval` outputs: results.json, ppl.png, needle-*.png
Any of them may be missing; what depends on it then reads "not run". A file that exists but is not
valid JSON is an error naming the file. Absolute paths in the JSON (the GPU machine's temporary folders,
home folders, work areas) are shown relative (scrub_path), so the generated pages name no machine's paths.

usage:
  python3 scripts/results.py          rewrite docs/results.md, and README.md between the lines
                                      <!-- results:begin --> and <!-- results:end --> (kept; both required)
  python3 scripts/results.py --check  exit 1 naming each stale file if either differs from what would be
                                      generated, 0 if both are up to date (2: an input error)
options: --dir (default docs/results/headline), --readme (default README.md), --results-md (default
docs/results.md); relative paths are taken from the repository root, so the script runs from any folder.
The output depends only on the input files and these paths: no dates or timings of its own.
"""
import argparse
import json
import os
import re
import statistics
import sys
from collections import namedtuple
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
EVALS = ("main", "one-segment", "passkey-1m")  # `uio eval` sub-folders; earlier ones win a duplicate row
METHOD_ORDER = ("uio", "truncate", "linear", "ntk", "dynamic", "yarn")
NOT_RUN = "not run"
LONG_CONTEXT = 32 * 1024  # the README's computed facts cover lengths from here up

# Folders of a uio checkout: an absolute path through one of them is shown from there (models/X.gguf).
REPO_FOLDERS = ("models", "out", "docs", "configs", "corpus", "build", "build-gpu")
# Machine-local prefixes, as path components; "*" is the one component after them (a temporary folder,
# a user, a work area) that goes too.
MACHINE_PREFIXES = (("tmp", "*"), ("var", "tmp", "*"), ("root",), ("home", "*"), ("Users", "*"), ("work", "*"))
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/-])~?/[\w.+-]+(?:/[\w.+-]*)*")

# One row of the tables: a `uio eval` method, with truncate told apart by the window it saw.
Method = namedtuple("Method", "name window label short")


class ResultsError(Exception):
    """An input that exists but cannot be used, or a README without the markers."""


# ---------------------------------------------------------------------------------------------- input

def read_text(path):
    return path.read_text(encoding="utf-8") if path.is_file() else None


def scrub_path(path):
    """An absolute path as the reader can use it, without the machine it was written on:
    /tmp/tmp.X/models/a.gguf -> models/a.gguf, /root/out/run -> out/run, /tmp/tmp.X/main -> main,
    /work/main/.venv/bin/python -> .venv/bin/python, ~/runs/a -> runs/a, any other absolute path -> its
    file name. A relative path is returned as it is."""
    if path.startswith("~/"):  # a home folder: the path inside it, unless it passes a repository folder
        path = "/root/" + path[2:]
    if not path.startswith("/") or path.strip("/") == "":
        return path
    parts = PurePosixPath(path).parts[1:]  # without the root
    for i, part in enumerate(parts):
        if part in REPO_FOLDERS:
            return PurePosixPath(*parts[i:]).as_posix()
    for prefix in MACHINE_PREFIXES:
        n = len(prefix)
        if len(parts) > n and all(want in ("*", have) for want, have in zip(prefix, parts)):
            return PurePosixPath(*parts[n:]).as_posix()
    return parts[-1]


def scrub_text(text):
    """Text with every absolute path in it scrubbed (scrub_path)."""
    return ABSOLUTE_PATH.sub(lambda match: scrub_path(match.group(0)), text)


def scrubbed(value):
    """A parsed JSON value with every string scrubbed of machine paths."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    if isinstance(value, dict):
        return {key: scrubbed(item) for key, item in value.items()}
    return value


def read_json(path):
    """The parsed file with machine paths scrubbed, or None if it does not exist."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return scrubbed(json.loads(text))
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: malformed JSON: {e}") from None


def read_metrics(path):
    """(step lines, validation lines) of a metrics.jsonl; both empty if the file does not exist."""
    steps, validations = [], []
    for number, line in enumerate((read_text(path) or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}:{number}: malformed JSON: {e}") from None
        if "validation" in row:
            validations.append(row)
        elif "loss" in row:
            steps.append(row)
    return steps, validations


def train_wall_seconds(log):
    """The last "train wall seconds: N" of the training log, or None."""
    found = re.findall(r"train wall seconds:\s*(\d+(?:\.\d+)?)", log or "")
    return float(found[-1]) if found else None


class Results:
    """Everything in the results folder; a missing file is None (or empty lists for the metrics)."""

    def __init__(self, folder):
        self.folder = folder
        self.gpus = [line.strip() for line in (read_text(folder / "gpu.txt") or "").splitlines() if line.strip()]
        self.commit = (read_text(folder / "commit.txt") or "").strip() or None
        self.train_seconds = train_wall_seconds(read_text(folder / "train.log"))
        self.steps, self.validations = read_metrics(folder / "metrics.jsonl")
        # The last step trained: metrics.jsonl logs every log_every steps; a run stopped by a signal says
        # in its log after which step it stopped (and saved).
        stopped = re.findall(r"stopped by a signal after step (\d+)", read_text(folder / "train.log") or "")
        self.last_step = max([int(x) for x in stopped] + [s["step"] for s in self.steps] or [0])
        self.stopped_early = bool(stopped)
        self.config = read_json(folder / "uio_config.json")
        self.evals = {name: read_json(folder / name / "results.json") for name in EVALS}
        self.main = self.evals["main"]

    def segment_len(self):
        for source in [*self.evals.values(), self.config]:
            if source and "segment_len" in source:
                return source["segment_len"]
        return None

    def rows(self, kind):
        """[(Method, row)] of one kind ("perplexity", "passkey", "needle") over all evaluations."""
        return [(method_of(row["method"], results, self.segment_len()), row)
                for results in self.evals.values() if results for row in results.get(kind, [])]

    def missing(self, names):
        return [name for name in names if self.evals[name] is None]


# ------------------------------------------------------------------------------------------ formatting

def length_label(tokens):
    """4096 -> 4K, 102400 -> 100K, 1048576 -> 1M; a length that is no whole number of K: 8,000."""
    if tokens >= 1 << 20 and tokens % (1 << 20) == 0:
        return f"{tokens // (1 << 20)}M"
    if tokens % 1024:
        return f"{tokens:,}"
    return f"{tokens // 1024}K"


def depth_label(depth):
    return f"{depth:g}"


def status_text(status):
    return "OOM" if status in ("oom", "out of memory") else status.replace("|", "\\|")


def seconds_text(seconds):
    return "not recorded" if seconds is None else f"{seconds:,.0f} s ({seconds / 60:.1f} min)"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def link(target, from_dir):
    return Path(os.path.relpath(target, from_dir)).as_posix()


def shown(path):
    """A path as the reader should see it: from the repository root when inside it."""
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def image(path, alt, from_dir):
    return f"![{alt}]({link(path, from_dir)})" if path.is_file() else ""


def with_not_run(table_text, res, names):
    """A table followed by the evaluations it lacks ("Not run: ..."), or "Not run." for no table at all."""
    missing = res.missing(names)
    note = f"Not run: {', '.join(f'`{name}/results.json`' for name in missing)}." if missing else ""
    return join_blocks(table_text, note or ("" if table_text else "Not run.")).rstrip()


def join_blocks(*blocks):
    return "\n\n".join(block for block in blocks if block) + "\n"


# ------------------------------------------------------------------------------------------ the methods

def method_of(name, results, segment_len):
    if name != "truncate":
        return Method(name, 0, name, name)
    window = results["truncate_window"]
    if window == results.get("trained_window"):
        why = ": the model's window"
    elif segment_len and window in (segment_len, segment_len + 1):  # + 1: the token before the segment
        why = ": one segment"
    else:
        why = ""
    return Method(name, window, f"truncate ({window:,}{why})", f"truncate {length_label(window)}")


def method_rank(name):
    return (METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)), name


def method_order(method):
    """uio, truncate (widest window first), the RoPE-scaling baselines, then any other method."""
    return method_rank(method.name), -method.window


def grouped(pairs):
    """(methods in table order, sorted lengths, {method: {length: [rows]}}) of [(Method, row)]."""
    cells = {}
    for method, row in pairs:
        cells.setdefault(method, {}).setdefault(row["length"], []).append(row)
    return sorted(cells, key=method_order), sorted({row["length"] for _, row in pairs}), cells


# ------------------------------------------------------------------------------------------ perplexity

def ppl_row(cells, method, length):
    """The perplexity row of a method at a length (the first evaluation's), or None if not run."""
    rows = cells[method].get(length)
    return rows[0] if rows else None


def ok_ppls(ppl, length):
    """[(ppl, Method)] of the methods that ran at this length, lowest first."""
    methods, _, cells = ppl
    found = [(row["ppl"], m) for m in methods if (row := ppl_row(cells, m, length)) and row["status"] == "ok"]
    return sorted(found, key=lambda pair: (pair[0], method_order(pair[1])))


def ppl_text(row, lowest):
    if row is None:
        return NOT_RUN
    if row["status"] != "ok":
        return status_text(row["status"])
    text = f"{row['ppl']:.2f}"
    return f"**{text}**" if row["ppl"] == lowest else text


def perplexity_table(ppl):
    methods, lengths, cells = ppl
    if not methods:
        return ""
    lowest = {L: ok[0][0] if (ok := ok_ppls(ppl, L)) else None for L in lengths}
    body = [[m.label] + [ppl_text(ppl_row(cells, m, L), lowest[L]) for L in lengths] for m in methods]
    return table(["method"] + [length_label(L) for L in lengths], body)


def perplexity_detail(ppl):
    methods, lengths, cells = ppl
    body = []
    for m in methods:
        for L in lengths:
            row = ppl_row(cells, m, L)
            if row is None:
                continue
            ok = row["status"] == "ok"
            body.append([m.label, f"{L:,}", f"{row['ppl']:.4f}" if ok else status_text(row["status"]),
                         f"{row['mean_loss']:.4f}" if ok else "", f"{row['scored_tokens']:,}", str(row["documents"])])
    return table(["method", "length", "ppl", "mean loss", "scored tokens", "documents"], body) if body else ""


def uio_lowest_facts(ppl):
    """One computed line per length from LONG_CONTEXT up: whether uio has the lowest perplexity."""
    methods, lengths, cells = ppl
    uio = next((m for m in methods if m.name == "uio"), None)
    lines = []
    for L in (L for L in lengths if L >= LONG_CONTEXT):
        ok = ok_ppls(ppl, L)
        if not ok:
            lines.append(f"- uio lowest at {length_label(L)}: no method ran")
            continue
        best_ppl, best = ok[0]
        uio_row = ppl_row(cells, uio, L) if uio else None
        detail = f"best: {best.short} {best_ppl:.2f}"
        if uio_row is None or uio_row["status"] != "ok":
            answer, detail = "no", f"uio: {ppl_text(uio_row, None)}; {detail}"
        else:
            answer = "yes" if uio_row["ppl"] == best_ppl else "no"
        lines.append(f"- uio lowest at {length_label(L)}: {answer} ({detail})")
    return "\n".join(lines)


def score_tokens(results):
    found = re.search(r"^score_tokens\s*=\s*(\d+)", (results or {}).get("settings", ""), re.M)
    return int(found.group(1)) if found else None


def perplexity_caption(results):
    tokens = score_tokens(results)
    scored = f"the last {tokens:,} tokens" if tokens else "the last tokens"
    return f"**Perplexity** of {scored} by context length (bold: the lowest at each length):"


# ------------------------------------------------------------------------------------------ passkey

def passkey_text(rows):
    """Accuracy over all depths and trials, or the status of a row that did not run."""
    if not rows:
        return NOT_RUN
    failed = next((row for row in rows if row["status"] != "ok"), None)
    if failed:
        return status_text(failed["status"])
    correct, trials = sum(row["correct"] for row in rows), sum(row["trials"] for row in rows)
    return f"{100 * correct / trials:.0f}% ({correct}/{trials})"


def passkey_table(passkey):
    methods, lengths, cells = passkey
    if not methods:
        return ""
    body = [[m.label] + [passkey_text(cells[m].get(L)) for L in lengths] for m in methods]
    return table(["method"] + [length_label(L) for L in lengths], body)


def depth_cell(rows, depth):
    at = [row for row in rows if row["depth"] == depth]
    if not at:
        return NOT_RUN
    failed = next((row for row in at if row["status"] != "ok"), None)
    if failed:
        return status_text(failed["status"])
    return f"{sum(row['correct'] for row in at)}/{sum(row['trials'] for row in at)}"


def passkey_by_depth(passkey, pairs):
    methods, lengths, cells = passkey
    depths = sorted({row["depth"] for _, row in pairs})
    body = [[m.label, length_label(L)] + [depth_cell(cells[m][L], d) for d in depths]
            for m in methods for L in lengths if L in cells[m]]
    return table(["method", "length"] + [f"depth {depth_label(d)}" for d in depths], body) if body else ""


# ------------------------------------------------------------------------------------------ needle

def needle_text(row):
    if row is None:
        return NOT_RUN
    if row["status"] != "ok":
        return status_text(row["status"])
    return {1.0: "✓", 0.0: "✗"}.get(row["accuracy"], f"{row['accuracy']:.0%}")


def needle_tables(pairs):
    """One depth x length grid per method."""
    methods, lengths, _ = grouped(pairs)
    depths = sorted({row["depth"] for _, row in pairs})
    blocks = []
    for m in methods:
        found = {(row["depth"], row["length"]): row for method, row in pairs if method == m}
        body = [[depth_label(d)] + [needle_text(found.get((d, L))) for L in lengths] for d in depths]
        blocks.append(f"**{m.label}**\n\n" + table(["depth"] + [length_label(L) for L in lengths], body))
    return "\n\n".join(blocks) if blocks else "Not run."


# ------------------------------------------------------------------------------------------ setup

def device_text(gpus, driver=False):
    """"NVIDIA H200 (143771 MiB)" from gpu.txt, "2 x ..." for several GPUs, or None."""
    if not gpus:
        return None
    fields = [field.strip() for field in gpus[0].split(",")]
    text = fields[0] + (f" ({fields[1]})" if len(fields) > 1 else "")
    if driver and len(fields) > 2:
        text += f", driver {fields[2]}"
    return (f"{len(gpus)} × " if len(gpus) > 1 else "") + text


def setup_sentence(res):
    device = device_text(res.gpus) or "an unrecorded device"
    commit = f"commit `{res.commit}`" if res.commit else "an unrecorded commit"
    train = (f"trained for {res.last_step:,} steps" + (" (stopped there by its time limit)" if res.stopped_early else "")
             if res.steps else f"training {NOT_RUN}")
    if res.main:
        evaluation = f"evaluated {res.main['date']} on {res.main['documents']} held-out documents per length"
    else:
        evaluation = f"evaluation {NOT_RUN}"
    return f"Run on {device} from {commit}: {train}; {evaluation}."


def ini_values(text):
    return dict(re.findall(r"^[ \t]*([\w.-]+)[ \t]*=[ \t]*(.*?)[ \t]*$", text or "", re.M))


def settings_differences(res):
    """A line per other evaluation: its settings that differ from main's."""
    base = ini_values(res.main["settings"])
    lines = []
    for name in EVALS[1:]:
        if res.evals[name]:
            other = ini_values(res.evals[name].get("settings"))
            changed = [f"`{key} = {value}`" for key, value in other.items() if base.get(key) != value]
            lines.append(f"- `{name}` differs in: {', '.join(changed) or 'nothing'}")
    return "\n".join(lines)


def flat_scalars(config, prefix=""):
    """[(dotted key, value)] of every number, string and boolean in a JSON object, in file order."""
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += flat_scalars(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            out.append((prefix + key, value))
    return out


def config_block(res, from_dir):
    if res.config is None:
        return f"Export config: {NOT_RUN} (no `uio_config.json`)."
    config = res.config
    intro = f"Export config ([uio_config.json]({link(res.folder / 'uio_config.json', from_dir)}))"
    if "segment_len" in config and config.get("num_memory_tokens"):
        ratio = config["segment_len"] / config["num_memory_tokens"]
        intro += (f": segments of {config['segment_len']:,} tokens compressed into "
                  f"{config['num_memory_tokens']:,} memory tokens (ratio {ratio:g})")
    rows = [[f"`{key}`", f"`{json.dumps(value, ensure_ascii=False)}`"] for key, value in flat_scalars(config)
            if not key.startswith("files.")]  # the export's descriptions of its own files
    return intro + ":\n\n" + table(["key", "value"], rows)


def evaluations_table(res):
    body = []
    for name, results in res.evals.items():
        if results is None:
            body.append([f"`{name}`", NOT_RUN, "", "", ""])
            continue
        methods = sorted({row["method"] for kind in ("perplexity", "passkey", "needle")
                          for row in results.get(kind, [])}, key=method_rank)
        body.append([f"`{name}`", results["date"], ", ".join(methods), f"{results['truncate_window']:,}",
                     str(results["documents"])])
    return table(["evaluation", "date", "methods", "truncate window", "documents"], body)


def setup_section(res, from_dir):
    device = device_text(res.gpus, driver=True) or "not recorded"
    facts = f"- device: {device}\n- commit: {f'`{res.commit}`' if res.commit else 'not recorded'}"
    if res.main:
        facts += f"\n- model: `{res.main['model']}`, {res.main['dtype']} on {res.main['device']}"
        facts += f"\n- memory: `{res.main['memory']}`"
    settings = ""
    if res.main:
        settings = join_blocks(f"Settings of `main` (`uio eval`):\n\n```ini\n{res.main['settings'].rstrip()}\n```",
                               settings_differences(res)).rstrip()
    return join_blocks("## Setup", facts, evaluations_table(res), settings, config_block(res, from_dir))


# ------------------------------------------------------------------------------------------ training

def validation_table(validations):
    body = [[f"{v['step']:,}", f"{v['validation']['memory']['ppl_after_first_segment']:.2f}",
             f"{v['validation']['truncated']['ppl_after_first_segment']:.2f}"] for v in validations]
    return table(["step", "memory ppl past segment 1", "truncated ppl past segment 1"], body)


def training_facts(res):
    steps = res.steps
    last = steps[-10:]
    loss = statistics.fmean(s["loss"] for s in last)
    speeds = [s["tokens_per_s"] for s in steps if "tokens_per_s" in s]
    peaks = [s["peak_memory_gb"] for s in steps if "peak_memory_gb" in s]
    facts = [f"- steps: {res.last_step:,}" + (" (stopped there by its time limit; the last logged step is "
                                              f"{steps[-1]['step']:,})" if res.last_step != steps[-1]["step"] else ""),
             f"- final training loss: {loss:.4f} (mean of the last {len(last)} logged steps, "
             f"{last[0]['step']:,}-{last[-1]['step']:,})"]
    if speeds:
        facts.append(f"- median throughput: {statistics.median(speeds):,.0f} tokens/s")
    if peaks:
        facts.append(f"- peak GPU memory: {max(peaks):.2f} GB")
    facts.append(f"- wall time: {seconds_text(res.train_seconds)}")
    return "\n".join(facts)


def training_section(res, from_dir):
    if not res.steps and not res.validations:
        return join_blocks("## Training", f"Training: {NOT_RUN} (no `metrics.jsonl`).")
    validation = ""
    if res.validations:
        segment = f"{res.segment_len():,}-token " if res.segment_len() else ""
        validation = ("Held-out perplexity past the first segment, with memory and with the base model reading "
                      f"each {segment}segment alone (truncated):\n\n" + validation_table(res.validations))
    return join_blocks("## Training", training_facts(res) if res.steps else "", validation,
                       image(res.folder / "train.png", "training loss", from_dir))


# ------------------------------------------------------------------------------------------ documents

def readme_section(res, readme_dir, results_md):
    ppl = grouped(res.rows("perplexity"))
    return join_blocks(
        setup_sentence(res),
        perplexity_caption(res.main),
        with_not_run(perplexity_table(ppl), res, ("main", "one-segment")),
        uio_lowest_facts(ppl),
        "**Passkey retrieval** (correct over all depths and trials):",
        with_not_run(passkey_table(grouped(res.rows("passkey"))), res, ("main", "passkey-1m")),
        image(res.folder / "main" / "ppl.png", "perplexity by context length", readme_dir),
        f"Full detail, loss curve, settings and the commands: [{link(results_md, readme_dir)}]"
        f"({link(results_md, readme_dir)})",
    )


DEFAULT_RECIPE = {  # the 100K natural-text run's; a folder's recipe.json overrides any of them
    "config": "configs/smollm2-135m-100k.ini", "steps": 280, "out_dir": "out/smollm2-100k",
    "eval": "--lengths 4096,8192,16384,32768,65536,102400 --score_tokens 1024 --documents 2 "
            "--passkey_lengths 8192,32768,102400 --needle_lengths 8192,32768,102400",
    "device_train": "COMMIT=<hash> PART=train bash scripts/device-headline.sh",
    "device_eval": "COMMIT=<hash> PART=eval bash scripts/device-headline.sh",
}


def recipe_of(folder):
    """How the run was made: DEFAULT_RECIPE updated by <folder>/recipe.json when it exists."""
    recipe = dict(DEFAULT_RECIPE)
    path = Path(folder) / "recipe.json"
    if path.exists():
        recipe.update(read_json(path))
    return recipe


def commands_section(folder):
    out = shown(folder)
    r = recipe_of(folder)
    return f"""## Commands

The recipe on any machine with a CUDA GPU of 80 GB or more and a CUDA build of libtorch (docs/gpu.md;
on 80 GB set `chunk = 16` or `activation_checkpointing = true` in the config), from a clone of this
repository:

```bash
bash scripts/setup.sh && bash scripts/build.sh && bash scripts/get-model.sh && bash scripts/get-corpus.sh
build/uio prepare --inputs corpus --out out/corpus-store --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf \\
  --heldout_fraction 0.03
build/uio train --config {r["config"]} --data out/corpus-store --steps {r["steps"]} --checkpoint_every 50
build/uio export --checkpoint {r["out_dir"]} --out {r["out_dir"]}-export
build/uio eval --model models/SmolLM2-135M-Instruct.Q4_1.gguf --memory {r["out_dir"]}-export \\
  --data out/corpus-store --device cuda {r["eval"]} --out_dir out/eval
```

How it ran for this page: on a remote GPU machine holding a copy of the tree, after scripts/device-build.sh,
with the model and the packed token store copied over (docs/gpu.md), and `OUT` naming the folder to bring back:

```bash
{r["device_train"]}   # writes headline-train.tgz into OUT
{r["device_eval"]}    # writes headline-eval.tgz into OUT
```

Back on the development machine, with the two archives copied from OUT:

```bash
tar xzf headline-train.tgz -C {out} && tar xzf headline-eval.tgz -C {out}
.venv/bin/python scripts/plot-train.py {out}/metrics.jsonl {out}/train.png
python3 scripts/results.py   # this file and the README's results section
```"""


def results_document(res, from_dir):
    ppl = grouped(res.rows("perplexity"))
    passkey_pairs = res.rows("passkey")
    passkey = grouped(passkey_pairs)
    needles = sorted((res.folder / "main").glob("needle-*.png"))
    eval_seconds = [[f"eval `{name}`", seconds_text(r["seconds"] if r else None)] for name, r in res.evals.items()]
    recorded = [s for s in [res.train_seconds] + [r["seconds"] for r in res.evals.values() if r] if s is not None]
    return join_blocks(
        "# Results: the headline run",
        f"Generated by `python3 scripts/results.py` from `{shown(res.folder)}/` — edit the script, not this file.",
        setup_section(res, from_dir).rstrip(),
        training_section(res, from_dir).rstrip(),
        "## Perplexity",
        perplexity_caption(res.main),
        with_not_run(perplexity_table(ppl), res, ("main", "one-segment")),
        perplexity_detail(ppl),
        image(res.folder / "main" / "ppl.png", "perplexity by context length", from_dir),
        "## Passkey",
        "Correct over all depths and trials:",
        with_not_run(passkey_table(passkey), res, ("main", "passkey-1m")),
        "By depth (correct/trials):" if passkey_pairs else "",
        passkey_by_depth(passkey, passkey_pairs),
        "## Needle in a haystack",
        "Retrieved (✓) or not (✗) by depth and context length:",
        needle_tables(res.rows("needle")),
        " ".join(image(path, path.stem, from_dir) for path in needles),
        "## Device time",
        table(["part", "time"], [["training (wall)", seconds_text(res.train_seconds)]] + eval_seconds +
              [["total recorded", seconds_text(sum(recorded))]]),
        commands_section(res.folder),
    )


def with_section(readme_text, section, path):
    """The README with the text between the markers replaced by the section."""
    if readme_text.count(BEGIN) != 1 or readme_text.count(END) != 1 or readme_text.find(BEGIN) > readme_text.find(END):
        raise ResultsError(f"{path}: needs exactly one line {BEGIN} followed by one line {END} "
                           "around the results section")
    head, rest = readme_text.split(BEGIN)
    return head + BEGIN + "\n\n" + section + "\n" + END + rest.split(END, 1)[1]


# ------------------------------------------------------------------------------------------ main

def repo_path(text):
    path = Path(text)
    return path if path.is_absolute() else ROOT / path


def generate(folder, readme, results_md):
    """{path: the text it should have} for the README and results.md."""
    if not readme.is_file():
        raise ResultsError(f"{readme}: no such file")
    res = Results(folder)
    section = readme_section(res, readme.parent, results_md)
    return {readme: with_section(read_text(readme), section, readme),
            results_md: results_document(res, results_md.parent)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="docs/results/headline", help="the results folder of the headline run")
    parser.add_argument("--readme", default="README.md", help="the README holding the markers")
    parser.add_argument("--results-md", default="docs/results.md", help="the full results page, rewritten whole")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if either file is stale")
    args = parser.parse_args()
    try:
        wanted = generate(repo_path(args.dir), repo_path(args.readme), repo_path(args.results_md))
    except ResultsError as e:
        print(f"results.py: error: {e}", file=sys.stderr)
        return 2
    stale = [path for path, text in wanted.items() if read_text(path) != text]
    if args.check:
        for path in stale:
            print(f"results.py: {shown(path)} is stale; run python3 scripts/results.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
