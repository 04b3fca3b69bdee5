"""Threads for our chunked kernels and BLAS: the thread count, the worker pool, and the chunk loop.

NumPy releases the GIL inside its loops, so the fused kernels (fast/kernels.py, the norms,
cross-entropy, attention and AdamW's update) split their work into cache-sized chunks that run
on a small pool of threads. `parallel_units` is that loop; the rest of this file says how many
threads there are (set_num_threads, TINYGRAD_REASON_THREADS, or min(2, cores)) and keeps BLAS from
spawning its own threads inside a chunk.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy as np

_threads = None
_DEFAULT_THREADS = max(1, min(2, os.cpu_count() or 1))   # os.cpu_count() is ~8 us: once
_local = threading.local()   # per-thread override (kernel_threads: a data-parallel shard's one thread)


def num_threads() -> int:
    """Threads for our chunked kernels: this thread's override (kernel_threads), else set_num_threads(),
    else TINYGRAD_REASON_THREADS, else min(2, cores)."""
    local = getattr(_local, "threads", None)
    if local:
        return local
    if _threads:
        return _threads
    env = os.environ.get("TINYGRAD_REASON_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"TINYGRAD_REASON_THREADS must be an integer, got {env!r}") from None
    return _DEFAULT_THREADS


def chosen_threads() -> int | None:
    """The count set by set_num_threads(), or None when the user has not chosen one."""
    return _threads


def set_num_threads(n: int) -> None:
    """Use n threads in BLAS (through threadpoolctl, at run time) and in our chunked kernels.

    On a busy machine one thread can be far faster: a multi-threaded BLAS call waits for a thread
    that cannot get a core (measured here: a 64x128x512 matmul took 6.5 ms with 2 threads on a
    loaded 2-core machine, 0.14 ms with 1).
    """
    global _threads
    if int(n) < 1:
        raise ValueError(f"set_num_threads: need at least 1 thread, got {n}")
    _threads = int(n)
    from threadpoolctl import threadpool_limits
    threadpool_limits(_threads)


@contextlib.contextmanager
def kernel_threads(n: int):
    """Our kernels use n threads on the calling thread only, inside the block (a data-parallel shard
    runs its kernels on its own thread while another shard runs on the other core)."""
    prev = getattr(_local, "threads", None)
    _local.threads = int(n)
    try:
        yield
    finally:
        _local.threads = prev


_pool = None
_pool_key = None


def worker_pool(threads: int):
    """The process's pool of threads - 1 workers for our chunked kernels (the caller is the other).

    A forked child inherits the executor but not its threads (work would wait forever): one pool per
    process, rebuilt when the thread count changes (set_num_threads).
    """
    global _pool, _pool_key
    if _pool is None or _pool_key != (os.getpid(), threads):
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="tinygrad_reason-kernel")
        _pool_key = (os.getpid(), threads)
    return _pool


_blas_controller = None


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS held to one thread inside the block: for matmuls issued from several of our own
    threads at once (parallel_units), each on its own share of the work."""
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController
        _blas_controller = ThreadpoolController()
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


PARALLEL_MIN = 256 * 1024         # elements below this run inline: the pool's hand-off costs more


def parallel_units(n_units: int, unit_size: int, chunk_elements: int, work, xp, dtype) -> None:
    """work(lo, hi, scratch) over units [0, n_units) in chunks of about chunk_elements elements.

    For fused ops whose units (a row, an attention head) mix matmuls with elementwise passes: a
    chunk's data stays in cache across the passes, and on NumPy the chunks are split over
    num_threads() threads with BLAS held to one thread inside (otherwise each small matmul
    would hand work to BLAS threads that are already busy). The chunk boundaries do not depend on
    the thread count, so per-chunk partial results, combined in chunk order, are bit-identical
    with 1 or 2 threads. scratch(shape, slot=0) is a per-thread buffer reused across its chunks.
    CuPy gets one call over every unit.
    """
    per_chunk = max(1, chunk_elements // max(unit_size, 1))
    if xp is not np or per_chunk >= n_units:      # CuPy, or one chunk (e.g. a decode step): no machinery
        work(0, n_units, lambda shape, slot=0: xp.empty(shape, dtype=dtype))
        return
    starts = list(range(0, n_units, per_chunk))

    def run(first: int, last: int) -> None:            # chunks [first, last)
        buffers: dict = {}

        def scratch(shape, slot: int = 0):
            size = math.prod(shape)
            buf = buffers.get(slot)
            if buf is None or buf.size < size:
                buf = buffers[slot] = np.empty(max(size, per_chunk * unit_size), dtype=dtype)
            return buf[:size].reshape(shape)

        for lo in starts[first:last]:
            work(lo, min(lo + per_chunk, n_units), scratch)

    threads = min(num_threads(), len(starts))
    if threads <= 1 or n_units * unit_size < PARALLEL_MIN:
        run(0, len(starts))
        return
    bounds = [len(starts) * i // threads for i in range(threads + 1)]
    with single_threaded_blas():
        futures = [worker_pool(threads).submit(run, a, b) for a, b in zip(bounds[1:-1], bounds[2:])]
        try:
            run(bounds[0], bounds[1])            # the calling thread takes the first share
        finally:
            for f in futures:
                f.result()                       # re-raises a worker's exception
