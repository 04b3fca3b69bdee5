"""The array backend: NumPy on "cpu", CuPy on "cuda"; random generators; the default dtype.

Everything above this file is written once against an array module `xp`, picked here.
CuPy is imported only when a "cuda" array is asked for, so CPU users never pay for it.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

DEVICES = ("cpu", "cuda")
default_dtype = np.float32

_cupy = None          # the cupy module once imported successfully
_cupy_error = None    # why importing / using cupy failed, for the error message


def _import_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            _cupy = cupy
        except Exception as e:  # ImportError, or a broken CUDA install raising at import
            _cupy_error = e
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA GPU."""
    cp = _import_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda":
        cp = _import_cupy()
        if cp is None:
            raise RuntimeError(
                "device 'cuda' needs CuPy, which could not be imported "
                f"({type(_cupy_error).__name__}: {_cupy_error}). "
                "Install it with: pip install 'tinygrad_reason[cuda]'  (the cupy-cuda12x wheel)")
        if not cuda_available():
            raise RuntimeError("device 'cuda': CuPy is installed but no CUDA GPU is visible "
                               "(cupy.cuda.runtime.getDeviceCount() found none or failed)")
    return device


def xp_for(device: str):
    """The array module for a device name."""
    if device == "cpu":
        return np
    check_device(device)
    return _cupy


def get_array_module(arr):
    """numpy or cupy, whichever owns `arr` (DeZero's get_array_module)."""
    if type(arr) is np.ndarray or _cupy is None:
        return np
    return _cupy if isinstance(arr, _cupy.ndarray) else np


def device_of(arr) -> str:
    return "cpu" if get_array_module(arr) is np else "cuda"


def to_device(arr, device: str):
    """Copy an array to a device (no copy when it is already there)."""
    if device_of(arr) == device:
        return arr
    if device == "cpu":
        return _cupy.asnumpy(arr)
    return xp_for(device).asarray(arr)


# ---------------------------------------------------------------- threads
_threads = None
_DEFAULT_THREADS = max(1, min(2, os.cpu_count() or 1))   # os.cpu_count() is ~8 us: once
_local = threading.local()   # per-thread overrides: kernel threads, random generators (parallel.py)


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
    threads at once (ops/kernels.py parallel_units), each on its own share of the work."""
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController
        _blas_controller = ThreadpoolController()
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


# ---------------------------------------------------------------- random generators
_seed = None
_generators: dict[str, object] = {}


def manual_seed(seed: int) -> None:
    """Seed every backend's generator, so runs repeat exactly on each device."""
    global _seed
    _seed = int(seed)
    _generators.clear()
    if _cupy is not None:
        _cupy.random.seed(_seed)


def generator(device: str = "cpu"):
    """The seeded random generator of a device: numpy.random.Generator or cupy's RandomState
    (or the calling thread's own, inside use_generator)."""
    local = getattr(_local, "generators", None)
    if local is not None and device in local:
        return local[device]
    gen = _generators.get(device)
    if gen is None:
        if device == "cpu":
            gen = np.random.default_rng(_seed)
        else:
            cp = xp_for(device)
            gen = cp.random.RandomState(_seed)
        _generators[device] = gen
    return gen


@contextlib.contextmanager
def use_generator(gen, device: str = "cpu"):
    """Random draws on `device` from the calling thread come from `gen` inside the block: threads
    that draw concurrently (dropout in data-parallel shards) each get a seeded stream of their own,
    so runs repeat exactly whatever order the threads run in."""
    prev = getattr(_local, "generators", None)
    _local.generators = {**(prev or {}), device: gen}
    try:
        yield
    finally:
        _local.generators = prev


def rng_state(device: str = "cpu"):
    """The generator's state, to save in a checkpoint (numpy only)."""
    return generator(device).bit_generator.state if device == "cpu" else None


def set_rng_state(state, device: str = "cpu") -> None:
    generator(device).bit_generator.state = state


# ---------------------------------------------------------------- special functions
def erf(x):
    """Error function on an array of either backend.

    NumPy has no erf, and SciPy is not a dependency. float64 (the dtype of gradient checks)
    gets the exact libm value element by element; float32 gets Abramowitz & Stegun 7.1.26,
    whose absolute error (<1.5e-7) is below float32 resolution near 1, evaluated over cache-sized
    chunks by ops/kernels.py, or MKL's vmsErf while MKL is on (float16 goes through float32;
    integers get float64).
    """
    xp = get_array_module(x)
    if xp is not np:
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)
    if x.dtype.kind != "f":
        return _erf_exact(x)
    if x.dtype == np.float64 or x.size <= 64:
        return _erf_exact(x).astype(x.dtype, copy=False)
    from .ops.kernels import erf_float32      # imported here: ops depends on this module
    if x.dtype == np.float32:
        return erf_float32(x)
    return erf_float32(x.astype(np.float32)).astype(x.dtype)


_erf_exact = np.vectorize(__import__("math").erf, otypes=[np.float64])
