#!/usr/bin/env python3
"""The table of docs/memory.md's "Which segments learn recall" from scripts/device-recall-grid.sh's result
folders (each an unpacked recall-grid.tgz): per row, the steps it trained, its answer loss (retrieval
documents, nats per answer token, the mean of the first and of the last five log lines), the level a model
that knows the answer's form but not its digits reaches, and recall through memory against the plain model
reading the whole prompt (the same prompts); and how the row differs: its sink, its documents (the share of
retrieval documents, questions per document) and the compressor it started from (a curriculum's earlier stage).

usage: scripts/recall-grid-table.py RUN_DIR [RUN_DIR ...]   (one line per row and run)
       scripts/recall-grid-table.py --check   (docs/memory.md's table is what its runs give: exit 1 if not)
"""
import json
import math
import pathlib
import sys


def form_level(dmin, dmax):
    """Nats per answer token (a space, d digits, a period) knowing everything but the digits: the first
    digit is one of 9 (no leading zero), each later one of 10, averaged over the lengths d."""
    levels = [(math.log(9) + (d - 1) * math.log(10)) / (d + 2) for d in range(dmin, dmax + 1)]
    return sum(levels) / len(levels)


def row_keys(run):
    """Each row's uio train keys as the script logged them (rows.txt, "name: --key=value ..."); runs before
    that file existed used the script's defaults then (half retrieval documents, one question, no init)."""
    keys = {}
    path = run / "rows.txt"
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, args = line.partition(": ")
            keys[name] = dict(a[2:].split("=", 1) for a in args.split() if a.startswith("--") and "=" in a)
    return keys


def prompt_key(r):
    """Which prompts a retrieval result asked: the same key, the same prompts (the seed is fixed)."""
    return (r["length"], r.get("digits"), r.get("distance"), r.get("max_facts"), r.get("cue"))


def recall(folder):
    path = folder / "results.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text()).get("retrieval", [])
    return rows[0] if rows else None


ROOT = pathlib.Path(__file__).resolve().parent.parent
RUNS = ["run1", "run2", "run3", "run4", "run5", "run6"]  # docs/results/recall-grid/<run>, in the order docs/memory.md's table lists them
BEGIN, END = "<!-- recall-grid:begin -->\n", "<!-- recall-grid:end -->"


def table(runs):
    rows, ceilings = {}, {}
    for run in runs:
        keys = row_keys(run)
        for metrics in sorted(run.glob("metrics-*.jsonl")):
            name = metrics.name[len("metrics-"):-len(".jsonl")]
            logged = [json.loads(line) for line in metrics.read_text().splitlines() if '"loss"' in line]
            answers = [j["loss_by_kind"]["retrieval"] for j in logged if "retrieval" in j.get("loss_by_kind", {})]
            config = json.loads((run / f"config-{name}.json").read_text()) if (run / f"config-{name}.json").exists() else {}
            k = keys.get(name, {})
            start = k.get("init_memory", "")
            if start.startswith("out/grid-") and start.endswith("-export"):
                start = start[len("out/grid-"):-len("-export")]
            rows[(run.name, name)] = {"steps": logged[-1]["step"] if logged else 0, "answers": answers,
                          "l": config.get("segment_len"), "M": config.get("num_memory_tokens"),
                          "sink": config.get("sink_tokens"), "share": k.get("retrieval_share", "0.5"),
                          "questions": k.get("retrieval_questions", "1"), "from": start,
                          "recall": recall(run / f"eval-{name}")}
        for folder in sorted(run.glob("eval-truncate-*")):
            r = recall(folder)
            if r and r.get("status") == "ok":
                ceilings[prompt_key(r)] = r
    lines = ["| row | run | l | M | sink | retrieval share, questions | starts from | steps | answer loss first / last | "
             "form level | recall through memory | plain model, whole prompt |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (run_name, name), r in rows.items():
        rec = r["recall"]
        if not r["answers"] or rec is None:
            continue
        dmin, dmax = (int(x) for x in rec["digits"].split("-"))
        first = sum(r["answers"][:5]) / len(r["answers"][:5])
        last = sum(r["answers"][-5:]) / len(r["answers"][-5:])
        ceiling = ceilings.get(prompt_key(rec))
        plain = f"{ceiling['correct']}/{ceiling['trials']}" if ceiling else ""
        lines.append(f"| {name} | {run_name} | {r['l']} | {r['M']} | {r['sink']} | {r['share']}, {r['questions']} | "
              f"{r['from'] or '-'} | {r['steps']} | {first:.2f} / {last:.2f} | "
              f"{form_level(dmin, dmax):.2f} | {rec.get('correct', '-')}/{rec['trials']} | {plain} |")
    return "\n".join(lines) + "\n"


def main(argv):
    if argv[1:] == ["--check"]:
        doc = (ROOT / "docs" / "memory.md").read_text()
        want = table([ROOT / "docs" / "results" / "recall-grid" / r for r in RUNS])
        have = doc[doc.index(BEGIN) + len(BEGIN):doc.index(END)]
        if have != want:
            sys.exit("docs/memory.md: the recall-grid table differs from what scripts/recall-grid-table.py makes of "
                     "docs/results/recall-grid/; regenerate it:\n" + want)
        print("recall-grid table: as generated")
        return
    if len(argv) < 2:
        sys.exit(__doc__)
    sys.stdout.write(table(map(pathlib.Path, argv[1:])))


if __name__ == "__main__":
    main(sys.argv)
