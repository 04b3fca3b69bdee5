"""Neural-network ops: softmax, log_softmax, cross_entropy, embedding, dropout, layer_norm, rms_norm.

softmax and log_softmax have backward rules in Tensor ops (twice differentiable). cross_entropy,
layer_norm and rms_norm are fused like llm.c's `*_forward` / `*_backward` pairs: one pass of
array code each way, and marked once-differentiable.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Function, Tensor
from .elementwise import exp
from .movement import getitem


def _axis(axis: int, ndim: int, op: str) -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):   # a 0-d tensor takes axis 0 or -1, like torch
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor with {ndim} dims")
    return axis % max(ndim, 1)


class Softmax(Function):
    """exp(x - max) / sum; d/dx = y * (g - sum(g * y)). Rows that are all -inf give nan, like torch."""
    def forward(self, x, axis):
        xp = backend.get_array_module(x)
        self.axis = _axis(axis, x.ndim, "softmax")
        if x.size == 0:                      # an empty axis has no max: the result is empty, like torch
            return x.copy()
        y = xp.asarray(x - x.max(axis=self.axis, keepdims=True))   # 0-d: numpy gives a scalar, out= needs an array
        xp.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        return y

    def backward(self, g):
        y = self.output
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """x - logsumexp(x); d/dx = g - softmax * sum(g)."""
    def forward(self, x, axis):
        xp = backend.get_array_module(x)
        self.axis = _axis(axis, x.ndim, "log_softmax")
        if x.size == 0:
            return x.copy()
        shifted = x - x.max(axis=self.axis, keepdims=True)
        shifted -= xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return shifted

    def backward(self, g):
        return g - exp(self.output) * g.sum(axis=self.axis, keepdims=True)


class CrossEntropy(Function):
    """Fused log-softmax + negative log-likelihood over the last axis (the classes).

    logits (..., C), targets (...) integer; targets equal to ignore_index add nothing and do not
    count in the mean. d/dlogits = (softmax - onehot(target)) * g / count.
    """
    once_differentiable = True

    def forward(self, logits, targets, ignore_index, reduction):
        xp = backend.get_array_module(logits)
        if logits.ndim < 1 or targets.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: targets shape {targets.shape} must equal logits shape "
                             f"{logits.shape} without its last (class) axis")
        if not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"cross_entropy: targets must be integers, got {targets.dtype}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        n_cls = logits.shape[-1]
        x = logits.reshape(-1, n_cls)
        t = targets.reshape(-1)
        valid = t != ignore_index
        bad = valid & ((t < 0) | (t >= n_cls))
        if bad.any():
            raise IndexError(f"cross_entropy: target {int(t[bad][0])} is outside [0, {n_cls}) "
                             f"(ignore_index={ignore_index})")
        t_safe = xp.where(valid, t, 0)
        rows = xp.arange(x.shape[0])
        probs = x - x.max(axis=-1, keepdims=True)
        picked = probs[rows, t_safe]                     # the target's shifted logit (log of its exp, exactly)
        xp.exp(probs, out=probs)
        total = probs.sum(axis=-1, keepdims=True)
        probs /= total                                   # saved: softmax, reused by backward
        nll = (xp.log(total[:, 0]) - picked) * valid     # not log(exp(.)): exp underflows to 0 below ~-104 (f32)
        self.probs, self.t, self.valid, self.rows, self.reduction = probs, t_safe, valid, rows, reduction
        self.shape = logits.shape
        if reduction == "none":
            return nll.reshape(targets.shape).astype(logits.dtype, copy=False)
        self.count = int(valid.sum())
        total_loss = nll.sum()
        return (total_loss / self.count if reduction == "mean" else total_loss).astype(logits.dtype)

    def backward(self, g):
        xp = g.xp
        if self.reduction == "none":
            scale = (g.data.reshape(-1) * self.valid)[:, None]
        elif self.reduction == "mean":
            scale = g.data * self.valid[:, None] / max(self.count, 1)   # all ignored: grad 0, like torch
        else:
            scale = g.data * self.valid[:, None]
        dx = self.probs * scale
        dx[self.rows, self.t] -= scale[:, 0]
        return Tensor._wrap(dx.reshape(self.shape).astype(g.dtype, copy=False)), None


class Dropout(Function):
    """Zero each element with probability p, scale the rest by 1/(1-p)."""
    def forward(self, x, p):
        gen = backend.generator(backend.device_of(x))
        keep = gen.random(x.shape, dtype=x.dtype) if isinstance(gen, np.random.Generator) \
            else gen.random_sample(x.shape, dtype=x.dtype)
        self.mask = (keep >= p).astype(x.dtype) * (1.0 / (1.0 - p))
        return x * self.mask

    def backward(self, g):
        return g * Tensor._wrap(self.mask)


def _check_norm(op: str, x, weight, bias) -> None:
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != x.shape[-1:]:
            raise ValueError(f"{op}: {name} shape {p.shape} must be ({x.shape[-1]},), the last dim of "
                             f"input shape {x.shape}")


def _sum_rows(a):
    """Sum over every axis but the last (parameter gradients)."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis.

    d/dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * weight.
    """
    once_differentiable = True

    def forward(self, x, *params, eps, has_weight, has_bias):
        xp = backend.get_array_module(x)
        w = params[0] if has_weight else None
        b = params[-1] if has_bias else None
        xc = x - x.mean(axis=-1, keepdims=True)
        var = (xc * xc).mean(axis=-1, keepdims=True)
        rstd = 1.0 / xp.sqrt(var + eps)
        xc *= rstd                                      # xc is now xhat
        self.xhat, self.rstd, self.w, self.has = xc, rstd, w, (has_weight, has_bias)
        out = xc * w if w is not None else xc.copy()
        if b is not None:
            out += b
        return out

    def backward(self, g):
        g = g.data
        gw = g * self.w if self.w is not None else g
        dx = gw - gw.mean(axis=-1, keepdims=True)
        dx -= self.xhat * (gw * self.xhat).mean(axis=-1, keepdims=True)
        dx *= self.rstd
        grads = [Tensor._wrap(dx)]
        if self.has[0]:
            grads.append(Tensor._wrap(_sum_rows(g * self.xhat)))
        if self.has[1]:
            grads.append(Tensor._wrap(_sum_rows(g)))
        return tuple(grads)


class RMSNorm(Function):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis.

    d/dx = rstd * (gw - xhat * mean(gw * xhat)), gw = g * weight.
    """
    once_differentiable = True

    def forward(self, x, *params, eps, has_weight):
        xp = backend.get_array_module(x)
        rstd = 1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
        xhat = x * rstd
        self.xhat, self.rstd = xhat, rstd
        self.w = params[0] if has_weight else None
        return xhat * self.w if has_weight else xhat

    def backward(self, g):
        g = g.data
        gw = g * self.w if self.w is not None else g
        dx = gw - self.xhat * (gw * self.xhat).mean(axis=-1, keepdims=True)
        dx *= self.rstd
        if self.w is None:
            return Tensor._wrap(dx)
        return Tensor._wrap(dx), Tensor._wrap(_sum_rows(g * self.xhat))


