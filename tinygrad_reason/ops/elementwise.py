"""Elementwise ops: each forward beside its backward.

Binary ops broadcast in forward; the engine sums gradients back to each input's shape, so no
backward here deals with broadcasting. Backward rules use Tensor ops, hence are differentiable
again (create_graph=True).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Function, Tensor, is_grad_enabled
from ..fast import kernels


def _check_broadcast(op: str, *shapes) -> None:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} cannot be "
                         "broadcast together") from None


class _Binary(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _check_broadcast(self.op_name().lower(), a.shape, b.shape)
        return self.compute(a, b)


# ---------------------------------------------------------------- arithmetic
class Add(_Binary):
    def compute(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(_Binary):
    def compute(self, a, b):
        return a - b

    def backward(self, g):
        return g, -g


class Mul(_Binary):
    def compute(self, a, b):
        return a * b

    def backward(self, g):
        a, b = self.parents
        return (g * b if a.requires_grad else None), (g * a if b.requires_grad else None)


class Div(_Binary):
    def compute(self, a, b):
        return a / b

    def backward(self, g):
        a, b = self.parents
        ga = g / b
        return ga, (-ga * self.output if b.requires_grad else None)   # d(a/b)/db = -(a/b)/b


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Pow(_Binary):
    """a ** b for tensor exponents; d/da = b a^(b-1), d/db = a^b log a (0 where a == 0 and b >= 0)."""
    def compute(self, a, b):
        return a ** b

    def backward(self, g):
        a, b = self.parents
        ga = None
        if a.requires_grad:
            ga = g * b * a ** (b - 1)
            flat = b.data == 0       # d(a^0)/da = 0 even at a == 0 (0 * 0^-1 would be nan), like torch
            if flat.any():
                ga = where(flat, 0.0, ga)
        gb = None
        if b.requires_grad:
            zero = (a.data == 0) & (b.data >= 0)
            gb = where(zero, 0.0, g * self.output * log(where(zero, 1.0, a)))
        return ga, gb


class PowScalar(Function):
    """x ** p for a Python number p."""
    def forward(self, x, p):
        self.p = p
        return x ** p

    def backward(self, g):
        (x,), p = self.parents, self.p
        if p == 0:
            return g * 0.0
        return g * p * (x ** (p - 1) if p != 2 else x)


# ---------------------------------------------------------------- transcendental
class Exp(Function):
    def forward(self, x):
        return np.exp(x) if type(x) is np.ndarray else backend.get_array_module(x).exp(x)

    def backward(self, g):
        return g * self.output


class Log(Function):
    def forward(self, x):
        return backend.get_array_module(x).log(x)

    def backward(self, g):
        return g / self.parents[0]


class Sqrt(Function):
    def forward(self, x):
        return backend.get_array_module(x).sqrt(x)

    def backward(self, g):
        return g / (2.0 * self.output)   # inf at 0, like torch


class Tanh(Function):
    def forward(self, x):
        return backend.get_array_module(x).tanh(x)

    def backward(self, g):
        y = self.output
        return g * (1.0 - y * y)


class Sigmoid(Function):
    def forward(self, x):
        xp = backend.get_array_module(x)
        with np.errstate(over="ignore"):     # exp(1000) = inf gives exactly 0, which is right
            e = xp.asarray(xp.exp(-x))   # a 0-d input gives a numpy scalar, which out= rejects
        e += 1.0
        return xp.reciprocal(e, out=e)

    def backward(self, g):
        y = self.output
        return g * y * (1.0 - y)


class Erf(Function):
    def forward(self, x):
        return kernels.erf_array(x)

    def backward(self, g):
        x = self.parents[0]
        return g * (2.0 / math.sqrt(math.pi)) * exp(-(x * x))


# ---------------------------------------------------------------- activations
class Relu(Function):
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, g):
        return g * Tensor._wrap(self.mask)   # 0 at 0, like torch


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Gelu(Function):
    """Exact x * Phi(x), Phi the normal CDF; d/dx = Phi(x) + x phi(x).

    Forward and the ordinary backward are fused array kernels (ops/kernels.py: one pass over
    memory instead of a dozen, float32 sharing exp(-x^2/2) between Phi and phi). Under
    create_graph the backward must itself be differentiable, so it is written with Tensor ops.
    """
    def forward(self, x):
        self.derivative = None
        if is_grad_enabled():          # training: keep Phi + x phi (one array), so backward is one multiply
            y, self.derivative = kernels.gelu_forward_and_derivative(x)
            return y
        return kernels.gelu_forward(x)

    def backward(self, g):
        x = self.parents[0]
        if not is_grad_enabled():      # no graph is being built: compute dx on arrays directly
            if self.derivative is not None:
                return Tensor._wrap(g.data * self.derivative)
            return Tensor._wrap(kernels.gelu_backward(x.data, g.data))
        cdf = 0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))
        pdf = _INV_SQRT_2PI * exp(-0.5 * x * x)
        return g * (cdf + x * pdf)


class GeluTanh(Function):
    """0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3); fused kernels as in Gelu."""
    def forward(self, x):
        return kernels.gelu_tanh_forward(x)

    def backward(self, g):
        x = self.parents[0]
        if not is_grad_enabled():      # no graph is being built: compute dx on arrays directly
            return Tensor._wrap(kernels.gelu_tanh_backward(x.data, g.data))
        t = tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
        du = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
        return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


class Silu(Function):
    """x * sigmoid(x); d/dx = s (1 + x (1 - s)); fused kernels as in Gelu."""
    def forward(self, x):
        return kernels.silu_forward(x)

    def backward(self, g):
        x = self.parents[0]
        if not is_grad_enabled():      # no graph is being built: compute dx on arrays directly
            return Tensor._wrap(kernels.silu_backward(x.data, g.data))
        s = sigmoid(x)
        return g * s * (1.0 + x * (1.0 - s))


class Abs(Function):
    def forward(self, x):
        return backend.get_array_module(x).abs(x)

    def backward(self, g):
        x = self.parents[0]
        return g * Tensor._wrap(x.xp.sign(x.data))   # 0 at 0, like torch


# ---------------------------------------------------------------- selection
class Maximum(_Binary):
    """Elementwise max; at ties each input gets half the gradient (torch's rule)."""
    def compute(self, a, b):
        return backend.get_array_module(a).maximum(a, b)

    def backward(self, g):
        a, b = self.parents
        xp = a.xp
        share = xp.where(a.data > b.data, 1.0, xp.where(a.data == b.data, 0.5, 0.0)).astype(g.dtype)
        return g * Tensor._wrap(share), g * Tensor._wrap(1.0 - share)


class Minimum(_Binary):
    def compute(self, a, b):
        return backend.get_array_module(a).minimum(a, b)

    def backward(self, g):
        a, b = self.parents
        xp = a.xp
        share = xp.where(a.data < b.data, 1.0, xp.where(a.data == b.data, 0.5, 0.0)).astype(g.dtype)
        return g * Tensor._wrap(share), g * Tensor._wrap(1.0 - share)


class Clip(Function):
    """Clamp to [low, high] (either may be None); the gradient passes where low <= x <= high."""
    def forward(self, x, low, high):
        xp = backend.get_array_module(x)
        if low is not None and high is not None and low > high:
            raise ValueError(f"clip: low {low} is greater than high {high}")
        self.low, self.high = low, high
        return xp.clip(x, low, high).astype(x.dtype, copy=False)

    def backward(self, g):
        x = self.parents[0].data
        mask = x == x  # all True, except NaN
        if self.low is not None:
            mask &= x >= self.low
        if self.high is not None:
            mask &= x <= self.high
        return g * Tensor._wrap(mask)


class Where(Function):
    """cond ? a : b with cond a boolean array (not differentiated)."""
    def forward(self, a, b, cond):
        _check_broadcast("where", cond.shape, a.shape, b.shape)
        self.cond = cond
        return backend.get_array_module(a).where(cond, a, b)

    def backward(self, g):
        cond = Tensor._wrap(self.cond)
        zero = Tensor._wrap(g.xp.zeros((), dtype=g.dtype))
        a, b = self.parents
        return (where(cond, g, zero) if a.requires_grad else None,
                where(cond, zero, g) if b.requires_grad else None)


class Cast(Function):
    def forward(self, x, dtype):
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.parents[0].dtype)


