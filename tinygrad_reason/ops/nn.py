"""Neural-network ops: softmax, log_softmax, cross_entropy, embedding, dropout, layer_norm, rms_norm.

softmax and log_softmax have backward rules in Tensor ops (twice differentiable). cross_entropy,
layer_norm and rms_norm are fused like llm.c's `*_forward` / `*_backward` pairs: the formula and its
gradient are here, the row-chunked array code that computes them is fast/norms.py, and they are
marked once-differentiable. ops/reference.py writes the same three in Tensor ops.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..fast import norms
from ..tensor import Function, Tensor, is_grad_enabled
from .elementwise import exp
from .movement import getitem, stack
from .reduce import logsumexp


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

    loss_i = log(sum_j exp(x_ij)) - x_i,target      d/dx_ij = (softmax(x_i)_j - [j == target]) * g / count
    logits (..., C), targets (...) integer; targets equal to ignore_index add nothing and do not
    count in the mean.
    """
    once_differentiable = True

    def forward(self, logits, targets, ignore_index, reduction):
        xp = backend.get_array_module(logits)
        t, valid = check_cross_entropy(logits.shape, targets, ignore_index, reduction)
        x = logits.reshape(-1, logits.shape[-1])
        t_safe = xp.where(valid, t, 0)
        exps, totals, picked = norms.cross_entropy_forward(x, t_safe)
        nll = (xp.log(totals) - picked) * valid          # not log(softmax): exp underflows to 0 below ~-104 (f32)
        self.exps, self.totals, self.t, self.valid, self.reduction = exps, totals, t_safe, valid, reduction
        self.shape = logits.shape
        if reduction == "none":
            return nll.reshape(targets.shape).astype(logits.dtype, copy=False)
        self.count = int(valid.sum())
        total_loss = nll.sum()
        return (total_loss / self.count if reduction == "mean" else total_loss).astype(logits.dtype)

    def backward(self, g):
        if self.reduction == "none":
            scale = g.data.reshape(-1) * self.valid
        elif self.reduction == "mean":
            scale = g.data * self.valid / max(self.count, 1)   # all ignored: grad 0, like torch
        else:
            scale = g.data * self.valid
        scale = scale.astype(self.exps.dtype, copy=False)
        dx = norms.cross_entropy_backward(self.exps, self.totals, self.t, scale)
        return Tensor._wrap(dx.reshape(self.shape).astype(g.dtype, copy=False)), None


def check_cross_entropy(logits_shape, targets, ignore_index: int, reduction: str):
    """The targets flattened, and which of them count (not ignore_index); a clear error for targets
    that do not fit the logits or the classes, or an unknown reduction. Shared with ops/reference.py."""
    if len(logits_shape) < 1 or targets.shape != tuple(logits_shape[:-1]):
        raise ValueError(f"cross_entropy: targets shape {targets.shape} must equal logits shape "
                         f"{tuple(logits_shape)} without its last (class) axis")
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"cross_entropy: targets must be integers, got {targets.dtype}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    n_cls = logits_shape[-1]
    flat = targets.reshape(-1)
    valid = flat != ignore_index
    bad = valid & ((flat < 0) | (flat >= n_cls))
    if bad.any():
        raise IndexError(f"cross_entropy: target {int(flat[bad][0])} is outside [0, {n_cls}) "
                         f"(ignore_index={ignore_index})")
    return flat, valid


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


