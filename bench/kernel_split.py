#!/usr/bin/env python3
"""Where a GPU training step's time goes, kernel by kernel: Nsight Compute's durations of every
kernel a run launches, summed by kernel and by kind, per step.

  python3 bench/kernel_split.py --run [--model gla_pure] [--layers 4] [--top 30]
  python3 bench/kernel_split.py --csv ncu.csv --steps 4 [--top 30]

--run times bench_cuda_model (--bench, default build-gpu/bench/bench_cuda_model) under
`ncu --metrics gpu__time_duration.sum --clock-control none --cache-control none --csv` (real
clocks, no cache flush: the durations a training step sees, each kernel alone), bf16, one timed
step after the 3 warm-up steps (HLA_BENCH_STEPS=1), at --layers layers (4: every layer kind of a
3:1 hybrid, the head and the optimizer; the per-layer rows scale to 24 layers), and writes the
CSV to --out (default kernel_split.csv). --csv reads such a CSV instead; --steps is the number of
steps it holds (4 for --run's). The table: ms per step and launches per step, by kind (products,
recurrence, attention, norms, elementwise, ...), then the --top kernels.

ncu serialises the kernels, so the sum is the step's GPU time without overlap or host gaps;
it is not a timed step (bench_cuda_model times those).
"""
import argparse
import collections
import csv
import os
import re
import subprocess
import sys

# kind of a kernel, first match wins (names as ncu prints them, templates and arguments removed)
KINDS = [
    ("products (cuBLAS)", r"nvjet|gemm|cutlass|splitKreduce|xmma|cublas"),
    ("attention", r"attention"),
    ("recurrence", r"chunk_|state_walk|gla_mma|cumulative_decay|delta|walk|hgrn_scan|grad_keys|"
                   r"prep|recurrent"),
    ("norms", r"rms_norm"),
    ("casts", r"convert"),
    ("gates, rotary, SwiGLU, short conv", r"gate|rotary|swiglu|short_conv"),
    ("loss (cross-entropy)", r"^ce_|cross_entropy"),
    ("optimizer", r"adamw|squares|sgd"),
    ("embedding", r"index_select|index_add"),
    ("elementwise and reductions", r"unary|binary|reduce|copy|fill|where|softmax|sum"),
]


def kernel_name(raw):
    """'void hla::(anonymous namespace)::foo_kernel<T, 4>(T *, ...)' -> 'foo_kernel'."""
    n = raw.replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    n = re.sub(r"^void ", "", n)
    n = re.sub(r"\(.*", "", n)  # arguments
    n = re.sub(r"<.*", "", n)  # template arguments
    return n.split("::")[-1]


def kind_of(name):
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def read_csv(path):
    """(name, ms) of every kernel launch in an ncu --csv file."""
    if not os.path.exists(path):
        sys.exit(f"kernel_split: no file {path}")
    with open(path) as f:
        rows = [r for r in csv.reader(f) if len(r) > 10]
    if not rows:
        sys.exit(f"kernel_split: no kernel rows in {path} (an ncu --csv file of "
                 "gpu__time_duration.sum is expected)")
    head = rows[0]
    try:
        i_name, i_value = head.index("Kernel Name"), head.index("Metric Value")
        i_unit = head.index("Metric Unit")
    except ValueError:
        sys.exit(f"kernel_split: {path} lacks the columns Kernel Name, Metric Unit, Metric Value")
    scale = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0}
    launches = []
    for r in rows[1:]:
        unit = r[i_unit]
        if unit not in scale:
            sys.exit(f"kernel_split: unknown unit '{unit}' in {path}")
        launches.append((kernel_name(r[i_name]), float(r[i_value].replace(",", "")) * scale[unit]))
    return launches


def run_ncu(args):
    if not os.path.exists(args.bench):
        sys.exit(f"kernel_split: no {args.bench} (build it: ninja -C build-gpu bench_cuda_model)")
    env = dict(os.environ, HLA_BENCH_STEPS="1", HLA_BENCH_LAYERS=str(args.layers),
               HLA_BENCH_PRECISION="bf16")
    cmd = ["ncu", "--metrics", "gpu__time_duration.sum", "--clock-control", "none",
           "--cache-control", "none", "--csv", args.bench,
           f"--benchmark_filter=model/bf16/{args.model}/"]
    print("kernel_split:", " ".join(cmd), file=sys.stderr)
    with open(args.out, "w") as out:
        rc = subprocess.run(cmd, stdout=out, env=env).returncode
    if rc != 0:
        sys.exit(f"kernel_split: ncu exited with {rc} (is ncu on PATH, the GPU visible?)")
    return args.out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", action="store_true", help="run bench_cuda_model under ncu")
    src.add_argument("--csv", help="an ncu --csv file of gpu__time_duration.sum")
    p.add_argument("--bench", default="build-gpu/bench/bench_cuda_model")
    p.add_argument("--model", default="gla_pure", help="a config of bench_cuda_model")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--out", default="kernel_split.csv")
    p.add_argument("--steps", type=int, default=4, help="steps the CSV holds (--run: 4)")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    if args.steps < 1:
        sys.exit("kernel_split: --steps must be at least 1")
    launches = read_csv(run_ncu(args) if args.run else args.csv)

    by_kind = collections.defaultdict(lambda: [0.0, 0])
    by_kernel = collections.defaultdict(lambda: [0.0, 0])
    for name, ms in launches:
        for table, key in ((by_kind, kind_of(name)), (by_kernel, name)):
            table[key][0] += ms
            table[key][1] += 1
    total = sum(ms for _, ms in launches) / args.steps

    def row(label, ms, n):  # per step
        ms, n = ms / args.steps, n / args.steps
        print(f"{ms:9.3f} {100 * ms / total:5.1f}% {n:8.1f}  {label}")

    print(f"{total:.2f} ms of kernels a step, {len(launches) / args.steps:.0f} launches a step")
    print(f"{'ms/step':>9} {'share':>6} {'launches':>8}  kind")
    for kind, (ms, n) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        row(kind, ms, n)
    print(f"\n{'ms/step':>9} {'share':>6} {'launches':>8}  kernel (top {args.top})")
    for name, (ms, n) in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:args.top]:
        row(name, ms, n)


if __name__ == "__main__":
    main()
