"""Plots a uio train metrics.jsonl: per-step loss (with a 10-step moving average) and held-out perplexity
past the first segment (with memory, and the base model truncated to one segment) at each validation.
usage: plot-train.py METRICS.jsonl OUT.png [TITLE]"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(metrics, out, title="uio train"):
    rows = [json.loads(line) for line in open(metrics)]
    steps = [r["step"] for r in rows if "loss" in r]
    loss = [r["loss"] for r in rows if "loss" in r]
    avg = [sum(loss[max(0, i - 9):i + 1]) / len(loss[max(0, i - 9):i + 1]) for i in range(len(loss))]
    val = [r for r in rows if "validation" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, loss, lw=0.6, alpha=0.5, label="loss per step")
    a.plot(steps, avg, lw=1.5, label="10-step mean")
    a.set_xlabel("step"), a.set_ylabel("training loss (nats/token)"), a.legend(), a.grid(alpha=0.3)
    vs = [r["step"] for r in val]
    b.plot(vs, [r["validation"]["memory"]["ppl_after_first_segment"] for r in val], "o-", label="with memory")
    b.plot(vs, [r["validation"]["truncated"]["ppl_after_first_segment"] for r in val], "s--",
           label="base model, one segment")
    b.set_yscale("log"), b.set_xlabel("step"), b.set_ylabel("held-out perplexity past segment 1")
    b.legend(), b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
