"""Fused elementwise kernels for NumPy: GELU (exact erf and tanh), SiLU, and float32 erf.

Written as whole-array NumPy expressions, GELU streams a dozen array-sized temporaries through
main memory (62 ms for erf alone on 6.3M float32 elements). Here the same formulas run over
cache-sized chunks of the flattened input with preallocated scratch buffers and `out=`, so every
intermediate pass reads and writes L2-resident data, and each full-size array is touched once.
Chunks may run on a small thread pool: NumPy ufuncs release the GIL inside their loops.

Float32 uses Abramowitz & Stegun 7.1.26 written for the normal CDF (z = |x| / sqrt 2):

    erf(z) = 1 - poly(t) exp(-z^2),  t = 1 / (1 + p z)
    q = 0.5 poly(t) exp(-x^2 / 2),   Phi(x) = q for x < 0, 1 - q for x >= 0

exp(-x^2 / 2) is also what the derivative's pdf needs, so backward costs one exp, and Phi for
x < 0 is q itself (no 1 + erf cancellation: the negative tail keeps its relative accuracy).
The formula's absolute error is < 1.5e-7 in erf, so < 7.5e-8 in Phi.

With MKL on (tg.use_mkl()), float32 GELU takes Phi and exp, and erf takes erf, from MKL's VML
(vml.py): one vectorized pass each instead of the formula's ~20 NumPy passes, and ~1 ulp accurate.

float64 (gradient checks, torch parity) keeps the exact path: libm's erf per element. Other
floating dtypes (float16) are computed in float32 and rounded back; CuPy arrays use plain CuPy
expressions with cupyx's erf.

The tanh GELU and SiLU kernels are the same formulas as the Tensor-op versions, chunked, in the
input's own dtype (float64 included: they involve no approximation).

Threads: threads.num_threads() (TINYGRAD_REASON_THREADS, or set_num_threads); arrays under PARALLEL_MIN
elements run inline on the calling thread. On the 2-core benchmark machine 2 threads took the
exact GELU forward from ~20 to ~13-17 ms (6.3M float32), and 64K-element chunks beat 16K and 32K
(with 16K chunks the per-call Python work under the GIL makes 2 threads slower than 1).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import backend
from . import vml
from .threads import parallel_units

CHUNK = 64 * 1024                 # elements per chunk: 5 float32 buffers of 256 KiB stay in L2


def _run_chunked(chunk_fn, out, ins, n_scratch: int, extra_outs=()) -> None:
    """chunk_fn(*input_chunks, out_chunk, *extra_out_chunks, *scratch_chunks) over contiguous flat
    arrays, in CHUNK-element chunks over our threads (parallel_units). The errstate is set around each
    chunk (it is per thread): exp underflow and x*x overflow for huge |x| are expected and give the
    right limits.
    """
    flat = [a.reshape(-1) for a in (*ins, out, *extra_outs)]

    def work(lo: int, hi: int, scratch) -> None:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            chunk_fn(*[a[lo:hi] for a in flat], *[scratch((hi - lo,), slot) for slot in range(n_scratch)])

    parallel_units(out.size, 1, CHUNK, work, np, out.dtype)


# ---------------------------------------------------------------- chunk kernels
# _phi_chunk and _erf_chunk work on float32 bits (int32 views): float32 chunks only.
_P = 0.3275911
_A1, _A2, _A3, _A4, _A5 = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429
_P_OVER_SQRT2 = _P / math.sqrt(2.0)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# exp, not exp2, though exp2 makes GELU 2-6% faster on typical inputs: NumPy's float32 exp2 leaves its
# vector loop for every result that underflows, so on N(0, 10) inputs GELU's forward took 4.6x its
# N(0, 1) time with exp2 and 3.1x with exp (exp is slow only where results are subnormal,
# 13.2 < |x| < 14.4); beyond that exp underflows to exactly 0, so gelu(-30) = 0 as in torch
_SIGN_BIT, _ABS_BITS = np.int32(-2 ** 31), np.int32(2 ** 31 - 1)    # float32 sign / magnitude bits


def _phi_chunk(x, cdf, e, t, m) -> None:
    """cdf = Phi(x) and e = exp(-x^2/2) for one float32 chunk (A&S 7.1.26 at z = |x| / sqrt 2)."""
    np.multiply(x, x, out=e)
    e *= -0.5
    np.exp(e, out=e)                                  # exp(-z^2) = exp(-x^2/2): shared with the pdf
    np.abs(x, out=t)
    t *= _P_OVER_SQRT2
    t += 1.0
    np.reciprocal(t, out=t)                           # t = 1 / (1 + p z)
    # q = 0.5 poly(t) e, Horner with the 0.5 folded into the coefficients
    np.multiply(t, 0.5 * _A5, out=cdf)
    cdf += 0.5 * _A4
    cdf *= t
    cdf += 0.5 * _A3
    cdf *= t
    cdf += 0.5 * _A2
    cdf *= t
    cdf += 0.5 * _A1
    cdf *= t
    cdf *= e
    # Phi = q where x's sign bit is set, else 1 - q: a select on the bits, because np.where and
    # masked ufuncs (where=) cost ~30x an arithmetic pass, and q + H (1 - 2q) would round the tail.
    # At x = -0, q = 1 - q = 0.5; NaN gives NaN either way.
    np.subtract(1.0, cdf, out=t)                      # r = 1 - q (t is free after Horner)
    qi, ri, mi = cdf.view(np.int32), t.view(np.int32), m.view(np.int32)
    np.right_shift(x.view(np.int32), 31, out=mi)      # all ones where the sign bit is set, else 0
    np.bitwise_xor(qi, ri, out=qi)
    np.bitwise_and(qi, mi, out=qi)
    np.bitwise_xor(qi, ri, out=qi)                    # (q ^ r) & m ^ r: q where x < 0, else r


def _gelu_forward_chunk(x, y, e, t, m) -> None:
    _phi_chunk(x, y, e, t, m)
    np.multiply(x, y, out=y)                          # y = x Phi(x)


def _add_x_pdf_of(x, d, e) -> None:
    """d += x phi(x), given e = exp(-x^2/2) (overwritten): phi(x) = e / sqrt(2 pi)."""
    e *= x
    e *= _INV_SQRT_2PI
    d += e


def _gelu_forward_and_derivative_chunk(x, y, d, e, t, m) -> None:
    _phi_chunk(x, d, e, t, m)
    np.multiply(x, d, out=y)                          # y = x Phi(x)
    _add_x_pdf_of(x, d, e)                            # dy/dx = Phi + x phi


def _gelu_backward_chunk(x, g, dx, e, t, m) -> None:
    _phi_chunk(x, dx, e, t, m)
    _add_x_pdf_of(x, dx, e)
    dx *= g                                           # g (Phi + x phi)


def _erf_chunk(x, out, e, t) -> None:
    """erf(x) = sign(x) (1 - poly(t) exp(-x^2)), t = 1 / (1 + p|x|) for one chunk."""
    np.multiply(x, x, out=e)
    np.negative(e, out=e)
    np.exp(e, out=e)                                  # exp(-x^2)
    np.abs(x, out=t)
    t *= _P
    t += 1.0
    np.reciprocal(t, out=t)
    np.multiply(t, _A5, out=out)
    out += _A4
    out *= t
    out += _A3
    out *= t
    out += _A2
    out *= t
    out += _A1
    out *= t
    out *= e
    np.subtract(1.0, out, out=out)
    # copysign(out, x) on the bits (np.copysign is ~3x slower than these three integer passes)
    xi, oi, ei = x.view(np.int32), out.view(np.int32), e.view(np.int32)
    np.bitwise_and(xi, _SIGN_BIT, out=ei)
    np.bitwise_and(oi, _ABS_BITS, out=oi)
    np.bitwise_or(oi, ei, out=oi)


# With MKL on (vml.py), Phi, exp and erf are one VML pass each; the rest is the same arithmetic.
def _gelu_forward_chunk_vml(x, y, *, cdf_norm) -> None:
    cdf_norm(x, y)
    y *= x                                            # y = x Phi(x)


def _add_x_pdf(x, d, e, exp) -> None:
    """d += x phi(x) with VML's exp (e is scratch)."""
    np.multiply(x, x, out=e)
    e *= -0.5
    exp(e, e)
    _add_x_pdf_of(x, d, e)


