#!/usr/bin/env python3
"""The memory ablation table (docs/memory.md) from what scripts/device-memory-ablation.sh brought back:
for each row, its training settings (from train-<row>.log), held-out perplexity past the first segment
before and after training (metrics-<row>.jsonl), and `uio eval`'s perplexity, passkey and needle results
(eval-<row>/results.json), with retrieval in the training's formats when the evaluation asked for it
(`--retrieval_lengths`); then the truncate baselines. Usage: ablation-table.py DIR [DIR ...]"""
import json
import pathlib
import sys


def validation(metrics: pathlib.Path):
    """(before, after) memory perplexity past segment 1, and truncated, from metrics.jsonl."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if '"validation"' in line]
    if not rows:
        return None
    v0, v1 = rows[0]["validation"], rows[-1]["validation"]
    return (v0["memory"]["ppl_after_first_segment"], v1["memory"]["ppl_after_first_segment"],
            v1["truncated"]["ppl_after_first_segment"])


def eval_cells(results: pathlib.Path):
    r = json.loads(results.read_text())
    cells = {}
    for row in r["perplexity"]:
        cells[f"ppl {row['length'] // 1024}K"] = f"{row['ppl']:.2f}" if row["status"] == "ok" else row["status"]
    for kind in ("passkey", "needle", "retrieval"):
        by_length = {}
        for row in r.get(kind, []):
            hits, n = by_length.get(row["length"], (0, 0))
            if row["status"] == "ok":
                counted = kind != "needle"  # passkey and retrieval rows count correct answers over trials
                got = row["correct"] if counted else int(row["accuracy"])
                hits, n = hits + got, n + (row["trials"] if counted else 1)
            by_length[row["length"]] = (hits, n)
        for length, (hits, n) in sorted(by_length.items()):
            cells[f"{kind} {length // 1024}K"] = f"{hits}/{n}"
        if kind == "needle":
            local = [row for row in r[kind] if row["depth"] == 1.0 and row["status"] == "ok"]
            if local:
                cells["needle at depth 1"] = f"{sum(int(x['accuracy']) for x in local)}/{len(local)}"
    return cells


def main() -> int:
    columns = ["row", "untrained ppl", "trained ppl", "truncated ppl", "ppl 8K", "ppl 32K", "passkey 8K",
               "passkey 32K", "needle 8K", "needle at depth 1"]
    table = []
    for d in map(pathlib.Path, sys.argv[1:]):
        for results in sorted(d.glob("eval-*/results.json")):
            row = results.parent.name[len("eval-"):]
            cells = {"row": row}
            v = validation(d / f"metrics-{row}.jsonl") if (d / f"metrics-{row}.jsonl").exists() else None
            if v:
                cells.update({"untrained ppl": f"{v[0]:.2f}", "trained ppl": f"{v[1]:.2f}", "truncated ppl": f"{v[2]:.2f}"})
            cells.update(eval_cells(results))
            table.append(cells)
    columns += sorted({c for cells in table for c in cells if c.startswith("retrieval ")},
                      key=lambda c: int(c.split()[1][:-1]))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for cells in table:
        print("| " + " | ".join(cells.get(c, "") for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
