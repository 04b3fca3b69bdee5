"""Data parallelism on one machine: the same global batch's training step (forward, backward, AdamW) in
one process on 1 thread, in one process on N threads (parallel.data_parallel_backward, a shard per
thread), and on N MPI ranks of 1 thread each (comm.py: a shard per rank, one gradient allreduce).

    python benchmarks/bench_mpi.py --configs tiny,small --ranks 2

The MPI side is this script again under `mpiexec -n N` (--worker). Each rank holds the whole model and
takes its 1/N of the batch, as train/sft.py does. Per configuration, one JSON line: the median step
of each mode, the allreduce's share of the MPI step, the speed-ups over one thread, and the scaling
efficiency (speed-up / N). Models and batches are benchmarks/bench_train.py's configurations.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402


def batch(name: str):
    import numpy as np
    c = bench_train.CONFIGS[name]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, c["vocab"], (c["batch"], c["ctx"]))
    return ids, np.roll(ids, -1, axis=1)


def timed_steps(name: str, steps: int, step_fn) -> list:
    times = []
    for _ in range(steps + 1):                       # the first step warms up (allocations, threads)
        t0 = time.perf_counter()
        step_fn()
        times.append(time.perf_counter() - t0)
    return times[1:]


def in_process(name: str, threads: int, steps: int) -> float:
    from tinygrad_reason.fast.threads import set_num_threads
    set_num_threads(threads)
    _, model, opt = bench_train.build_ours(name)
    ids, targets = batch(name)
    return statistics.median(timed_steps(name, steps, lambda: bench_train.our_step(
        model, opt, ids, targets, data_parallel=threads > 1)))


def worker(name: str, steps: int) -> None:
    from tinygrad_reason.comm import GradientBuffer, get_comm
    from tinygrad_reason.fast.threads import set_num_threads
    set_num_threads(1)
    comm = get_comm()
    _, model, opt = bench_train.build_ours(name)
    ids, targets = batch(name)
    share = len(ids) // comm.size
    rows = slice(comm.rank * share, (comm.rank + 1) * share)
    params = list(model.parameters())
    for p in params:
        comm.broadcast_(p.data)
    grads = GradientBuffer(params)
    reduce_times = []

    def step():
        opt.zero_grad()
        loss = model.loss(ids[rows], targets[rows]) * (1.0 / comm.size)   # equal shards: equal weights
        loss.backward()
        t0 = time.perf_counter()
        grads.allreduce_sum(comm)
        reduce_times.append(time.perf_counter() - t0)
        opt.step()

    times = timed_steps(name, steps, step)
    if comm.is_root:
        print(json.dumps({"mpi_step_s": statistics.median(times), "allreduce_s": statistics.median(reduce_times[1:]),
                          "gradient_floats": int(grads.flat.size)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        bench_train._set_threads(1)
        return worker(args.worker, args.steps)
    exe = shutil.which("mpiexec")
    if exe is None:
        sys.exit("bench_mpi: no mpiexec on PATH (pip install -e '.[mpi]')")
    for name in args.configs.split(","):
        one = in_process(name, 1, args.steps)
        threaded = in_process(name, args.ranks, args.steps)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TINYGRAD_REASON_THREADS": "1"}
        run = subprocess.run([exe, "-n", str(args.ranks), sys.executable, os.path.abspath(__file__), "--worker", name,
                              "--steps", str(args.steps)], capture_output=True, text=True, env=env, timeout=1800)
        if run.returncode != 0:
            sys.exit(f"bench_mpi: the MPI run failed:\n{run.stderr[-2000:]}")
        mpi = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
        n = args.ranks
        print(json.dumps({"config": name, "ranks": n, "one_thread_step_s": round(one, 4),
                          "threads_step_s": round(threaded, 4), "mpi_step_s": round(mpi["mpi_step_s"], 4),
                          "allreduce_s": round(mpi["allreduce_s"], 5),
                          "allreduce_share": round(mpi["allreduce_s"] / mpi["mpi_step_s"], 4),
                          "gradient_floats": mpi["gradient_floats"],
                          "speedup_threads": round(one / threaded, 3), "speedup_mpi": round(one / mpi["mpi_step_s"], 3),
                          "efficiency_threads": round(one / threaded / n, 3),
                          "efficiency_mpi": round(one / mpi["mpi_step_s"] / n, 3)}), flush=True)


if __name__ == "__main__":
    main()
