"""Optional MKL for the large matrix products (the linear layers), called by ctypes on NumPy arrays.

NumPy's wheels bring OpenBLAS, which runs the linear layers' GEMMs (two thirds of a training step)
1.2-1.3x slower than MKL here (benchmarks/README.md, bench_blas.py). With the optional extra installed
(`pip install 'tinygrad_reason[mkl]'`, which brings Intel's `mkl` wheel) and MKL switched on
(`tg.use_mkl()`, or TINYGRAD_REASON_BLAS=mkl in the environment), `matmul2d` hands float32/float64
products of C- or Fortran-ordered 2-d arrays to cblas_sgemm / cblas_dgemm; anything else (other
layouts, dtypes, matrix-vector products, CuPy arrays, MKL off) is NumPy's matmul, so results never
depend on the switch beyond float rounding.

Threads: MKL runs its sequential layer, and a large product is split by rows over our own worker
threads (ctypes releases the GIL during the call): MKL's OpenMP layer spun threads that competed
with ours and OpenBLAS's for the cores (slower in the small GPT's step; benchmarks/README.md).
TINYGRAD_REASON_MKL_LAYER=intel keeps MKL's own threads.

Vector math: while MKL is on, the float32 exact-erf GELU and erf kernels take their normal CDF,
exp and erf from MKL's VML, one vectorized pass each (vml.py).

Packed weights for batched decoding are in packing.py.
"""
from __future__ import annotations

import ctypes
import os
import sys

import numpy as np

from . import threads

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112      # CBLAS enum values (cblas.h)
_MKL_THREADING_SEQUENTIAL = 1
SPLIT_MIN_FLOPS = 1 << 24          # products below this run whole on the calling thread
MIN_SIDE = 64                      # products with a side this small or smaller stay on NumPy
_lib = None          # the loaded libmkl_rt, while MKL is in use
_gemm = {}           # dtype -> cblas_?gemm
_pack_fns = {}       # dtype -> (cblas_?gemm_pack_get_size, cblas_?gemm_pack, cblas_?gemm_compute)


def _candidates(path: str | None) -> list[str]:
    if path:
        return [path]
    env = os.environ.get("TINYGRAD_REASON_MKL_PATH")
    if env:
        return [env]
    lib = os.path.join(sys.prefix, "lib")        # where the `mkl` wheel puts its libraries
    names = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.3.dylib", "libmkl_rt.2.dylib")
    return [os.path.join(lib, name) for name in names]


def use_mkl(path: str | None = None) -> str:
    """Route large GEMMs to MKL, and the float32 GELU / erf kernels' CDF, exp and erf to its VML;
    returns the library's path. A clear error when it cannot be loaded."""
    global _lib
    tried = []
    for candidate in _candidates(path):
        if not os.path.exists(candidate):
            tried.append(f"{candidate} (not found)")
            continue
        try:
            lib = ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            tried.append(f"{candidate} ({e})")
            continue
        i, p = ctypes.c_int, ctypes.c_void_p
        for dtype, name, scalar in ((np.float32, "cblas_sgemm", ctypes.c_float),
                                    (np.float64, "cblas_dgemm", ctypes.c_double)):
            fn = getattr(lib, name)
            fn.argtypes = [i, i, i, i, i, i, scalar, p, i, p, i, scalar, p, i]
            fn.restype = None
            _gemm[np.dtype(dtype)] = fn
            size, pack, compute = (getattr(lib, name + suffix) for suffix in ("_pack_get_size", "_pack", "_compute"))
            size.argtypes, size.restype = [i, i, i, i], ctypes.c_size_t
            pack.argtypes, pack.restype = [i, i, i, i, i, i, scalar, p, i, p], None
            compute.argtypes, compute.restype = [i, i, i, i, i, i, p, i, p, i, scalar, p, i], None
            _pack_fns[np.dtype(dtype)] = (size, pack, compute)
        if os.environ.get("TINYGRAD_REASON_MKL_LAYER", "sequential") == "sequential":
            lib.MKL_Set_Threading_Layer(ctypes.c_int(_MKL_THREADING_SEQUENTIAL))
        _lib = lib
        if threads.chosen_threads():              # keep the thread count the user chose
            set_threads(threads.chosen_threads())
        return candidate
    raise RuntimeError("use_mkl: could not load MKL's runtime library (libmkl_rt): tried "
                       + "; ".join(tried) + ". Install it with: pip install 'tinygrad_reason[mkl]', or pass "
                       "the path of libmkl_rt.so")