def check_norm(op: str, x, weight, bias) -> None:
    """A clear error unless weight and bias fit x's last axis. Shared with ops/reference.py."""
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != x.shape[-1:]:
            raise ValueError(f"{op}: {name} shape {p.shape} must be ({x.shape[-1]},), the last dim of "
                             f"input shape {x.shape}")


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis.

    d/dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)),  gw = g * weight, xhat the normalized x;
    d/dweight = sum over rows of g * xhat;  d/dbias = sum over rows of g.
    xhat is kept for backward only while grad mode is on.
    """
    once_differentiable = True

    def forward(self, x, *params, eps, has_weight, has_bias):
        w = params[0] if has_weight else None
        b = params[-1] if has_bias else None
        out, self.xhat, self.rstd = norms.layer_norm_forward(x, w, b, eps, keep_xhat=is_grad_enabled())
        self.w, self.has = w, (has_weight, has_bias)
        return out

    def backward(self, g):
        has_weight, has_bias = self.has
        dx, dw, db = norms.norm_backward(g.data, self.xhat, self.rstd, self.w, has_weight, has_bias, center=True)
        return tuple(Tensor._wrap(a) for a in (dx, dw, db) if a is not None)


class RMSNorm(Function):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis.

    d/dx = rstd * (gw - xhat * mean(gw * xhat)),  gw = g * weight;  d/dweight = sum over rows of g * xhat.
    """
    once_differentiable = True

    def forward(self, x, *params, eps, has_weight):
        w = params[0] if has_weight else None
        out, self.xhat, self.rstd = norms.rms_norm_forward(x, w, eps, keep_xhat=is_grad_enabled())
        self.w = w
        return out

    def backward(self, g):
        dx, dw, _ = norms.norm_backward(g.data, self.xhat, self.rstd, self.w, self.w is not None, False, center=False)
        return Tensor._wrap(dx) if dw is None else (Tensor._wrap(dx), Tensor._wrap(dw))


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
    check_norm("layer_norm", x, weight, bias)
    params = [p for p in (weight, bias) if p is not None]
    return LayerNorm.apply(x, *params, eps=eps, has_weight=weight is not None, has_bias=bias is not None)


def rms_norm(x, weight=None, eps: float = 1e-6):
    check_norm("rms_norm", x, weight, None)
    params = [weight] if weight is not None else []
    return RMSNorm.apply(x, *params, eps=eps, has_weight=weight is not None)


def binary_cross_entropy_with_logits(logits, targets, mask=None, weight=None, reduction: str = "mean"):
    """Binary cross-entropy of probabilities sigmoid(logits) against targets in [0, 1]:

        loss_i = softplus(x_i) - x_i y_i  = -[y_i log sigmoid(x_i) + (1 - y_i) log(1 - sigmoid(x_i))]
        d loss_i / d x_i = sigmoid(x_i) - y_i

    softplus(x) = log(exp(0) + exp(x)) is a logsumexp, so no exp overflows and the gradient is
    exact at every x. Composed of Tensor ops (twice differentiable). mask (boolean, logits' shape):
    the positions that count; weight (logits' shape): a weight per position (class balancing).
    reduction "mean" divides by the masked weight total, "sum" adds, "none" keeps (0 where masked).
    """
    xp = logits.xp
    y = targets.data if isinstance(targets, Tensor) else xp.asarray(targets)
    if y.shape != logits.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: targets shape {y.shape} must equal logits shape "
                         f"{logits.shape}")
    if y.size and (float(y.min()) < 0.0 or float(y.max()) > 1.0):
        raise ValueError("binary_cross_entropy_with_logits: targets must lie in [0, 1]")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"binary_cross_entropy_with_logits: reduction must be 'mean', 'sum' or 'none', "
                         f"got {reduction!r}")
    w = xp.ones(logits.shape, dtype=logits.dtype)
    for name, extra in (("weight", weight), ("mask", mask)):
        if extra is None:
            continue
        arr = extra.data if isinstance(extra, Tensor) else xp.asarray(extra)
        if arr.shape != logits.shape:
            raise ValueError(f"binary_cross_entropy_with_logits: {name} shape {arr.shape} must equal logits shape "
                             f"{logits.shape}")
        w = w * arr.astype(logits.dtype)
    softplus = logsumexp(stack([Tensor._wrap(xp.zeros_like(logits.data)), logits], axis=0), axis=0)
    losses = (softplus - logits * Tensor._wrap(y.astype(logits.dtype))) * Tensor._wrap(w)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    count = float(w.sum())
    if count <= 0:
        raise ValueError("binary_cross_entropy_with_logits: the mask (times the weights) selects no position")
    return total * (1.0 / count)
