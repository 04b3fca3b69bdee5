"""Data-parallel backward on one machine's cores: the batch split into shards, one thread per shard.

Why: our op-level parallelism (chunked kernels over a worker pool, BLAS's own threads) gains only
~1.4x from a second core, because NumPy drops and retakes the GIL around every ufunc call and each
op waits for its slowest thread. A whole shard per thread (its own forward and backward, with its
kernels and BLAS on one thread) keeps every core busy with long GIL-free stretches instead.
benchmarks/bench_train.py --parallel both measures the two side by side (benchmarks/README.md).

The gradient is the whole batch's: shard i's loss is weighted by its share w_i (its rows by
default, or shard_weight, e.g. its count of scored tokens, for a loss that averages over tokens),
and the shard gradients are summed in shard order. Each shard computes on one thread, so a step
repeats bit for bit run to run; against one backward of the whole batch it differs by float rounding.
Random draws (dropout) in shard i come from a generator seeded from the CPU generator, one seed
per shard, so they repeat too. CuPy tensors, threads=1 and one-row batches make a single shard:
the whole batch in one backward, its ops using the threads as usual.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import backend
from .fast.threads import kernel_threads, num_threads, single_threaded_blas, worker_pool
from .tensor import Tensor, grad, owned_grad


def _shard_bounds(rows: int, shards: int) -> list[tuple[int, int]]:
    return [(rows * i // shards, rows * (i + 1) // shards) for i in range(shards)]


@contextlib.contextmanager
def _own_thread(seed):
    """A shard running beside others: our kernels on its one thread, its own seeded random stream."""
    with kernel_threads(1), backend.use_generator(np.random.default_rng(int(seed))):
        yield


def data_parallel_backward(loss_fn, batch, params, threads: int | None = None, shard_weight=None) -> float:
    """Accumulate d(loss)/d(param) of the whole batch into each param's .grad; return the batch loss.

    loss_fn(*shard) -> scalar Tensor: the mean loss of one shard (`batch` is a tuple of arrays cut
    along their first axis, all with the same number of rows). shard_weight(*shard) -> number: the
    shard's weight before normalizing (default: its rows). threads: shards run at once (default:
    num_threads(); never more shards than rows; one on CuPy, where threads gain nothing).
    """
    batch = tuple(batch)
    if not batch:
        raise ValueError("data_parallel_backward: batch is empty; pass a tuple of arrays cut along axis 0")
    rows = len(batch[0])
    for i, a in enumerate(batch):
        if len(a) != rows:
            raise ValueError(f"data_parallel_backward: batch[{i}] has {len(a)} rows, batch[0] has {rows}; "
                             "every array is cut along its first axis, so they need the same number")
    params = [p for p in params if p.requires_grad]
    threads = num_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"data_parallel_backward: threads must be >= 1, got {threads}")
    on_cpu = (params[0].device if params else "cpu") == "cpu"
    n = max(1, min(threads, rows)) if on_cpu else 1
    concurrent = n > 1                 # shards at once: each on one kernel thread, with its own generator
    shards = [tuple(a[lo:hi] for a in batch) for lo, hi in _shard_bounds(rows, n)]
    sizes = [float(shard_weight(*s)) if shard_weight is not None else float(len(s[0])) for s in shards]
    total = sum(sizes)
    if total <= 0:
        raise ValueError(f"data_parallel_backward: shard weights sum to {total}; they must be positive")
    seeds = backend.generator("cpu").integers(0, 2 ** 63, size=n) if concurrent else None

    def run(i: int):
        """Shard i's weighted loss and gradients; while shards run at once, on the calling thread only."""
        if sizes[i] == 0:
            return 0.0, [None] * len(params)
        with _own_thread(seeds[i]) if concurrent else contextlib.nullcontext():
            loss = loss_fn(*shards[i])
            if not isinstance(loss, Tensor) or loss.size != 1:
                got = f"a Tensor of shape {loss.shape}" if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(f"data_parallel_backward: loss_fn must return a scalar Tensor, got {got}")
            weighted = loss * (sizes[i] / total)
            grads = grad(weighted, params, allow_unused=True) if params else ()
            return weighted.item(), [None if g is None else g.data for g in grads]

    if not concurrent:
        results = [run(0)]
    else:
        pool = worker_pool(max(n, num_threads()))   # the kernels' pool, when it is big enough
        with single_threaded_blas():
            futures = [pool.submit(run, i) for i in range(1, n)]
            try:
                first = run(0)                 # the calling thread takes shard 0
            finally:
                others = [f.exception() or f.result() for f in futures]
        for r in others:
            if isinstance(r, BaseException):
                raise r
        results = [first, *others]

    seen: set = set()
    for j, p in enumerate(params):
        parts = [r[1][j] for r in results if r[1][j] is not None]
        if not parts:
            continue
        if len(parts) == 1:        # one shard's gradient: copied only if it is a view or shared (as backward does)
            total_grad = owned_grad(Tensor._wrap(parts[0]), seen, False)
        else:
            total_grad = Tensor._wrap(parts[0] + parts[1])
            for g in parts[2:]:
                total_grad.data += g
        p.grad = total_grad if p.grad is None else p.grad + total_grad
    return float(sum(r[0] for r in results))