# ---------------------------------------------------------------- functional forms
def const(value, like: Tensor) -> Tensor:
    """A Python number or array as a constant Tensor that keeps `like`'s float dtype."""
    if isinstance(value, Tensor):
        return value
    xp = like.xp
    if isinstance(value, (bool, int, float)) and _float(like.dtype):
        return Tensor._wrap(xp.asarray(value, dtype=like.dtype))
    if isinstance(value, float):
        return Tensor._wrap(xp.asarray(value, dtype=backend.default_dtype))
    return Tensor._wrap(xp.asarray(value))


def _float(dtype) -> bool:
    return np.issubdtype(dtype, np.floating)


def _pair(a, b):
    if not isinstance(a, Tensor):
        a = const(a, b)
    elif not isinstance(b, Tensor):
        b = const(b, a)
    return a, b


def add(a, b): return Add.apply(*_pair(a, b))
def sub(a, b): return Sub.apply(*_pair(a, b))
def mul(a, b): return Mul.apply(*_pair(a, b))
def div(a, b): return Div.apply(*_pair(a, b))
def neg(x): return Neg.apply(x)
def exp(x): return Exp.apply(x)
def log(x): return Log.apply(x)
def sqrt(x): return Sqrt.apply(x)
def tanh(x): return Tanh.apply(x)
def sigmoid(x): return Sigmoid.apply(x)
def erf(x): return Erf.apply(x)
def relu(x): return Relu.apply(x)
def silu(x): return Silu.apply(x)
def abs(x): return Abs.apply(x)  # noqa: A001 (shadows the builtin inside this module only)
def maximum(a, b): return Maximum.apply(*_pair(a, b))
def minimum(a, b): return Minimum.apply(*_pair(a, b))


