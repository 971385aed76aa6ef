#!/usr/bin/env python3
"""Prints one short table from the JSON files bench/run_gpu.sh leaves in a folder.

  python3 bench/gpu_table.py [--gpu NAME] OUT_DIR

Reads OUT_DIR/bench_cuda_ops.json and bench_cuda_model.json (Google Benchmark JSON; counters
ms, TFLOP/s, GB/s, tok/s, peak_GiB, params_M, MFU_%, peak_TFLOP/s), or where a JSON file is
missing or cut short (a run stopped by its time limit writes it only at the end) the console
logs bench.log / bench_model.log beside it, and, when present,
OUT_DIR/anchors.json (bench/baselines/fla_bench.py: fla and torch on the same card). Op names are
<op>/<dtype>/<shape>/<pass> (dtype f32 or bf16), model names model/<precision>/<config>
(precision fp32, bf16 or pure_bf16); names without the dtype segment (older runs) count as
f32 / fp32.
Times are medians in ms; ratio = hla time / fla time (below 1: hla is faster), for hla in each
dtype against fla in bf16. Missing files and failed cases show as '-', with the first line of
each error listed under the table.
"""
import argparse
import json
import os

# hla op -> fla_bench.py's op (same shape tag); hla model config -> fla_bench.py's model
FLA_OPS = {
    "gla": "chunk_gla",
    "retention": "chunk_retention",
    "delta_rule": "chunk_delta_rule",
    "gated_delta_rule": "chunk_gated_delta_rule",
    "softmax_attention": "sdpa_causal",
    "hgrn": "fused_recurrent_hgrn",
    "short_conv": "causal_conv1d",
}
FLA_MODELS = {
    "transformer": "llama_sdpa",
    "gla_pure": "gla",
    "hgrn2_pure": "hgrn2",
    "gated_deltanet_pure": "gated_deltanet",
    "gated_deltanet_3-1": "gated_deltanet_3to1",
    "retnet_pure": "retnet",
    "delta_net_pure": "delta_net",
    "hgrn_pure": "hgrn",
}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_log(path):
    """The benchmarks of a Google Benchmark console log as the JSON's shape: each line with a name
    and counters (name ... key=value ...; values may end in k or M) becomes one entry."""
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    benchmarks = []
    for line in lines:
        fields = line.split()
        if not fields or "/" not in fields[0] or "=" not in line:
            continue
        entry = {"name": fields[0]}
        for field in fields[1:]:
            key, sep, value = field.partition("=")
            if not sep:
                continue
            mult = scale.get(value[-1:], 1.0)
            try:
                entry[key] = float(value[:-1] if mult != 1.0 else value) * mult
            except ValueError:
                pass
        benchmarks.append(entry)
    return {"benchmarks": benchmarks} if benchmarks else None


def runs(doc):
    """(name segments, entry) for each benchmark, suffixes such as manual_time dropped."""
    for b in (doc or {}).get("benchmarks", []):
        parts = [p for p in b["name"].split("/") if p != "manual_time" and ":" not in p]
        yield parts, b


OP_DTYPES = ("f32", "bf16")
MODEL_PRECISIONS = ("fp32", "bf16", "pure_bf16")


def op_key(parts):
    """(op, dtype, shape, pass) of an op benchmark's name segments, or None."""
    if len(parts) >= 4 and parts[1] in OP_DTYPES:
        return parts[0], parts[1], parts[2], parts[3]
    if len(parts) == 3:
        return parts[0], "f32", parts[1], parts[2]
    return None


def model_key(parts):
    """(config, precision) of a model benchmark's name segments."""
    if len(parts) >= 3 and parts[1] in MODEL_PRECISIONS:
        return parts[2], parts[1]
    return (parts[1] if len(parts) > 1 else parts[0]), "fp32"


def first_line(entry):
    return (entry.get("error_message", "").splitlines() or [""])[0][:160]


def num(x, width, digits):
    """x right-aligned in `width` with `digits` decimals, or '-' when it is missing."""
    return f"{x:{width}.{digits}f}" if isinstance(x, (int, float)) else "-".rjust(width)


def rate(entry):
    """The fwd_bwd entry's rate counter as text, or '-'."""
    if "TFLOP/s" in entry:
        return f"{entry['TFLOP/s']:.1f} TFLOP/s"
    return f"{entry['GB/s']:.0f} GB/s" if "GB/s" in entry else "-"


