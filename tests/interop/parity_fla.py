#!/usr/bin/env python3
"""Parity of `hla export` with fla's model classes (run by hand on a GPU machine; not in ctest).

For every variant, a GLA 3:1 hybrid and fla's non-default layer options (GLA / RetNet GQA and
feature maps, GLA's decay floor, DeltaNet without beta with other q/k activation and norm,
Gated DeltaNet with more value heads) this script trains a tiny hla model for one step (to get
a checkpoint), exports it with `hla export`, loads the directory with fla's *ForCausalLM class
through transformers' AutoModelForCausalLM (fp32), and compares on the same tokens

    the logits (`hla eval --dump-logits`):  ||z_fla - z_hla||_rms / ||z_hla||_rms  <=  1e-4
    the mean cross-entropy of one window:   |loss_fla - loss_hla| / |loss_hla|     <=  1e-4

`hla eval` prints the loss with 6 decimals, which resolves ~3e-7 relative at these losses. The
validation file holds exactly seq_len + 1 tokens, so every validation window hla draws is that
window.

Needs: the built `hla` binary (--hla), Python with torch (CUDA), transformers and
flash-linear-attention (`import fla` registers its model types). fla's softmax-attention layer
calls the flash-attn package; where it is not installed, this script puts in its place a plain
PyTorch implementation of spec/recurrences.md section 7 (causal softmax attention with GQA and
an optional window), so the transformer and the hybrids compare hla's attention layer with fla's
layer around that reference instead of with flash-attn's kernel (and say so in the output).

    python3 tests/interop/parity_fla.py --hla build/hla [--keep DIR] [--only gla,retnet_gqa]
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile

VOCAB, SEQ = 64, 32

# Per variant: extra [model] keys (head layouts that divide hidden_size = 64).
VARIANTS = {
    "hgrn": "",
    "hgrn2": "expand_ratio = 16",
    "gla": "num_heads = 2",
    "retnet": "num_heads = 2",
    "delta_net": "num_heads = 2",
    "gated_deltanet": "num_heads = 2\nhead_dim = 32",
    "transformer": "",
}
# fla's layer options beyond the defaults: (tag, variant, extra [model] keys)
OPTIONS = [
    ("gla_gqa_relu_floor", "gla",
     'num_heads = 2\nnum_kv_heads = 1\nfeature_map = "relu"\nclamp_min = -0.03'),
    ("retnet_gqa_silu", "retnet", 'num_heads = 2\nnum_kv_heads = 1\nfeature_map = "silu"'),
    ("delta_net_nobeta_elu_sum", "delta_net",
     'num_heads = 2\nuse_beta = false\nqk_activation = "elu"\nqk_norm = "sum"'),
    ("gated_deltanet_gva", "gated_deltanet", "num_heads = 2\nhead_dim = 32\nnum_v_heads = 4"),
]


def config_toml(variant, layout, extra, data_dir):
    return f"""