def use_numpy_blas() -> None:
    """Back to NumPy's own BLAS for every product."""
    global _lib
    for callback in _on_switch_off:             # packing.py frees its MKL-packed copies
        callback()
    _lib = None
    _gemm.clear()
    _pack_fns.clear()


def mkl_enabled() -> bool:
    return _lib is not None


def mkl_library():
    """The loaded libmkl_rt (a ctypes.CDLL) while MKL is on, else None: for vml.py and packing.py."""
    return _lib


def pack_functions(dtype):
    """(cblas_?gemm_pack_get_size, cblas_?gemm_pack, cblas_?gemm_compute) for dtype while MKL is on,
    else None."""
    return _pack_fns.get(np.dtype(dtype))


_on_switch_off = []       # called by use_numpy_blas(): users of MKL-made buffers free them


def on_switch_off(callback) -> None:
    _on_switch_off.append(callback)


def set_threads(n: int) -> None:
    if _lib is not None:
        _lib.MKL_Set_Num_Threads(ctypes.c_int(int(n)))


def _operand(a):
    """(transpose flag, leading dimension) of a 2-d array stored C- or Fortran-ordered, else None."""
    rows, cols = a.shape
    if a.flags.c_contiguous and (cols == 1 or a.strides[1] == a.itemsize):
        return NO_TRANS, max(1, cols)
    if a.flags.f_contiguous and (rows == 1 or a.strides[0] == a.itemsize):
        return TRANS, max(1, rows)              # a.T is C-ordered (cols, rows)
    return None


def matmul2d(a, b):
    """a @ b for 2-d arrays: MKL when it is on and the operands fit, NumPy otherwise."""
    fn = _gemm.get(a.dtype) if _lib is not None and type(a) is np.ndarray and type(b) is np.ndarray else None
    # skinny products (decoding: a few rows) stay on NumPy: a 1-wide MKL gemm through ctypes was ~15%
    # slower than NumPy's gemv in the batch-1 decode benchmark, and 16-wide ones split over our threads
    # stalled behind torch's spinning threads there (batch-16 decoding fell to 0.31x torch)
    if fn is None or a.dtype != b.dtype or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] \
            or min(a.shape[0], b.shape[1]) <= MIN_SIDE or not a.size or not b.size:
        return np.matmul(a, b)
    op_a, op_b = _operand(a), _operand(b)
    if op_a is None or op_b is None:
        return np.matmul(a, b)
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), dtype=a.dtype)
    itemsize = a.itemsize

    def rows(lo: int, hi: int) -> None:          # out[lo:hi] = a[lo:hi] @ b (ctypes releases the GIL)
        start = lo * (op_a[1] if op_a[0] == NO_TRANS else 1) * itemsize
        fn(ROW_MAJOR, op_a[0], op_b[0], hi - lo, n, k, 1.0, a.ctypes.data + start, op_a[1], b.ctypes.data,
           op_b[1], 0.0, out.ctypes.data + lo * max(1, n) * itemsize, max(1, n))

    n_threads = threads.num_threads()
    if n_threads > 1 and m >= 2 * n_threads and 2 * m * n * k >= SPLIT_MIN_FLOPS:
        bounds = [m * i // n_threads for i in range(n_threads + 1)]
        futures = [threads.worker_pool(n_threads).submit(rows, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
        try:
            rows(bounds[0], bounds[1])
        finally:
            for f in futures:
                f.result()
    else:
        rows(0, m)
    return out


def use_blas_from_env() -> bool:
    """use_mkl() when TINYGRAD_REASON_BLAS=mkl is set; True when MKL is then on. Called by the command
    line and the benchmarks (fast.configure_from_env), never by importing the package."""
    choice = os.environ.get("TINYGRAD_REASON_BLAS", "").strip().lower()
    if choice not in ("", "numpy", "mkl"):
        raise ValueError(f"TINYGRAD_REASON_BLAS must be 'mkl' or 'numpy', got {os.environ['TINYGRAD_REASON_BLAS']!r}")
    if choice == "mkl":
        use_mkl()
    return mkl_enabled()
