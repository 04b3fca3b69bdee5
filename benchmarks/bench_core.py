"""Core-engine benchmark: tinygrad_reason vs torch (CPU), in one process, on the same thread count.

    python benchmarks/bench_core.py --threads 1          # full run
    python benchmarks/bench_core.py --threads 2 --quick  # fewer repeats, smaller MLPs

Part a) per-op overhead on small tensors (16x16): forward alone and forward+backward, microseconds
per call, median over repeats. At this size the arithmetic is nearly free, so the numbers measure
the framework: Python dispatch, graph recording, the backward engine.
Part b) forward+backward of a 2-layer MLP at sizes where matmuls dominate: ms per step and the
achieved GFLOP/s of the matmuls (both frameworks end in a BLAS GEMM, so the ratio shows how much
the rest costs).
Part c) the exact-erf GELU kernel on a decode step's, a prompt's and a training step's shapes (the
small GPT's MLP: 16, 512 and 4096 rows of 1536): forward alone, and forward with its derivative plus
the backward multiply against torch's gelu + gelu_backward. `--blas mkl` puts ours on MKL (the
[mkl] extra), whose VML then computes GELU's normal CDF and exp.

Every measurement prints one JSON line (grep '^{') and the end prints a readable table. See README.md.
"""
import argparse
import os
import sys

parser = argparse.ArgumentParser(description="tinygrad_reason vs torch CPU: per-op overhead and MLP fwd+bwd")
parser.add_argument("--threads", type=int, default=1, help="BLAS / intra-op threads for both frameworks")
parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller MLPs (a smoke run)")
parser.add_argument("--act", choices=("gelu", "relu"), default=None,
                    help="MLP activation (default: both; gelu's erf is where numpy loses most)")
parser.add_argument("--omp-passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE: torch's idle OpenMP threads sleep instead of spinning "
                         "(fairer to numpy's BLAS threads in part b, but adds a wake-up to torch's small ops)")
parser.add_argument("--only", choices=("ops", "mlp", "kernels"), default=None, help="run one part only")
parser.add_argument("--blas", choices=("numpy", "mkl"), default="numpy",
                    help="ours on NumPy's OpenBLAS, or on MKL (needs the [mkl] extra)")
args = parser.parse_args()

# Thread counts must be fixed before numpy (OpenBLAS) and torch (OpenMP / MKL) are imported.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TINYGRAD_REASON_THREADS"):
    os.environ[var] = str(args.threads)
os.environ["OPENBLAS_THREAD_TIMEOUT"] = "1"   # idle OpenBLAS threads sleep quickly instead of spinning
if args.omp_passive:   # torch's OpenMP threads sleep too, instead of spinning on cores OpenBLAS needs next
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tinygrad_reason as tg  # noqa: E402
from tinygrad_reason.fast import configure_from_env  # noqa: E402

configure_from_env()              # as the command line does: malloc keeps freed memory
torch.set_num_threads(args.threads)
if args.blas == "mkl":
    tg.use_mkl()
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass

RESULTS = []


def openblas_threads():
    """What OpenBLAS reports (best effort: numpy's bundled library, by ctypes); None if unknown."""
    import ctypes
    import glob
    libdir = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "*openblas*")):
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, sym):
                return getattr(lib, sym)()
    return None


def record(name, unit, ours, theirs, **extra):
    row = {"name": name, f"ours_{unit}": round(ours, 3), f"torch_{unit}": round(theirs, 3),
           "ratio": round(ours / theirs, 2), **extra}
    RESULTS.append((name, unit, ours, theirs, extra))
    print(json.dumps(row), flush=True)


def bench_pair(fn_ours, fn_torch, repeats, inner, warmup):
    """Median seconds per call of each fn; `inner` calls per timed sample, ours and torch alternating.

    inner=None picks it so that one sample of the slower fn takes about 20 ms (timer noise and
    one-off hiccups then matter little).
    """
    clock = time.perf_counter
    for _ in range(warmup):
        fn_ours()
        fn_torch()
    if inner is None:
        t0 = clock()
        fn_ours()
        fn_torch()
        inner = max(1, int(0.02 / (clock() - t0)))
    t_ours, t_torch = [], []
    for _ in range(repeats):
        for fn, out in ((fn_ours, t_ours), (fn_torch, t_torch)):
            t0 = clock()
            for _ in range(inner):
                fn()
            out.append((clock() - t0) / inner)
    return statistics.median(t_ours), statistics.median(t_torch)


