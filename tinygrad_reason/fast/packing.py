"""MKL-packed weights for batched decoding: a linear layer fed 2-64 rows on one thread, with MKL on.

OpenBLAS and plain MKL re-pack the weight inside every product, and at 16 rows that packing is a
good part of the product. Here a weight is packed once into MKL's layout (cblas_sgemm_pack) and
later products use the packed copy (cblas_sgemm_compute): the small GPT's 37 linear products in a
16-row decode step took 8.7-9.0 ms packed against 10.4-11.8 ms on OpenBLAS (one thread,
benchmarks/README.md).

Nothing outside this file needs to know. ops/matmul.Linear asks `skinny_matmul(x, w, version)`
for every 2-64-row product and gets None unless a packed copy applies. A weight is packed on its
second such product at the same version, so a weight that meets one (a prompt's forward, a
training step) is never packed, and the copy guards itself: the Tensor's version (bumped by an
optimizer step or load_state_dict) is part of the key, and a new version drops the stale copy. An
edit of `.data` in place that does not call `Tensor.bump_version()` is not seen. A packed copy
costs about its weight's size in memory and lives until its weight array is freed, the weight
changes, `release()` runs or MKL is switched off.
"""
from __future__ import annotations

import ctypes
import mmap
import threading
import weakref

import numpy as np

from . import blas, threads

SKINNY_ROWS = 64          # products with more rows than this never use a packed weight
_PACKED, _B_MATRIX = 151, 162     # CBLAS_STORAGE packed, CBLAS_IDENTIFIER B (mkl_cblas.h)


class _Packed:
    """One weight (out, in) at one version, packed for x @ weight.T once it has been used twice."""
    def __init__(self, weight: np.ndarray, version: int):
        self.weight = weakref.ref(weight)       # not kept alive by its packed copy
        self.version, self.uses = version, 0
        self.buffer = self._view = None

    def pack(self, weight: np.ndarray) -> None:
        n, k = weight.shape
        size, pack, _ = blas.pack_functions(weight.dtype)
        # an anonymous mapping commits only the pages MKL writes, about the weight's own size, where
        # the size MKL asks for is 1.1-13x that (7.9 MB for a 384 x 384 float32 matrix)
        buffer = mmap.mmap(-1, size(_B_MATRIX, SKINNY_ROWS, n, k))
        view = ctypes.c_char.from_buffer(buffer)
        pack(blas.ROW_MAJOR, _B_MATRIX, blas.TRANS, SKINNY_ROWS, n, k, 1.0, weight.ctypes.data, k,
             ctypes.addressof(view))
        self.buffer, self._view = buffer, view

    def matmul(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        (n, k), m = weight.shape, x.shape[0]
        out = np.empty((m, n), dtype=x.dtype)
        compute = blas.pack_functions(x.dtype)[2]
        compute(blas.ROW_MAJOR, blas.NO_TRANS, _PACKED, m, n, k, x.ctypes.data, k, ctypes.addressof(self._view), k,
                0.0, out.ctypes.data, n)
        return out

    def close(self) -> None:
        if self.buffer is not None:
            self._view = None                    # a mapping cannot close while a view of it exists
            self.buffer.close()
            self.buffer = None


_packs: dict = {}         # id(weight array) -> _Packed
_lock = threading.Lock()  # data-parallel shards on two threads may reach one weight at once


def _forget(key: int) -> None:
    entry = _packs.pop(key, None)
    if entry is not None:
        entry.close()


def skinny_matmul(x, weight, version: int = 0):
    """x @ weight.T from weight's packed copy, for 2-64 C-ordered rows on one thread with MKL on;
    None where that does not apply (the caller runs its own product): MKL off, more threads (NumPy's
    BLAS runs the product on them: the small GPT decoding 16 rows on 2 threads was 0.61-0.70x torch on
    MKL's one-thread packed products, 0.74-0.78x on OpenBLAS's two threads), an operand that does not
    fit, or the weight's first product at this version."""
    if (blas.mkl_library() is None or type(x) is not np.ndarray or type(weight) is not np.ndarray
            or blas.pack_functions(weight.dtype) is None or x.dtype != weight.dtype or x.ndim != 2
            or weight.ndim != 2 or x.shape[1] != weight.shape[1] or not 1 < x.shape[0] <= SKINNY_ROWS
            or not x.flags.c_contiguous or not weight.flags.c_contiguous or min(weight.shape) <= blas.MIN_SIDE
            or threads.num_threads() > 1):
        return None
    key = id(weight)
    with _lock:
        entry = _packs.get(key)
        if entry is None or entry.weight() is not weight:
            entry = _packs[key] = _Packed(weight, version)
            weakref.finalize(weight, _forget, key)
        elif entry.version != version:           # the weight changed since it was packed: the copy is stale
            entry.close()
            entry.version, entry.uses = version, 0
        if entry.buffer is None:
            entry.uses += 1
            if entry.uses < 2:
                return None
            entry.pack(weight)
    return entry.matmul(x, weight)


def packed_count() -> int:
    """How many weights have a packed copy now."""
    return sum(e.buffer is not None for e in _packs.values())


def release() -> None:
    """Free every packed copy (they are made again on demand)."""
    with _lock:
        for key in list(_packs):
            _forget(key)


blas.on_switch_off(release)