[model]
variant = "{variant}"
layout = "{layout}"
hidden_size = 64
num_layers = 4
vocab_size = {VOCAB}
attn_num_heads = 4
attn_num_kv_heads = 2
{extra}
[data]
path = "{data_dir}/train.bin"
val_path = "{data_dir}/val.bin"
format = "nanogpt"
bin_vocab_size = {VOCAB}
[train]
steps = 1
batch_size = 2
seq_len = {SEQ}
eval_batches = 1
"""


def install_spec_flash_attn():
    """A stand-in `flash_attn` module: softmax attention as spec section 7 defines it."""
    import math
    import torch

    def flash_attn_func(q, k, v, causal=True, window_size=(-1, -1), **_):
        # q [B,T,H,D]; k, v [B,T,Hkv,D]; query head h reads kv head h // (H / Hkv).
        B, T, H, D = q.shape
        rep = H // k.shape[2]
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        s = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) / math.sqrt(D)
        i = torch.arange(T, device=q.device)[:, None]
        j = torch.arange(T, device=q.device)[None, :]
        allowed = (j <= i) if causal else torch.ones_like(i == j)
        if window_size[0] >= 0:
            allowed = allowed & (j >= i - window_size[0])
        s = s.masked_fill(~allowed, float("-inf"))
        return torch.einsum("bhij,bjhd->bihd", s.softmax(-1), v.float()).to(q.dtype)

    def flash_attn_varlen_func(*_, **__):
        raise NotImplementedError("the spec stand-in covers unpadded batches only")

    import fla.layers.attn as fla_attn  # the module's globals are what its layer calls
    fla_attn.flash_attn_func = flash_attn_func
    fla_attn.flash_attn_varlen_func = flash_attn_varlen_func


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stdout}{out.stderr}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hla", default="build/hla")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    ap.add_argument("--only", help="comma-separated substrings: run the cases whose tag has one")
    args = ap.parse_args()

    import h5py
    import torch
    import torch.nn.functional as F
    import fla  # noqa: F401  (registers fla's configs and models with transformers)
    import fla.layers.attn
    attention = "flash-attn"
    if fla.layers.attn.flash_attn_func is None:
        install_spec_flash_attn()
        attention = "a PyTorch implementation of the spec (flash-attn is not installed)"
    print(f"fla's softmax-attention layers run on {attention}")
    from transformers import AutoModelForCausalLM

    work = args.keep or tempfile.mkdtemp(prefix="hla_parity_")
    os.makedirs(work, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, VOCAB, (4096,), generator=gen)
    val = torch.randint(0, VOCAB, (SEQ + 1,), generator=gen)
    for name, tokens in (("train", train), ("val", val)):
        with open(os.path.join(work, f"{name}.bin"), "wb") as f:
            f.write(struct.pack(f"<{len(tokens)}H", *tokens.tolist()))

    cases = [(f"{v}_{'transformer' if v == 'transformer' else 'pure'}", v,
              "transformer" if v == "transformer" else "pure", extra) for v, extra in VARIANTS.items()]
    cases += [("gla_3to1", "gla", "3:1", VARIANTS["gla"])]
    cases += [(tag, v, "pure", extra) for tag, v, extra in OPTIONS]
    if args.only:
        cases = [c for c in cases if any(part in c[0] for part in args.only.split(","))]
        if not cases:
            sys.exit(f"--only {args.only}: no case matches (tags: "
                     f"{', '.join(t for t, *_ in OPTIONS)} and <variant>_pure, gla_3to1, ...)")
    failures = skipped = 0
    for tag, variant, layout, extra in cases:
        cfg = os.path.join(work, f"{tag}.toml")
        with open(cfg, "w") as f:
            f.write(config_toml(variant, layout, extra, work))
        run_dir, hf_dir = os.path.join(work, f"run_{tag}"), os.path.join(work, f"hf_{tag}")
        run([args.hla, "train", "--config", cfg, "--out", run_dir])
        run([args.hla, "export", "--checkpoint", run_dir, "--out", hf_dir])
        dump = os.path.join(run_dir, "logits.h5")
        out = run([args.hla, "eval", "--checkpoint", run_dir, "--dump-logits", dump])
        hla_loss = float(re.search(r"val_loss (\S+)", out).group(1))
        with h5py.File(dump, "r") as f:
            hla_logits = torch.from_numpy(f["logits"][:]).double()
            tokens = torch.from_numpy(f["tokens"][:]).long()

        try:
            model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).cuda().eval()
            with torch.no_grad():
                logits = model(val[None, :-1].cuda()).logits.float()
                fla_loss = F.cross_entropy(logits[0], val[1:].cuda()).item()
                fla_logits = model(tokens.cuda()).logits.double().cpu()
        except Exception as e:  # e.g. fla's Attention layer needs the flash-attn package
            skipped += 1
            print(f"{tag:24s} hla {hla_loss:.6f}  fla could not run it: {str(e).splitlines()[0][:120]}")
            continue
        rel = abs(fla_loss - hla_loss) / abs(hla_loss)
        rms = lambda x: x.pow(2).mean().sqrt().item()
        rel_logits = rms(fla_logits - hla_logits) / (rms(hla_logits) + 1e-30)
        ok = rel <= 1e-4 and rel_logits <= 1e-4
        failures += not ok
        print(f"{tag:24s} loss hla {hla_loss:.6f} fla {fla_loss:.6f} rel {rel:.2e}; "
              f"logits rel RMS {rel_logits:.2e}  {'ok' if ok else 'FAIL'}")
    print(f"work directory: {work}; {failures} failed, {skipped} not run by fla")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
