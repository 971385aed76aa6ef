#!/usr/bin/python3
"""Plot the results of `hla sweep` (results.csv) against the linear-to-full ratio.

Writes one PNG per task into --out: <task>.png with the task's metric (MQAR: recall accuracy,
language modelling: validation perplexity) on the y axis and the attention layout on the x axis
(pure, then decreasing linear-to-full ratios r:1, i.e. more attention to the right), one line per
variant (mean over seeds, each seed as a dot). The all-attention transformer, when present, is
drawn as a horizontal dashed line.

With --cells DIR (the sweep's cells/ directory, which `hla sweep` passes) it also writes
<task>_loss.png: each cell's training loss against the step (from cells/<cell>/metrics.jsonl), one
panel per variant, one line per ratio, the transformer dashed in every panel. Cells that have not
finished (no row in results.csv) are drawn too, dotted and marked "unfinished", so a partial
sweep still shows how far each cell got.

Only matplotlib is needed (Debian: python3-matplotlib); the CSV is read with the csv module.
Each figure is built by plot_task below, so restyling means editing that function.

Example:
  /usr/bin/python3 experiments/plots/plot_sweep.py runs/sweep_cpu_small/results.csv --out runs/sweep_cpu_small
"""
import argparse
import csv
import glob
import json
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def ratio_key(r):
    """Order: pure first, then r:1 by decreasing r (more attention to the right)."""
    if r == "pure":
        return (0, 0.0)
    if r.endswith(":1"):
        try:
            return (1, -float(r[:-2]))
        except ValueError:
            pass
    return (2, 0.0)


def read_rows(path):
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("status") == "ok" and r.get("value")]


def plot_task(task, rows, out):
    metric = rows[0]["metric"]
    ratios = sorted({r["ratio"] for r in rows if r["variant"] != "transformer"}, key=ratio_key)
    xs = {r: i for i, r in enumerate(ratios)}
    by_variant = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_variant[r["variant"]][r["ratio"]].append(float(r["value"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for variant in sorted(v for v in by_variant if v != "transformer"):
        pts = by_variant[variant]
        rs = [r for r in ratios if r in pts]
        means = [sum(pts[r]) / len(pts[r]) for r in rs]
        line, = ax.plot([xs[r] for r in rs], means, "o-", label=variant)
        for r in rs:
            if len(pts[r]) > 1:
                ax.scatter([xs[r]] * len(pts[r]), pts[r], s=8, color=line.get_color(), alpha=0.5)
    if "transformer" in by_variant:
        vals = [v for vs in by_variant["transformer"].values() for v in vs]
        ax.axhline(sum(vals) / len(vals), color="k", ls="--", lw=1, label="transformer")
    ax.set_xticks(range(len(ratios)))
    ax.set_xticklabels(ratios)
    ax.set_xlabel("linear-to-full ratio (more attention to the right)")
    ax.set_ylabel("MQAR accuracy (recall)" if metric == "accuracy" else "validation perplexity")
    if metric != "accuracy":
        ax.set_yscale("log")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, f"{task}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_curves(cells_dir, task):
    """{(variant, ratio): [(step, loss), ...]} from cells/<task>__<variant>__<ratio>__s<seed>/."""
    curves = {}
    for path in sorted(glob.glob(os.path.join(cells_dir, task + "__*", "metrics.jsonl"))):
        cell = os.path.basename(os.path.dirname(path))
        parts = cell.split("__")
        if len(parts) != 4:
            continue
        with open(path) as f:
            pts = [(r["step"], r["loss"]) for r in map(json.loads, filter(str.strip, f)) if "loss" in r]
        if pts:
            curves[cell] = (parts[1], parts[2].replace("-", ":"), pts)
    return curves


def plot_curves(task, curves, finished, out):
    variants = sorted({v for v, _, _ in curves.values() if v != "transformer"})
    if not variants:
        return None
    cols = min(3, len(variants))
    rows = (len(variants) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), sharex=True, sharey=True,
                             squeeze=False)
    ratios = sorted({r for v, r, _ in curves.values() if v != "transformer"}, key=ratio_key)
    colours = {r: plt.cm.viridis(i / max(1, len(ratios) - 1)) for i, r in enumerate(ratios)}
    for ax, variant in zip(axes.flat, variants):
        for cell, (v, r, pts) in sorted(curves.items(), key=lambda kv: ratio_key(kv[1][1])):
            if v not in (variant, "transformer"):
                continue
            style = dict(color="k", ls="--", lw=1) if v == "transformer" else dict(color=colours[r], lw=1.4)
            label = "transformer" if v == "transformer" else r
            if cell not in finished:
                style["ls"] = ":"
                label += " (unfinished)"
            ax.plot([s for s, _ in pts], [l for _, l in pts], label=label, **style)
        ax.set_title(variant)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(variants):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss")
    fig.suptitle(f"{task}: training loss by linear-to-full ratio")
    fig.tight_layout()
    path = os.path.join(out, f"{task}_loss.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="results.csv written by `hla sweep`")
    p.add_argument("--out", required=True, help="directory for the PNG files (created)")
    p.add_argument("--cells", help="the sweep's cells/ directory: also plot training-loss curves")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    by_task = defaultdict(list)
    for r in read_rows(a.results):
        by_task[r["task"]].append(r)
    if not by_task:
        print("no finished cells in", a.results)
    for task in sorted(by_task):
        print("wrote", plot_task(task, by_task[task], a.out))
    if a.cells:
        tasks = {os.path.basename(d).split("__")[0] for d in glob.glob(os.path.join(a.cells, "*__*"))}
        finished = {r["cell"] for rows in by_task.values() for r in rows}
        for task in sorted(tasks):
            path = plot_curves(task, read_curves(a.cells, task), finished, a.out)
            if path:
                print("wrote", path)


if __name__ == "__main__":
    main()
