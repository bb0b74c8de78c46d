"""Plots a `uio eval` results.json: perplexity of the last tokens against context length, one line per
method (out of memory marked at the length where it happened), and one needle-in-a-haystack heatmap
(depth x length, green = retrieved) per method.
usage: plot-eval.py RESULTS.json OUT_DIR"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(results_path, out_dir):
    r = json.load(open(results_path))
    methods = []
    for row in r["perplexity"] + r["needle"]:
        if row["method"] not in methods:
            methods.append(row["method"])
    if r["perplexity"]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m in methods:
            rows = [x for x in r["perplexity"] if x["method"] == m]
            ok = [x for x in rows if x["status"] == "ok"]
            line, = ax.plot([x["length"] for x in ok], [x["ppl"] for x in ok], "o-", label=m)
            for x in rows:
                if x["status"] == "oom":
                    top = max([y["ppl"] for y in ok], default=1.0)
                    ax.plot([x["length"]], [top], "x", color=line.get_color(), ms=10)
                    ax.annotate("OOM", (x["length"], top), textcoords="offset points", xytext=(4, 4),
                                color=line.get_color())
                    break
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("perplexity of the last %s tokens" % r["settings"].split("score_tokens = ")[1].split("\n")[0]
                      if "score_tokens = " in r["settings"] else "perplexity")
        ax.set_title(os.path.basename(r["model"]))
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "ppl.png"), dpi=110)
    for m in methods:
        rows = [x for x in r["needle"] if x["method"] == m]
        if not rows:
            continue
        lengths = sorted({x["length"] for x in rows})
        depths = sorted({x["depth"] for x in rows})
        grid = [[float("nan")] * len(lengths) for _ in depths]
        for x in rows:
            if x["status"] == "ok":
                grid[depths.index(x["depth"])][lengths.index(x["length"])] = x["accuracy"]
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.5 * len(depths)))
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
        ax.set_yticks(range(len(depths)), ["%g" % d for d in depths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title("needle in a haystack: %s" % m)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "needle-%s.png" % m), dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
