#!/usr/bin/env python3
"""Parity of `hla export` with fla's model classes (run by hand on a GPU machine; not in ctest).

For every variant and a GLA 3:1 hybrid this script trains a tiny hla model for one step (to get
a checkpoint), exports it with `hla export`, loads the directory with fla's *ForCausalLM class
through transformers' AutoModelForCausalLM (fp32), and compares the mean cross-entropy of one
fixed window with `hla eval` on the same window:

    rel = |loss_fla - loss_hla| / |loss_hla|  <=  1e-4

`hla eval` prints the loss with 6 decimals, which resolves ~3e-7 relative at these losses. The
validation file holds exactly seq_len + 1 tokens, so every validation window hla draws is that
window. (hla has no logits dump, so the comparison is on the loss; the logits of a failing
variant can be inspected from the fla side.)

Needs: the built `hla` binary (--hla), Python with torch (CUDA), transformers and
flash-linear-attention (`import fla` registers its model types).

    python3 tests/interop/parity_fla.py --hla build/hla [--keep DIR]
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


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stdout}{out.stderr}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hla", default="build/hla")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    import fla  # noqa: F401  (registers fla's configs and models with transformers)
    from transformers import AutoModelForCausalLM

    work = args.keep or tempfile.mkdtemp(prefix="hla_parity_")
    os.makedirs(work, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, VOCAB, (4096,), generator=gen)
    val = torch.randint(0, VOCAB, (SEQ + 1,), generator=gen)
    for name, tokens in (("train", train), ("val", val)):
        with open(os.path.join(work, f"{name}.bin"), "wb") as f:
            f.write(struct.pack(f"<{len(tokens)}H", *tokens.tolist()))

    cases = [(v, "transformer" if v == "transformer" else "pure", extra)
             for v, extra in VARIANTS.items()] + [("gla", "3:1", VARIANTS["gla"])]
    failures = 0
    for variant, layout, extra in cases:
        tag = f"{variant}_{layout.replace(':', 'to')}"
        cfg = os.path.join(work, f"{tag}.toml")
        with open(cfg, "w") as f:
            f.write(config_toml(variant, layout, extra, work))
        run_dir, hf_dir = os.path.join(work, f"run_{tag}"), os.path.join(work, f"hf_{tag}")
        run([args.hla, "train", "--config", cfg, "--out", run_dir])
        run([args.hla, "export", "--checkpoint", run_dir, "--out", hf_dir])
        hla_loss = float(re.search(r"val_loss (\S+)", run([args.hla, "eval", "--checkpoint", run_dir])).group(1))

        model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).cuda().eval()
        with torch.no_grad():
            logits = model(val[None, :-1].cuda()).logits.float()
            fla_loss = F.cross_entropy(logits[0], val[1:].cuda()).item()
        rel = abs(fla_loss - hla_loss) / abs(hla_loss)
        ok = rel <= 1e-4
        failures += not ok
        print(f"{tag:24s} hla {hla_loss:.6f}  fla {fla_loss:.6f}  rel {rel:.2e}  {'ok' if ok else 'FAIL'}")
    print(f"work directory: {work}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