def _gelu_forward_and_derivative_chunk_vml(x, y, d, e, *, cdf_norm, exp) -> None:
    cdf_norm(x, d)
    np.multiply(x, d, out=y)
    _add_x_pdf(x, d, e, exp)                          # dy/dx = Phi + x phi


def _gelu_backward_chunk_vml(x, g, dx, e, *, cdf_norm, exp) -> None:
    cdf_norm(x, dx)
    _add_x_pdf(x, dx, e, exp)
    dx *= g


def _erf_chunk_vml(x, out, *, erf) -> None:
    erf(x, out)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_C = 0.044715


def _gelu_tanh_forward_chunk(x, y, u) -> None:
    """y = x (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3)."""
    np.multiply(x, x, out=u)
    u *= _C * _SQRT_2_OVER_PI
    u += _SQRT_2_OVER_PI
    u *= x
    np.tanh(u, out=u)
    u *= 0.5
    u += 0.5
    np.multiply(x, u, out=y)


def _gelu_tanh_backward_chunk(x, g, dx, th, du) -> None:
    """dx = g ((1 + th) / 2 + x (1 - th^2) du / 2), du = sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    np.multiply(x, x, out=du)
    np.multiply(du, _C * _SQRT_2_OVER_PI, out=th)
    th += _SQRT_2_OVER_PI
    th *= x
    np.tanh(th, out=th)
    du *= 3.0 * _C * _SQRT_2_OVER_PI
    du += _SQRT_2_OVER_PI
    np.multiply(th, th, out=dx)
    np.subtract(1.0, dx, out=dx)
    dx *= du
    dx *= x
    dx *= 0.5
    th *= 0.5
    th += 0.5
    dx += th
    dx *= g


def _silu_forward_chunk(x, y, e) -> None:
    """y = x / (1 + exp(-x)); exp overflow for x < -88 (float32) gives x / inf = -0, right."""
    np.negative(x, out=e)
    np.exp(e, out=e)
    e += 1.0
    np.divide(x, e, out=y)


def _silu_backward_chunk(x, g, dx, s) -> None:
    """dx = g s (1 + x (1 - s)), s = sigmoid(x)."""
    np.negative(x, out=s)
    np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)
    np.subtract(1.0, s, out=dx)
    dx *= x
    dx += 1.0
    dx *= s
    dx *= g


# ---------------------------------------------------------------- entry points
_erf_exact = np.vectorize(math.erf, otypes=[np.float64])


def _contiguous(a, dtype=None):
    """a as a C-contiguous array (0-d stays 0-d, unlike np.ascontiguousarray)."""
    if a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
        return a
    return np.array(a, dtype=dtype, order="C")


def _as_float(x):
    """Integers compute in float64 (as x * (1/sqrt 2) would promote them)."""
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _fused(chunk_fn, x, *others, n_scratch: int):
    """Run a chunk kernel over a NumPy float32 / float64 array; other float dtypes go through float32.

    `others` (upstream gradients) are brought to x's shape, dtype and C order: a broadcast view,
    such as the gradient of a sum, becomes one contiguous copy.
    """
    if x.dtype not in (np.float32, np.float64):
        wide = [np.asarray(a, dtype=np.float32) for a in (x, *others)]
        return _fused(chunk_fn, *wide, n_scratch=n_scratch).astype(x.dtype)
    x = _contiguous(x)
    others = [_contiguous(np.broadcast_to(a, x.shape), x.dtype) for a in others]
    out = np.empty_like(x)
    _run_chunked(chunk_fn, out, (x, *others), n_scratch=n_scratch)
    return out


def _with_vml(chunk_fn, **functions):
    """chunk_fn with its VML functions bound (argument name -> VML name, float32) while MKL is on,
    else None."""
    bound = {arg: vml.function(name, np.float32) for arg, name in functions.items()}
    if any(fn is None for fn in bound.values()):
        return None
    return functools.partial(chunk_fn, **bound)


def erf_float32(x):
    """Chunked erf of a NumPy float32 array: VML's with MKL on, else A&S 7.1.26 (absolute error < 6e-7)."""
    chunk = _with_vml(_erf_chunk_vml, erf="Erf")
    if chunk is not None:
        return _fused(chunk, x, n_scratch=0)
    return _fused(_erf_chunk, x, n_scratch=2)