def gelu(x, approximate: str = "none"):
    """GELU; approximate="none" is the exact erf form, "tanh" the tanh approximation."""
    if approximate == "none":
        return Gelu.apply(x)
    if approximate == "tanh":
        return GeluTanh.apply(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def pow(x, p):  # noqa: A001
    if isinstance(p, (int, float)) and not isinstance(p, bool) and isinstance(x, Tensor):
        return PowScalar.apply(x, p=p)
    return Pow.apply(*_pair(x, p))


def clip(x, low=None, high=None):
    return Clip.apply(x, low=low, high=high)


def _cond_array(cond, like: Tensor):
    arr = cond.data if isinstance(cond, Tensor) else like.xp.asarray(cond)
    if arr.dtype != np.bool_:
        raise TypeError(f"where: the condition must be boolean, got {arr.dtype}")
    return arr


def where(cond, a, b):
    """Elementwise cond ? a : b; a and b may be Tensors or numbers, cond is boolean."""
    ref = a if isinstance(a, Tensor) else b
    if not isinstance(ref, Tensor):
        raise TypeError("where: at least one of a, b must be a Tensor")
    a, b = _pair(a, b)
    return Where.apply(a, b, cond=_cond_array(cond, ref))


def masked_fill(x, mask, value):
    """x with `value` where mask is True (mask broadcasts to x)."""
    return where(mask, const(value, x), x)


def astype(x, dtype):
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    return Cast.apply(x, dtype=dtype)