# ---------------------------------------------------------------- a) per-op overhead
def per_op(quick):
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((16, 16)).astype(np.float32)
    b_np = rng.standard_normal((16, 16)).astype(np.float32)
    xo, yo = tg.Tensor(a_np, requires_grad=True), tg.Tensor(b_np, requires_grad=True)
    xt, yt = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    ops = {   # name: (ours, torch), each a function of (x, y)
        "add": (lambda x, y: x + y, lambda x, y: x + y),
        "mul": (lambda x, y: x * y, lambda x, y: x * y),
        "matmul": (lambda x, y: x @ y, lambda x, y: x @ y),
        "exp": (lambda x, y: x.exp(), lambda x, y: x.exp()),
        "tanh": (lambda x, y: x.tanh(), lambda x, y: x.tanh()),
        "sum": (lambda x, y: x.sum(), lambda x, y: x.sum()),
        "softmax": (lambda x, y: x.softmax(-1), lambda x, y: x.softmax(-1)),
        "getitem": (lambda x, y: x[2:10, ::2], lambda x, y: x[2:10, ::2]),
        "reshape": (lambda x, y: x.reshape(4, 64), lambda x, y: x.reshape(4, 64)),
    }
    repeats, inner, warmup = (15, 100, 200) if quick else (51, 200, 1000)
    for name, (f_ours, f_torch) in ops.items():
        fwd = bench_pair(lambda: f_ours(xo, yo), lambda: f_torch(xt, yt), repeats, inner, warmup)
        record(f"{name}/fwd", "us", fwd[0] * 1e6, fwd[1] * 1e6)

        def step_ours():
            xo.grad = yo.grad = None
            f_ours(xo, yo).sum().backward()

        def step_torch():
            xt.grad = yt.grad = None
            f_torch(xt, yt).sum().backward()
        both = bench_pair(step_ours, step_torch, repeats, inner, warmup)
        record(f"{name}/fwd+bwd", "us", both[0] * 1e6, both[1] * 1e6)


# ---------------------------------------------------------------- b) MLP forward + backward
def mlp(batch, d_in, d_hid, d_out, act, quick):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, d_in)).astype(np.float32)
    target = rng.standard_normal((batch, d_out)).astype(np.float32)
    w1 = (rng.standard_normal((d_in, d_hid)) / np.sqrt(d_in)).astype(np.float32)
    b1 = np.zeros(d_hid, np.float32)
    w2 = (rng.standard_normal((d_hid, d_out)) / np.sqrt(d_hid)).astype(np.float32)
    b2 = np.zeros(d_out, np.float32)

    po = [tg.Tensor(p.copy(), requires_grad=True) for p in (w1, b1, w2, b2)]
    pt = [torch.tensor(p.copy(), requires_grad=True) for p in (w1, b1, w2, b2)]
    xo, to = tg.Tensor(x), tg.Tensor(target)
    xt, tt = torch.tensor(x), torch.tensor(target)
    act_ours = {"gelu": lambda h: h.gelu(), "relu": lambda h: h.relu()}[act]
    act_torch = {"gelu": torch.nn.functional.gelu, "relu": torch.relu}[act]

    def step_ours():
        for p in po:
            p.grad = None
        h = act_ours(xo @ po[0] + po[1])
        loss = ((h @ po[2] + po[3] - to) ** 2).mean()
        loss.backward()
        return loss

    def step_torch():
        for p in pt:
            p.grad = None
        h = act_torch(xt @ pt[0] + pt[1])
        loss = ((h @ pt[2] + pt[3] - tt) ** 2).mean()
        loss.backward()
        return loss

    # same weights, same maths: the two must agree before their speed means anything
    lo, lt = step_ours(), step_torch()
    np.testing.assert_allclose(lo.item(), lt.item(), rtol=1e-4)
    for p, q in zip(po, pt):
        g, h = p.grad.numpy(), q.grad.numpy()
        assert np.abs(g - h).max() <= 1e-4 * np.abs(h).max() + 1e-7, "gradients disagree with torch"

    # GEMM flops per step: forward x@W1, h@W2; backward dW2, dh, dW1 (x needs no grad: no dx)
    flops = 2 * batch * (d_in * d_hid + d_hid * d_out) + 2 * batch * (d_hid * d_out * 2 + d_in * d_hid)
    ours, theirs = bench_pair(step_ours, step_torch, 5 if quick else 11, None, 3 if quick else 5)
    name = f"mlp b{batch} {d_in}-{d_hid}-{d_out} {act}"
    record(name, "ms", ours * 1e3, theirs * 1e3, gflop=round(flops / 1e9, 3),
           ours_gflops=round(flops / ours / 1e9, 1), torch_gflops=round(flops / theirs / 1e9, 1))