# ---------------------------------------------------------------- functional forms
def softmax(x, axis=-1):
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    return LogSoftmax.apply(x, axis=axis)


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean"):
    """Mean (or sum / per-position) negative log-likelihood of integer targets; classes on the last axis."""
    t = targets.data if isinstance(targets, Tensor) else logits.xp.asarray(targets)
    return CrossEntropy.apply(logits, targets=t, ignore_index=ignore_index, reduction=reduction)


def embedding(weight, ids):
    """Rows of weight (num, dim) picked by integer ids of any shape; backward scatter-adds repeats."""
    arr = ids.data if isinstance(ids, Tensor) else weight.xp.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"embedding: ids must be integers, got {arr.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-d (num, dim), got shape {weight.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= weight.shape[0]):
        bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
        raise IndexError(f"embedding: id {bad} is outside [0, {weight.shape[0]}) (weight shape {weight.shape})")
    return getitem(weight, arr)


def dropout(x, p: float = 0.5, training: bool = True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout.apply(x, p=p)


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5):
    _check_norm("layer_norm", x, weight, bias)
    params = [p for p in (weight, bias) if p is not None]
    return LayerNorm.apply(x, *params, eps=eps, has_weight=weight is not None, has_bias=bias is not None)


def rms_norm(x, weight=None, eps: float = 1e-6):
    _check_norm("rms_norm", x, weight, None)
    params = [weight] if weight is not None else []
    return RMSNorm.apply(x, *params, eps=eps, has_weight=weight is not None)