# Each entry point takes NumPy or CuPy arrays; CuPy gets the plain whole-array expression.
def gelu_forward(x):
    """Exact-erf GELU x Phi(x)."""
    xp = backend.get_array_module(x)
    x = _as_float(x)
    if xp is not np:
        import cupyx.scipy.special
        return x * (0.5 * (1.0 + cupyx.scipy.special.erf(x * _INV_SQRT2)))
    if x.dtype == np.float64:                          # exact: libm erf (gradient checks rely on it)
        cdf = _erf_exact(x * _INV_SQRT2)
        cdf += 1.0
        cdf *= 0.5
        return x * cdf
    chunk = _with_vml(_gelu_forward_chunk_vml, cdf_norm="CdfNorm")
    if chunk is not None:
        return _fused(chunk, x, n_scratch=0)
    return _fused(_gelu_forward_chunk, x, n_scratch=3)


def _gelu_cdf_and_derivative_exact(x):
    """Phi(x) and Phi(x) + x phi(x) for a NumPy float64 array, with libm's erf."""
    cdf = _erf_exact(x * _INV_SQRT2)
    cdf += 1.0
    cdf *= 0.5
    derivative = np.exp(-0.5 * x * x)
    derivative *= _INV_SQRT_2PI
    derivative *= x
    derivative += cdf
    return cdf, derivative