def gemm_floor(batch, d_in, d_hid, d_out, quick):
    """The same five GEMMs as one MLP step, raw: numpy (OpenBLAS; what we call) vs torch, no autograd.

    Our step can never beat numpy's GEMMs, so (our step - this) is what the engine and the
    elementwise ops cost, and this row's ratio is the BLAS libraries' own difference.
    """
    rng = np.random.default_rng(0)
    arrs = [rng.standard_normal(s).astype(np.float32) for s in
            ((batch, d_in), (d_in, d_hid), (batch, d_hid), (d_hid, d_out), (batch, d_out))]
    x, w1, h, w2, g = arrs
    xt, w1t, ht, w2t, gt = (torch.from_numpy(a) for a in arrs)

    def five_np():
        x @ w1, h @ w2, h.T @ g, g @ w2.T, x.T @ h

    def five_torch():
        with torch.no_grad():
            xt @ w1t, ht @ w2t, ht.T @ gt, gt @ w2t.T, xt.T @ ht
    flops = 2 * batch * (2 * d_in * d_hid + 3 * d_hid * d_out)
    ours, theirs = bench_pair(five_np, five_torch, 5 if quick else 11, None, 3 if quick else 5)
    record(f"gemms b{batch} {d_in}-{d_hid}-{d_out} (numpy)", "ms", ours * 1e3, theirs * 1e3,
           gflop=round(flops / 1e9, 3), ours_gflops=round(flops / ours / 1e9, 1),
           torch_gflops=round(flops / theirs / 1e9, 1))


# ---------------------------------------------------------------- c) the GELU kernel
def gelu_kernel(quick):
    from tinygrad_reason.fast import kernels
    rng = np.random.default_rng(0)
    repeats, warmup = (5, 2) if quick else (15, 5)
    for rows in (16, 512) if quick else (16, 512, 4096):
        x = rng.standard_normal((rows, 1536)).astype(np.float32)
        g = rng.standard_normal(x.shape).astype(np.float32)
        xt, gt = torch.from_numpy(x), torch.from_numpy(g)
        fwd = bench_pair(lambda: kernels.gelu_forward(x), lambda: torch.nn.functional.gelu(xt),
                         repeats, None, warmup)
        record(f"gelu fwd {rows}x1536", "us", fwd[0] * 1e6, fwd[1] * 1e6)

        def train_ours():                      # what a training step runs: keep the derivative, then g * it
            _, derivative = kernels.gelu_forward_and_derivative(x)
            return g * derivative

        def train_torch():
            torch.nn.functional.gelu(xt)
            return torch.ops.aten.gelu_backward(gt, xt)
        both = bench_pair(train_ours, train_torch, repeats, None, warmup)
        record(f"gelu fwd+bwd {rows}x1536", "us", both[0] * 1e6, both[1] * 1e6)


def load_note() -> str:
    load = os.getloadavg()[0]
    busy = load > args.threads + 0.5
    return f"load average {load:.2f}" + (" (other processes are busy: expect noisy figures)" if busy else "")


def main():
    print(f"# tinygrad_reason {tg.__version__} | numpy {np.__version__} | torch {torch.__version__} | "
          f"python {platform.python_version()} | {platform.machine()} {os.cpu_count()} cpus")
    print(f"# threads {args.threads}, ours on {args.blas}: torch.get_num_threads()={torch.get_num_threads()}, "
          f"OpenBLAS reports {openblas_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"quick={args.quick}, {load_note()}", flush=True)
    if args.only in (None, "ops"):
        per_op(args.quick)
    if args.only in (None, "mlp"):
        sizes = [(64, 256, 1024, 256), (32, 128, 512, 128)] if args.quick else \
                [(256, 1024, 4096, 1024), (64, 512, 2048, 512)]
        for size in sizes:
            gemm_floor(*size, args.quick)
            for act in ([args.act] if args.act else ["relu", "gelu"]):
                mlp(*size, act, args.quick)
    if args.only in (None, "kernels"):
        gelu_kernel(args.quick)

    print(f"\n# at the end: {load_note()}")
    print(f"{'measurement':<34}{'ours':>12}{'torch':>12}{'ours/torch':>12}   extra")
    for name, unit, ours, theirs, extra in RESULTS:
        more = f"   GFLOP/s ours {extra['ours_gflops']}, torch {extra['torch_gflops']}" if extra else ""
        print(f"{name:<34}{ours:>9.1f} {unit:<2}{theirs:>9.1f} {unit:<2}{ours / theirs:>11.2f}x{more}")


if __name__ == "__main__":
    main()
