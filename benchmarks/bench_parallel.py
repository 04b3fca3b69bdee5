"""How our training step uses two threads: op-parallel vs data-parallel, and what limits both.

Times, in one process, taking turns, the forward + backward of the nanoGPT-style model of
bench_train.py (no optimizer step):
  one_thread     the whole batch on one thread (our kernels and BLAS held to one thread)
  ops            the whole batch, each op splitting its work over the threads
  data           tinygrad_reason.parallel.data_parallel_backward: a shard per thread
  shard_alone    one shard (batch / threads rows) on one thread, the other cores idle
and, as the machine's part, the same pure-NumPy loads on one thread and on all threads at once:
  gemm           1-thread BLAS products (2048 x 384 @ 384 x 1536): compute-bound
  stream         in-place multiplies of a 100 MB array: memory-bound
  matvec         ones @ M, 1-thread BLAS (the matrix-vector products of our bias gradients and row means)
  short_calls    in-place multiplies of a 64K-element array (256 KiB, in L2; ~5-15 us a call): the
                 call size of our chunked kernels. NumPy lets go of the GIL inside each call and
                 takes it back after, so threads making short calls hand the GIL to each other
                 every few microseconds; where that hand-off is slow (waking a sleeping thread on a
                 virtual machine) the second thread gains nothing, or even loses (efficiency 0.5 is what one
                 thread doing both jobs in turn would give)

    python benchmarks/bench_parallel.py --config small --threads 2

Prints JSON lines: medians in ms, and for the loads the efficiency (time alone / time with every
thread running its own copy; 1.0 means the threads do not slow each other).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402


def _median_ms(times) -> float:
    import numpy as np
    return round(float(np.median(times)) * 1e3, 1)


def model_steps(config: str, threads: int, repeats: int) -> dict:
    import numpy as np

    from tinygrad_reason.fast.threads import kernel_threads, single_threaded_blas
    from tinygrad_reason.parallel import data_parallel_backward
    _, model, _ = bench_train.build_ours(config)
    c = bench_train.CONFIGS[config]
    ids = np.random.default_rng(0).integers(0, c["vocab"], size=(c["batch"], c["ctx"] + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    shard = c["batch"] // threads

    def on_one_thread(rows):
        model.zero_grad()
        with kernel_threads(1), single_threaded_blas():
            model.loss(x[:rows], y[:rows]).backward()

    def ops():
        model.zero_grad()
        model.loss(x, y).backward()

    def data():
        model.zero_grad()
        data_parallel_backward(model.loss, (x, y), model.parameters(), threads=threads)

    runs = {"one_thread": lambda: on_one_thread(len(x)), "ops": ops, "data": data,
            "shard_alone": lambda: on_one_thread(shard)}
    times = {k: [] for k in runs}
    for i in range(repeats + 1):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if i:                                   # the first round warms up
                times[name].append(time.perf_counter() - t0)
    ms = {k: _median_ms(v) for k, v in times.items()}
    return {"config": config, "threads": threads, "repeats": repeats, **{f"{k}_ms": v for k, v in ms.items()},
            "ops_speedup": round(ms["one_thread"] / ms["ops"], 2),
            "data_speedup": round(ms["one_thread"] / ms["data"], 2),
            "data_shard_efficiency": round(ms["shard_alone"] / ms["data"], 2)}


def machine_loads(threads: int, repeats: int) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from tinygrad_reason.fast.threads import single_threaded_blas
    rng = np.random.default_rng(0)
    copies = range(threads)
    a = [rng.standard_normal((2048, 384), dtype=np.float32) for _ in copies]
    w = [rng.standard_normal((384, 1536), dtype=np.float32) for _ in copies]
    big = [np.ones(25_000_000, dtype=np.float32) for _ in copies]
    m = [rng.standard_normal((2048, 1536), dtype=np.float32) for _ in copies]
    ones = np.ones(2048, dtype=np.float32)
    short = [np.ones(64 * 1024, dtype=np.float32) for _ in copies]
    loads = {
        "gemm": lambda i: [a[i] @ w[i] for _ in range(5)],
        "stream": lambda i: [np.multiply(big[i], 1.0, out=big[i]) for _ in range(3)],
        "matvec": lambda i: [ones @ m[i] for _ in range(20)],
        "short_calls": lambda i: [np.multiply(short[i], 1.0, out=short[i]) for _ in range(2000)],
    }
    pool = ThreadPoolExecutor(threads)
    out = []
    with single_threaded_blas():
        for name, fn in loads.items():
            alone, together = [], []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                fn(0)
                t1 = time.perf_counter()
                list(pool.map(fn, copies))
                t2 = time.perf_counter()
                if i:
                    alone.append(t1 - t0)
                    together.append(t2 - t1)
            out.append({"load": name, "threads": threads, "alone_ms": _median_ms(alone),
                        "all_threads_ms": _median_ms(together),
                        "efficiency": round(float(np.median(alone) / np.median(together)), 2)})
    pool.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", choices=sorted(bench_train.CONFIGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up round)")
    ap.add_argument("--no-loads", action="store_true", help="skip the pure-NumPy machine loads")
    args = ap.parse_args()
    if args.threads < 2:
        ap.error("--threads must be at least 2: the point is how two or more threads share the work")
    bench_train._set_threads(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    print(json.dumps(model_steps(args.config, args.threads, args.repeats)), flush=True)
    if not args.no_loads:
        for row in machine_loads(args.threads, args.repeats):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
