"""MKL's vector math library (VML) for the fused kernels' transcendental passes, while MKL is on.

With MKL switched on (`tg.use_mkl()`, see blas.py) the float32 exact-erf GELU takes its normal CDF
from vmsCdfNorm and its exp from vmsExp, and the float32 erf op from vmsErf: one vectorized pass
each, where the NumPy kernels (kernels.py) spend about twenty passes on A&S 7.1.26 (GELU's forward
about 2.5-3.5x faster; `python benchmarks/bench_core.py --only kernels`, benchmarks/README.md). The
functions run in high-accuracy mode
(VML_HA, about 1 ulp) and report no errors (VML_ERRMODE_NOERR: exp underflow and overflow are the
right limits here, as in the NumPy kernels, which ignore them); subnormal results are kept.
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import blas

_HIGH_ACCURACY_NO_ERRORS = 0x2 | 0x2000     # VML_HA | VML_ERRMODE_NOERR (mkl_vml_defines.h)
_bound: dict = {}                           # (library, symbol) -> fn(a, out), made once


def function(name: str, dtype):
    """VML's `name` ("CdfNorm", "Erf", "Exp") for `dtype` as fn(a, out), over C-contiguous arrays of
    equal size; None while MKL is off or for dtypes other than float32 and float64."""
    lib = blas.mkl_library()
    dtype = np.dtype(dtype)
    if lib is None or dtype not in (np.float32, np.float64):
        return None
    symbol = ("vms" if dtype == np.float32 else "vmd") + name
    fn = _bound.get((id(lib), symbol))
    if fn is None:
        fn = _bound[(id(lib), symbol)] = _bind(getattr(lib, symbol), symbol)
    return fn


def _bind(raw, symbol: str):
    raw.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    raw.restype = None

    def apply(a, out) -> None:                 # ctypes releases the GIL: chunks run on our threads
        if a.size >= 2 ** 31:                  # VML counts in a 32-bit int: callers pass chunks
            raise ValueError(f"vml {symbol}: {a.size} elements in one call, at most 2**31 - 1")
        raw(a.size, a.ctypes.data, out.ctypes.data, _HIGH_ACCURACY_NO_ERRORS)
    return apply