def ratio(a, b):
    ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0
    return f"{a / b:.2f}x" if ok else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--gpu", default="")
    a = ap.parse_args()
    ops_doc = load(os.path.join(a.out_dir, "bench_cuda_ops.json")) or load_log(
        os.path.join(a.out_dir, "bench.log"))
    model_doc = load(os.path.join(a.out_dir, "bench_cuda_model.json")) or load_log(
        os.path.join(a.out_dir, "bench_model.log"))
    fla = load(os.path.join(a.out_dir, "anchors.json")) or {}
    fla_ops, fla_models = fla.get("ops", {}), fla.get("models", {})
    errors = []

    # ---- ops: {(op, shape): {dtype: {"fwd": entry, "fwd_bwd": entry}}}, one row per op and shape
    ops, copy_gbs = {}, None
    for parts, b in runs(ops_doc):
        if parts[0] == "copy":
            copy_gbs = b.get("GB/s")
            continue
        key = op_key(parts)
        if key is None:
            continue
        op, dtype, shape, pass_ = key
        ops.setdefault((op, shape), {}).setdefault(dtype, {})[pass_] = b
        if b.get("error_occurred"):
            errors.append(f"{op}/{dtype}/{pass_}: {first_line(b)}")
    ctx = (ops_doc or model_doc or {}).get("context", {})
    tf32 = "on" if ctx.get("hla_tf32") == "1" else "off"
    date = (ctx.get("date") or "")[:10]
    shape = next(iter(ops))[1] if ops else "-"
    print(f"\n{a.gpu or fla.get('device', 'GPU')}, {date}: hla f32 (TF32 {tf32}) and bf16 vs "
          f"fla bf16; median ms; ratio = hla / fla")
    print(f"{'op ' + shape:<24}{'f32 fwd':>9}{'f32 f+b':>9}{'bf16 fwd':>9}{'bf16 f+b':>9}"
          f"{'fla fwd':>9}{'fla f+b':>9}{'f32 f+b':>9}{'bf16 fwd':>9}{'bf16 f+b':>9}"
          f"  f+b rate f32 / bf16")
    print(f"{'':<24}{'':>54}{'ratio':>9}{'ratio':>9}{'ratio':>9}")
    for (op, op_shape), r in ops.items():
        f32, bf = r.get("f32", {}), r.get("bf16", {})
        f32_f, f32_fb = f32.get("fwd", {}), f32.get("fwd_bwd", {})
        bf_f, bf_fb = bf.get("fwd", {}), bf.get("fwd_bwd", {})
        ref = fla_ops.get(f"{FLA_OPS[op]}/{op_shape}") if op in FLA_OPS else None
        ref_f, ref_fb = ref if isinstance(ref, list) else (None, None)
        label = op if op_shape == shape else f"{op} {op_shape.split('_', 1)[1]}"
        print(f"{label:<24}{num(f32_f.get('ms'), 9, 3)}{num(f32_fb.get('ms'), 9, 3)}"
              f"{num(bf_f.get('ms'), 9, 3)}{num(bf_fb.get('ms'), 9, 3)}"
              f"{num(ref_f, 9, 3)}{num(ref_fb, 9, 3)}{ratio(f32_fb.get('ms'), ref_fb):>9}"
              f"{ratio(bf_f.get('ms'), ref_f):>9}{ratio(bf_fb.get('ms'), ref_fb):>9}  {rate(f32_fb)} / {rate(bf_fb)}")
    if copy_gbs or fla.get("copy_TBps"):
        print(f"device-to-device copy: hla {num(copy_gbs, 0, 0)} GB/s, "
              f"torch {num(fla.get('copy_TBps') and fla['copy_TBps'] * 1e3, 0, 0)} GB/s")

    # ---- models: one row per (config, precision), fla's bf16 step beside each
    mctx = (model_doc or {}).get("context", {})
    print(f"\n{'model ' + mctx.get('hla_shape', ''):<26}{'prec':>10}{'ms/step':>9}{'tok/s':>9}"
          f"{'peak GiB':>9}{'params M':>9}{'MFU %':>7} | {'fla ms':>8}{'tok/s':>9}{'peak GiB':>9}"
          f"{'ratio':>7}")
    peaks = {}
    for parts, b in runs(model_doc):
        name, precision = model_key(parts)
        if b.get("error_occurred"):
            errors.append(first_line(b))  # starts with "<config> (<precision>): "
        if isinstance(b.get("peak_TFLOP/s"), (int, float)):
            peaks[precision] = b["peak_TFLOP/s"]
        ref = fla_models.get(FLA_MODELS.get(name, ""))
        ref = ref if isinstance(ref, dict) else {}
        print(f"{name:<26}{precision:>10}{num(b.get('ms'), 9, 1)}{num(b.get('tok/s'), 9, 0)}"
              f"{num(b.get('peak_GiB'), 9, 1)}{num(b.get('params_M'), 9, 1)}"
              f"{num(b.get('MFU_%'), 7, 1)} | {num(ref.get('step_ms'), 8, 1)}"
              f"{num(ref.get('tok_per_s'), 9, 0)}{num(ref.get('peak_GiB'), 9, 1)}"
              f"{ratio(b.get('ms'), ref.get('step_ms')):>7}")
    if mctx.get("hla_peak_tflops"):
        peaks.setdefault("fp32", float(mctx["hla_peak_tflops"]))
    if peaks:
        print("MFU against " + ", ".join(f"{p} {v:.1f} TFLOP/s" for p, v in peaks.items()))
    for e in errors:
        print("error:", e)


if __name__ == "__main__":
    main()
