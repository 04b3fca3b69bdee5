"""Optional MKL for the large matrix products (the linear layers), called by ctypes on NumPy arrays.

NumPy's wheels bring OpenBLAS. On the benchmark machine it runs the linear layers' GEMMs of a
training step 1.2-1.3x slower than MKL (benchmarks/bench_blas.py, small GPT: 2269 vs 1737 ms on one
thread, 1580 vs 1258 ms on two), and those GEMMs are two thirds of a step. With the optional extra installed
(`pip install 'tinygrad_reason[mkl]'`, which brings Intel's `mkl` wheel) and MKL switched on
(`tg.use_mkl()`, or TINYGRAD_REASON_BLAS=mkl in the environment), `matmul2d` hands float32/float64
products of C- or Fortran-ordered 2-d arrays to cblas_sgemm / cblas_dgemm; anything else (other
layouts, dtypes, matrix-vector products, CuPy arrays, MKL off) is NumPy's matmul, so results never
depend on the switch beyond float rounding.

Threads: MKL runs its sequential layer, and a large product is split by rows over our own worker
threads (ctypes releases the GIL during the call). With MKL's OpenMP layer its spinning threads
competed with ours and OpenBLAS's for the two cores: measured in the small GPT's step, 1.27-1.34x
torch that way (3 runs) against 1.22x split over our threads (1 run); TINYGRAD_REASON_MKL_LAYER=intel
keeps MKL's own threads.

Vector math: while MKL is on, the float32 exact-erf GELU and erf kernels take their normal CDF,
exp and erf from MKL's VML, one vectorized pass each (vml.py).

Packed weights (batched decoding): inside `packed_weights(model)`, which sampling.generate enters
for every call, a linear layer fed 2-64 rows on one thread multiplies by an MKL-packed copy of its
weight (cblas_sgemm_pack / cblas_sgemm_compute), made on the weight's second such product and freed
when the block ends. OpenBLAS and plain MKL re-pack the weight inside every product, and at 16 rows
that packing is a good part of the product: the small GPT's 37 linear products in a 16-row decode
step took 8.7-9.0 ms packed against 10.4-11.8 ms on OpenBLAS (one thread, benchmarks/README.md).
"""
from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
import threading

import numpy as np

from . import backend

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_PACKED, _B_MATRIX = 151, 162
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
    return [os.path.join(lib, name) for name in ("libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.2.dylib")]


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
        if backend._threads:                      # keep the thread count the user chose
            set_threads(backend._threads)
        return candidate
    raise RuntimeError("use_mkl: could not load MKL's runtime library (libmkl_rt): tried "
                       + "; ".join(tried) + ". Install it with: pip install 'tinygrad_reason[mkl]', or pass "
                       "the path of libmkl_rt.so")


def use_numpy_blas() -> None:
    """Back to NumPy's own BLAS for every product."""
    global _lib
    if _packs:
        raise RuntimeError("use_numpy_blas: called inside blas.packed_weights(); leave that block first")
    _lib = None
    _gemm.clear()
    _pack_fns.clear()


def mkl_enabled() -> bool:
    return _lib is not None


def set_threads(n: int) -> None:
    if _lib is not None:
        _lib.MKL_Set_Num_Threads(ctypes.c_int(int(n)))


