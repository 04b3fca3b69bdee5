"""Our training step with malloc keeping freed memory (the package's default) against glibc's defaults.

tinygrad_reason/allocator.py raises glibc malloc's mmap and trim thresholds on import, so a step's
activations reuse the previous step's pages instead of being unmapped and faulted in again. This
times our nanoGPT-style step (bench_train.py's model) both ways. malloc's settings are per process,
so each setting runs in its own child process (TINYGRAD_REASON_MALLOC=reuse or =system), and the
rounds alternate between them so that drifts in the machine's speed hit both. Our model alone, no
torch in the child: torch's own allocations move glibc's adaptive thresholds too.

    python benchmarks/bench_malloc.py --config tiny --threads 1
    python benchmarks/bench_malloc.py --config small --threads 1 --steps 3 --rounds 2

Prints one JSON line per round and setting (median ms per step, minor page faults, user and system
CPU ms per step, maximum resident set), then one summary line with the medians over rounds and the
ratio reuse / system of the step time. Linux with glibc only (elsewhere the setting does nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def child(config: str, steps: int, warmup: int, data_parallel: bool) -> dict:
    import resource
    import time

    import numpy as np

    import bench_train
    from tinygrad_reason.fast import allocator

    cfg, model, opt = bench_train.build_ours(config)
    c = bench_train.CONFIGS[config]
    ids = np.random.default_rng(0).integers(0, c["vocab"], size=(c["batch"], c["ctx"] + 1))
    for _ in range(warmup):
        bench_train.our_step(model, opt, ids[:, :-1], ids[:, 1:], data_parallel=data_parallel)
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        bench_train.our_step(model, opt, ids[:, :-1], ids[:, 1:], data_parallel=data_parallel)
        times.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"malloc": "reuse" if allocator.applied else "system", "ms": round(float(np.median(times)) * 1e3, 2),
            "faults_per_step": round((after.ru_minflt - before.ru_minflt) / steps),
            "user_ms_per_step": round((after.ru_utime - before.ru_utime) / steps * 1e3, 1),
            "sys_ms_per_step": round((after.ru_stime - before.ru_stime) / steps * 1e3, 1),
            "max_rss_mib": round(after.ru_maxrss / 1024, 1)}


def run_child(setting: str, args) -> dict:
    env = dict(os.environ, TINYGRAD_REASON_MALLOC=setting)
    call = f"bench_malloc.child({args.config!r}, {args.steps}, {args.warmup}, {args.parallel == 'data'})"
    code = (f"import sys, json; sys.path.insert(0, {HERE!r}); import bench_train, bench_malloc;"
            f"bench_train._set_threads({args.threads}); print(json.dumps({call}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bench_malloc: the {setting} child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import statistics

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", choices=["tiny", "small", "medium"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", default="ops", choices=["ops", "data"],
                   help="ops: one forward/backward, ops split over the threads; data: a batch shard per thread")
    p.add_argument("--steps", type=int, default=8, help="timed steps per child")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="child pairs, settings alternating")
    args = p.parse_args()
    if args.steps < 1 or args.rounds < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--steps, --rounds and --threads must be >= 1, --warmup >= 0")
    rows = {"reuse": [], "system": []}
    for r in range(args.rounds):
        for setting in (("reuse", "system") if r % 2 == 0 else ("system", "reuse")):
            row = run_child(setting, args)
            if row["malloc"] != setting:
                raise RuntimeError(f"bench_malloc: asked for {setting}, the child ran {row['malloc']} "
                                   "(not Linux with glibc?)")
            rows[setting].append(row)
            print(json.dumps({"config": args.config, "threads": args.threads, "parallel": args.parallel,
                              "round": r, **row}), flush=True)
    med = {s: {k: statistics.median(row[k] for row in rows[s]) for k in rows[s][0] if k != "malloc"} for s in rows}
    print(json.dumps({"config": args.config, "threads": args.threads, "parallel": args.parallel, "summary": med,
                      "ratio_reuse_over_system": round(med["reuse"]["ms"] / med["system"]["ms"], 3)}))


if __name__ == "__main__":
    main()
