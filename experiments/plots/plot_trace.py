#!/usr/bin/python3
"""Plot an `hla inspect` trace (trace.h5) as PNG files.

Reads the HDF5 file written by `hla inspect` (docs/inspect.md lists its datasets) and writes,
into --out:

  gates_layer_XX_<mixer>.png  per linear layer: its gates (decay / forget_gate / alpha / beta)
                              as heatmaps over time (x) and head or channel (y), example --example
  state_norms.png             ||S_t||_F per head over time, one panel per linear layer (chunk-
                              boundary traces are drawn as markers at the recorded steps)
  horizons.png                effective memory horizon per head, grouped bars across layers
                              (log scale; HGRN/HGRN2 lower-bound layers show the schedule)
  attention.png               mean attended distance and attention entropy over time per head,
                              for every softmax-attention layer (hybrid layers)

Only h5py, numpy and matplotlib are needed (Debian: python3-h5py python3-matplotlib). Every
figure is built by one small function below, so restyling means editing that function.

Example:
  /usr/bin/python3 experiments/plots/plot_trace.py trace.h5 --out plots/
"""
import argparse
import os
import re

import h5py
import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

GATE_NAMES = ("decay", "forget_gate", "alpha", "beta")
LAYER_RE = re.compile(r"^layer_(\d+)$")


def layers(f):
    """[(index, layer group name, mixer name, mixer group)] in layer order."""
    out = []
    for name in f.keys():
        m = LAYER_RE.match(name)
        if not m:
            continue
        for mixer in f[name].keys():
            out.append((int(m.group(1)), name, mixer, f[name][mixer]))
    return sorted(out, key=lambda x: x[0])


def gate_matrix(ds, example):
    """A gate dataset -> [rows, T] for a heatmap (per-key gates averaged over K)."""
    a = np.asarray(ds[()], dtype=np.float64)
    if a.ndim == 4:  # [B,T,H,K] -> mean over K
        return a[example].mean(axis=-1).T, "head (mean over keys)"
    if a.ndim == 3:  # [B,T,H] or [B,T,D]
        return a[example].T, "head" if a.shape[-1] <= 64 else "channel"
    return None, None


def plot_gates(f, out, example):
    """One figure per linear layer: each gate as a time x head heatmap."""
    written = []
    for idx, lname, mixer, g in layers(f):
        gates = [n for n in GATE_NAMES if n in g and g[n].ndim >= 3]
        if not gates:
            continue
        fig, axes = plt.subplots(len(gates), 1, figsize=(10, 2.2 * len(gates) + 0.6), squeeze=False)
        for ax, name in zip(axes[:, 0], gates):
            m, ylabel = gate_matrix(g[name], example)
            im = ax.imshow(m, aspect="auto", interpolation="nearest", cmap="viridis",
                           vmin=0.0, vmax=max(1.0, float(np.nanmax(m))))
            ax.set_title(f"{lname}/{mixer}/{name}", fontsize=9)
            ax.set_ylabel(ylabel, fontsize=8)
            if m.shape[0] <= 16:
                ax.set_yticks(range(m.shape[0]))
            fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
        axes[-1, 0].set_xlabel("time step t")
        fig.tight_layout()
        path = os.path.join(out, f"gates_{lname}_{mixer}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_state_norms(f, out, example):
    """||S_t||_F per head over time, one panel per linear layer."""
    rows = [(i, l, m, g) for i, l, m, g in layers(f)
            if "state_norm" in g or "state_norm_chunk" in g]
    if not rows:
        return []
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.8 * len(rows) + 0.6), squeeze=False, sharex=True)
    for ax, (_, lname, mixer, g) in zip(axes[:, 0], rows):
        if "state_norm" in g:
            a = g["state_norm"][()][example]  # [T,H]
            for h in range(a.shape[1]):
                ax.plot(np.arange(a.shape[0]), a[:, h], lw=1, label=f"head {h}")
            label = "exact"
        else:
            a = g["state_norm_chunk"][()][example]  # [N,H]
            t = g["state_norm_chunk_end"][()]
            for h in range(a.shape[1]):
                ax.plot(t, a[:, h], "o-", ms=3, lw=1, label=f"head {h}")
            label = "chunk boundaries"
        ax.set_title(f"{lname}/{mixer}: ||S_t||_F ({label})", fontsize=9)
        if a.shape[1] <= 8:
            ax.legend(fontsize=6, ncol=4, loc="upper left")
    axes[-1, 0].set_xlabel("time step t")
    fig.tight_layout()
    path = os.path.join(out, "state_norms.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_horizons(f, out):
    """Grouped bars: the horizon of every head, across layers (log scale)."""
    rows = [(i, l, m, g) for i, l, m, g in layers(f) if "horizon_head" in g]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows) + 3), 4))
    width = 0.8
    for i, lname, mixer, g in rows:
        hz = np.asarray(g["horizon_head"][()], dtype=np.float64)
        n = len(hz)
        xs = i - width / 2 + (np.arange(n) + 0.5) * width / n
        ax.bar(xs, hz, width=width / n, color=plt.cm.tab10(np.arange(n) % 10), edgecolor="none")
        if "lower_bound" in g:  # the lower-bound floor implies a minimum horizon -1/log(lb)
            lb = float(np.mean(g["lower_bound"][()]))
            if 0 < lb < 1:
                ax.plot([i - width / 2, i + width / 2], [-1 / np.log(lb)] * 2, "k--", lw=1)
    ax.set_yscale("log")
    ax.set_xticks([r[0] for r in rows])
    ax.set_xticklabels([f"{r[0]}\n{r[2]}" for r in rows], fontsize=7)
    ax.set_xlabel("layer (bars: heads; dashed: horizon of the mean lower bound)")
    ax.set_ylabel("steps until decay < 1/e")
    ax.set_title("effective memory horizon per head")
    fig.tight_layout()
    path = os.path.join(out, "horizons.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_attention(f, out, example):
    """Mean attended distance and entropy over time, per attention layer and head."""
    rows = [(i, l, m, g) for i, l, m, g in layers(f) if "distance" in g]
    if not rows:
        return []
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.0 * len(rows) + 0.6), squeeze=False, sharex=True)
    for (ax_d, ax_e), (_, lname, mixer, g) in zip(axes, rows):
        d = g["distance"][()][example]
        e = g["entropy"][()][example]
        t = np.arange(d.shape[0])
        for h in range(d.shape[1]):
            ax_d.plot(t, d[:, h], lw=1)
            ax_e.plot(t, e[:, h], lw=1)
        ax_d.plot(t, t / 2.0, "k:", lw=0.8)  # uniform attention over the causal past
        ax_e.plot(t, np.log(t + 1.0), "k:", lw=0.8)
        ax_d.set_title(f"{lname}/{mixer}: mean attended distance (dotted: uniform)", fontsize=9)
        ax_e.set_title(f"{lname}/{mixer}: entropy, nats (dotted: uniform)", fontsize=9)
    axes[-1, 0].set_xlabel("query position t")
    axes[-1, 1].set_xlabel("query position t")
    fig.tight_layout()
    path = os.path.join(out, "attention.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace", help="trace.h5 written by `hla inspect`")
    p.add_argument("--out", required=True, help="directory for the PNG files (created)")
    p.add_argument("--example", type=int, default=0, help="which batch row to plot (default 0)")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with h5py.File(a.trace, "r") as f:
        written = (plot_gates(f, a.out, a.example) + plot_state_norms(f, a.out, a.example)
                   + plot_horizons(f, a.out) + plot_attention(f, a.out, a.example))
    for w in written:
        print("wrote", w)


if __name__ == "__main__":
    main()
