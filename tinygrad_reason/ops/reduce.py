"""Reductions over any axes, with keepdims: sum, max, min, logsumexp (and mean, var built on sum).

A backward first restores the reduced axes as size-1 dims (keepdims shape), then broadcasts.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Function, Tensor
from .elementwise import exp
from .movement import expand


def normalize_axes(axis, ndim: int, op: str) -> tuple:
    """axis (None, int or sequence, negatives allowed) as a sorted tuple of distinct axes.

    A 0-d tensor accepts axis 0 or -1, like torch, and reduces over nothing.
    """
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    span = ndim if ndim else 1
    for a in axes:
        if not -span <= a < span:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dims")
    out = sorted(int(a) % span for a in axes)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(out) if ndim else ()


def _kept_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _restore(g: Tensor, in_shape: tuple, axes: tuple, keepdims: bool) -> Tensor:
    """The output gradient reshaped to the keepdims shape (size-1 reduced axes)."""
    return g if keepdims else g.reshape(_kept_shape(in_shape, axes))


class Sum(Function):
    def forward(self, x, axis, keepdims):
        self.axes = normalize_axes(axis, x.ndim, "sum")
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        x = self.parents[0]
        keep = _restore(g, x.shape, self.axes, self.output.ndim == x.ndim)
        return expand(keep, x.shape)


class _Extreme(Function):
    """max / min over axes; ties share the gradient evenly (torch.amax's rule)."""
    def forward(self, x, axis, keepdims):
        name = type(self).__name__.lower()
        self.axes = normalize_axes(axis, x.ndim, name)
        if x.size == 0 and any(x.shape[a] == 0 for a in self.axes):
            raise ValueError(f"{name}: cannot reduce over a size-0 axis (shape {x.shape}, axes {self.axes})")
        self.keepdims = keepdims
        return self.reduce(x, axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        x = self.parents[0]
        out = self.output.data if self.keepdims else self.output.data.reshape(_kept_shape(x.shape, self.axes))
        hit = (x.data == out)
        share = hit / hit.sum(axis=self.axes, keepdims=True)
        return expand(_restore(g, x.shape, self.axes, self.keepdims), x.shape) * Tensor._wrap(share.astype(g.dtype))


class Max(_Extreme):
    @staticmethod
    def reduce(x, axis, keepdims):
        return x.max(axis=axis, keepdims=keepdims)


class Min(_Extreme):
    @staticmethod
    def reduce(x, axis, keepdims):
        return x.min(axis=axis, keepdims=keepdims)


class LogSumExp(Function):
    """log(sum(exp(x))) computed as m + log(sum(exp(x - m))); d/dx = exp(x - out) = softmax."""
    def forward(self, x, axis, keepdims):
        xp = backend.get_array_module(x)
        self.axes = normalize_axes(axis, x.ndim, "logsumexp")
        self.keepdims = keepdims
        m = x.max(axis=self.axes, keepdims=True) if x.size else xp.zeros(_kept_shape(x.shape, self.axes), x.dtype)
        m = xp.where(xp.isfinite(m), m, 0.0).astype(x.dtype, copy=False)  # all -inf rows give -inf, not nan
        with np.errstate(divide="ignore"):
            out = xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True)) + m
        return out if keepdims else out.reshape([n for i, n in enumerate(out.shape) if i not in self.axes])

    def backward(self, g):
        x = self.parents[0]
        out = _restore(self.output, x.shape, self.axes, self.keepdims)
        return expand(_restore(g, x.shape, self.axes, self.keepdims), x.shape) * exp(x - out)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return Max.apply(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return Min.apply(x, axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    return LogSumExp.apply(x, axis=axis, keepdims=keepdims)


def _count(x, axis, op: str = "mean") -> int:
    axes = normalize_axes(axis, x.ndim, op)
    return int(np.prod([x.shape[a] for a in axes])) if axes else 1


def mean(x, axis=None, keepdims=False):
    n = _count(x, axis)
    return sum(x, axis, keepdims) * (1.0 / n if n else float("nan"))


def var(x, axis=None, keepdims=False, correction: int = 1):
    """Variance with Bessel's correction by default (torch's `correction=1`; numpy's ddof)."""
    n = _count(x, axis, "var")
    centered = x - mean(x, axis, keepdims=True)
    denom = n - correction
    return sum(centered * centered, axis, keepdims) * (1.0 / denom if denom > 0 else float("nan"))

