"""Performance machinery, kept out of the files a learner reads: threads and the chunk loop, MKL for
the large products, MKL's vector math, the fused elementwise kernels, packed weights for batched
decoding, and glibc malloc tuning. Imports only backend.py below it.

Nothing here runs on import. `configure_from_env()` applies the environment switches
(TINYGRAD_REASON_MALLOC, TINYGRAD_REASON_BLAS); the command line and the benchmarks call it.
"""
from __future__ import annotations

from . import allocator, blas


def configure_from_env() -> dict:
    """What the command line does at start: malloc keeps freed memory (allocator.py) unless
    TINYGRAD_REASON_MALLOC=system, and MKL is switched on when TINYGRAD_REASON_BLAS=mkl. Returns
    {"malloc_tuned": bool, "mkl": bool}."""
    return {"malloc_tuned": allocator.apply_default(), "mkl": blas.use_blas_from_env()}