def _operand(a):
    """(transpose flag, leading dimension) of a 2-d array stored C- or Fortran-ordered, else None."""
    rows, cols = a.shape
    if a.flags.c_contiguous and (cols == 1 or a.strides[1] == a.itemsize):
        return _NO_TRANS, max(1, cols)
    if a.flags.f_contiguous and (rows == 1 or a.strides[0] == a.itemsize):
        return _TRANS, max(1, rows)              # a.T is C-ordered (cols, rows)
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
        start = lo * (op_a[1] if op_a[0] == _NO_TRANS else 1) * itemsize
        fn(_ROW_MAJOR, op_a[0], op_b[0], hi - lo, n, k, 1.0, a.ctypes.data + start, op_a[1], b.ctypes.data,
           op_b[1], 0.0, out.ctypes.data + lo * max(1, n) * itemsize, max(1, n))

    threads = backend.num_threads()
    if threads > 1 and m >= 2 * threads and 2 * m * n * k >= SPLIT_MIN_FLOPS:
        bounds = [m * i // threads for i in range(threads + 1)]
        futures = [backend.worker_pool(threads).submit(rows, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
        try:
            rows(bounds[0], bounds[1])
        finally:
            for f in futures:
                f.result()
    else:
        rows(0, m)
    return out


SKINNY_ROWS = 64          # products with more rows than this never use a packed weight


class _Packed:
    """A weight (out, in) that may be packed for x @ weight.T: MKL's packed layout (a full reorder of
    the matrix into its kernel's blocks) made once, instead of inside every product. Packed on its
    second skinny product, so a weight that meets one (a prompt's forward) is never packed."""
    def __init__(self, weight: np.ndarray):
        self.weight = weight                     # held, so its id stays unique while registered
        self.uses = 0
        self.buffer = self._view = None

    def pack(self) -> None:
        n, k = self.weight.shape
        size, pack, _ = _pack_fns[self.weight.dtype]
        # an anonymous mapping commits only the pages MKL writes, about the weight's own size, where
        # the size MKL asks for is 1.1-13x that (7.9 MB for a 384 x 384 float32 matrix)
        buffer = mmap.mmap(-1, size(_B_MATRIX, SKINNY_ROWS, n, k))
        view = ctypes.c_char.from_buffer(buffer)
        pack(_ROW_MAJOR, _B_MATRIX, _TRANS, SKINNY_ROWS, n, k, 1.0, self.weight.ctypes.data, k,
             ctypes.addressof(view))
        self.buffer, self._view = buffer, view

    def matmul(self, x: np.ndarray) -> np.ndarray:
        (n, k), m = self.weight.shape, x.shape[0]
        out = np.empty((m, n), dtype=x.dtype)
        compute = _pack_fns[x.dtype][2]
        compute(_ROW_MAJOR, _NO_TRANS, _PACKED, m, n, k, x.ctypes.data, k, ctypes.addressof(self._view), k, 0.0,
                out.ctypes.data, n)
        return out

    def close(self) -> None:
        if self.buffer is not None:
            self._view = None                    # a mapping cannot close while a view of it exists
            self.buffer.close()


_packs = {}               # id(weight) -> _Packed, inside packed_weights()
_pack_lock = threading.Lock()


@contextlib.contextmanager
def packed_weights(weights):
    """Inside the block, linear layers fed 2-64 rows (batched decoding) use MKL-packed copies of
    `weights` (a Module's parameters, or arrays or Tensors): each weight is packed on its second such
    product and kept until the block ends, so the products stop re-packing it every time. Costs about
    the packed weights' size in memory, and one pass over each; a no-op unless MKL is on. Blocks nest
    (an inner one adds only what the outer lacks). The weights must not change inside: an optimizer
    step or load_state_dict on a packed one is an error, and an in-place edit would not be seen."""
    if hasattr(weights, "parameters"):
        weights = weights.parameters()
    added = []
    try:
        if _lib is not None:
            for w in weights:
                w = w if isinstance(w, np.ndarray) else w.data          # a Tensor's array
                if (type(w) is np.ndarray and w.ndim == 2 and w.dtype in _pack_fns and w.flags.c_contiguous
                        and min(w.shape) > MIN_SIDE and id(w) not in _packs):
                    _packs[id(w)] = _Packed(w)
                    added.append(id(w))
        yield
    finally:
        for key in added:
            _packs.pop(key).close()


def packed_matmul(x, weight):
    """x @ weight.T with weight's packed copy inside packed_weights(), for 2-64 C-ordered rows on one
    thread; None when weight is not registered there, x does not fit, or this is weight's first such
    product. With more threads NumPy's BLAS runs it on them: the small GPT decoding 16 rows on 2 threads
    was 0.61-0.70x torch on MKL's one-thread packed products, 0.74-0.78x on OpenBLAS's two threads."""
    entry = _packs.get(id(weight)) if _packs else None
    if entry is None or entry.weight is not weight or type(x) is not np.ndarray or x.dtype != weight.dtype \
            or x.ndim != 2 or x.shape[1] != weight.shape[1] or not 1 < x.shape[0] <= SKINNY_ROWS \
            or not x.flags.c_contiguous or backend.num_threads() > 1:
        return None
    if entry.buffer is None:
        with _pack_lock:                         # shards on two threads may reach it at once
            entry.uses += 1
            if entry.buffer is None:
                if entry.uses < 2:
                    return None
                entry.pack()
    return entry.matmul(x)


def check_not_packed(arrays, what: str) -> None:
    """A clear error when `what` would change an array registered in packed_weights() (its packed copy
    would go stale)."""
    if _packs and any(getattr(_packs.get(id(a)), "weight", None) is a for a in arrays):
        raise RuntimeError(f"{what}: a parameter is inside blas.packed_weights(), whose packed copy would "
                           "go stale; change the weights after the block")


if os.environ.get("TINYGRAD_REASON_BLAS", "").lower() == "mkl":
    use_mkl()