def gelu_forward_and_derivative(x):
    """(x Phi(x), Phi(x) + x phi(x)) in one sweep: for training, where backward is then one multiply."""
    xp = backend.get_array_module(x)
    x = _as_float(x)
    if xp is np and x.dtype == np.float64:             # exact: libm erf, once for both
        cdf, derivative = _gelu_cdf_and_derivative_exact(x)
        return x * cdf, derivative
    if xp is not np or x.dtype != np.float32:
        return gelu_forward(x), gelu_backward(x, xp.ones((), dtype=x.dtype))
    x = _contiguous(x)
    y, d = np.empty_like(x), np.empty_like(x)
    chunk = _with_vml(_gelu_forward_and_derivative_chunk_vml, cdf_norm="CdfNorm", exp="Exp")
    if chunk is not None:
        _run_chunked(chunk, y, (x,), n_scratch=1, extra_outs=(d,))
    else:
        _run_chunked(_gelu_forward_and_derivative_chunk, y, (x,), n_scratch=3, extra_outs=(d,))
    return y, d


def gelu_backward(x, g):
    """g (Phi(x) + x phi(x)): the input gradient of exact-erf GELU."""
    xp = backend.get_array_module(x)
    x = _as_float(x)
    if xp is not np:
        import cupyx.scipy.special
        cdf = 0.5 * (1.0 + cupyx.scipy.special.erf(x * _INV_SQRT2))
        return g * (cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x)))
    if x.dtype == np.float64:
        return g * _gelu_cdf_and_derivative_exact(x)[1]
    chunk = _with_vml(_gelu_backward_chunk_vml, cdf_norm="CdfNorm", exp="Exp")
    if chunk is not None:
        return _fused(chunk, x, g, n_scratch=1)
    return _fused(_gelu_backward_chunk, x, g, n_scratch=3)


def gelu_tanh_forward(x):
    """Tanh-approximate GELU x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2."""
    xp = backend.get_array_module(x)
    x = _as_float(x)
    if xp is not np:
        return x * (0.5 * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (x + _C * x * x * x))))
    return _fused(_gelu_tanh_forward_chunk, x, n_scratch=1)


def gelu_tanh_backward(x, g):
    xp = backend.get_array_module(x)
    x = _as_float(x)
    if xp is not np:
        th = xp.tanh(_SQRT_2_OVER_PI * (x + _C * x * x * x))
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _C * x * x)
        return g * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du)
    return _fused(_gelu_tanh_backward_chunk, x, g, n_scratch=2)


def silu_forward(x):
    """x sigmoid(x)."""
    xp = backend.get_array_module(x)
    x = _as_float(x)
    if xp is not np:
        return x / (1.0 + xp.exp(-x))
    return _fused(_silu_forward_chunk, x, n_scratch=1)


def silu_backward(x, g):
    xp = backend.get_array_module(x)
    x = _as_float(x)
    if xp is not np:
        s = 1.0 / (1.0 + xp.exp(-x))
        return g * (s * (1.0 + x * (1.0 - s)))
    return _fused(_silu_backward_chunk, x, g, n_scratch=1)


# ---------------------------------------------------------------- erf on arrays
def erf_array(x):
    """Error function on an array of either backend.

    NumPy has no erf, and SciPy is not a dependency. float64 (the dtype of gradient checks)
    gets the exact libm value element by element; float32 gets Abramowitz & Stegun 7.1.26,
    whose absolute error (<1.5e-7) is below float32 resolution near 1, evaluated over cache-sized
    chunks (erf_float32), or MKL's vmsErf while MKL is on (float16 goes through float32;
    integers get float64).
    """
    xp = backend.get_array_module(x)
    if xp is not np:
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)
    if x.dtype.kind != "f":
        return _erf_exact(x)
    if x.dtype == np.float64 or x.size <= 64:
        return _erf_exact(x).astype(x.dtype, copy=False)
    if x.dtype == np.float32:
        return erf_float32(x)
    return erf_float32(x.astype(np.float32)).astype(x.dtype)


_erf_exact = np.vectorize(math.erf, otypes=[np.float64])
