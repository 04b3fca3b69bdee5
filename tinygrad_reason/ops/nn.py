"""Neural-network ops: softmax, log_softmax, cross_entropy, embedding, dropout, layer_norm, rms_norm.

softmax and log_softmax have backward rules in Tensor ops (twice differentiable). cross_entropy,
layer_norm and rms_norm are fused like llm.c's `*_forward` / `*_backward` pairs: one pass of
array code each way, and marked once-differentiable.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Function, Tensor, is_grad_enabled
from .elementwise import exp
from ..fast.threads import parallel_units
from .movement import getitem

ROW_CHUNK_ELEMENTS = 64 * 1024   # elements per chunk of rows: a chunk and its scratch stay in L2


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
    Rows run in cache-sized chunks over our threads (parallel_units). Forward saves exp(x - max)
    and the row sums unnormalized: backward's one pass over (N, C) applies 1 / sum with the scale.
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
        n_rows = x.shape[0]
        exps = xp.empty(x.shape, dtype=x.dtype)
        totals = xp.empty(n_rows, dtype=x.dtype)
        picked = xp.empty(n_rows, dtype=x.dtype)
        ones = xp.ones(n_cls, dtype=x.dtype)

        def work(lo, hi, scratch):
            e = exps[lo:hi]
            xp.subtract(x[lo:hi], x[lo:hi].max(axis=-1, keepdims=True), out=e)
            picked[lo:hi] = e[xp.arange(hi - lo), t_safe[lo:hi]]    # the target's shifted logit
            xp.exp(e, out=e)
            xp.matmul(e, ones, out=totals[lo:hi])                 # row sums as a matrix-vector product

        parallel_units(n_rows, n_cls, ROW_CHUNK_ELEMENTS, work, xp, x.dtype)
        nll = (xp.log(totals) - picked) * valid          # not log(softmax): exp underflows to 0 below ~-104 (f32)
        self.exps, self.totals, self.t, self.valid, self.reduction = exps, totals, t_safe, valid, reduction
        self.shape = logits.shape
        if reduction == "none":
            return nll.reshape(targets.shape).astype(logits.dtype, copy=False)
        self.count = int(valid.sum())
        total_loss = nll.sum()
        return (total_loss / self.count if reduction == "mean" else total_loss).astype(logits.dtype)

    def backward(self, g):
        xp = g.xp
        if self.reduction == "none":
            scale = g.data.reshape(-1) * self.valid
        elif self.reduction == "mean":
            scale = g.data * self.valid / max(self.count, 1)   # all ignored: grad 0, like torch
        else:
            scale = g.data * self.valid
        scale = scale.astype(self.exps.dtype, copy=False)
        row_scale = (scale / self.totals)[:, None]
        dx = xp.empty_like(self.exps)
        n_rows, n_cls = self.exps.shape

        def work(lo, hi, scratch):
            xp.multiply(self.exps[lo:hi], row_scale[lo:hi], out=dx[lo:hi])   # softmax * scale
            dx[lo:hi][xp.arange(hi - lo), self.t[lo:hi]] -= scale[lo:hi]     # - onehot * scale

        parallel_units(n_rows, n_cls, ROW_CHUNK_ELEMENTS, work, xp, dx.dtype)
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


def _column_sums(a):
    """a.sum(axis=0) as ones @ a: a matrix-vector product is ~2.5x faster than NumPy's column reduction."""
    xp = backend.get_array_module(a)
    return xp.ones(a.shape[0], dtype=a.dtype) @ a


def _chunk_sum(partials: dict, empty):
    """Per-chunk partial sums added in chunk order (the same result with any thread count);
    `empty` when there were no rows."""
    total = None
    for lo in sorted(partials):
        total = partials[lo] if total is None else total + partials[lo]
    return empty if total is None else total


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis.

    d/dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * weight.
    Rows run in cache-sized chunks over our threads (parallel_units); the row means are
    matrix-vector products (sum_j g_ij w_j / d is g @ w / d), so they run in BLAS. The forward
    keeps xhat for backward only while grad mode is on; inference normalizes in the output.
    """
    once_differentiable = True

    def forward(self, x, *params, eps, has_weight, has_bias):
        xp = backend.get_array_module(x)
        w = params[0] if has_weight else None
        b = params[-1] if has_bias else None
        dim = x.shape[-1]
        x2 = x.reshape(-1, dim)
        out = xp.empty(x2.shape, dtype=x.dtype)
        xhat = xp.empty(x2.shape, dtype=x.dtype) if is_grad_enabled() else None
        rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)
        mean_vec = xp.full(dim, 1.0 / max(dim, 1), dtype=x.dtype)

        def work(lo, hi, scratch):
            xh = xhat[lo:hi] if xhat is not None else out[lo:hi]
            xp.subtract(x2[lo:hi], (x2[lo:hi] @ mean_vec)[:, None], out=xh)
            sq, r = scratch((hi - lo, dim)), rstd[lo:hi]
            xp.multiply(xh, xh, out=sq)
            xp.matmul(sq, mean_vec, out=r[:, 0])        # BLAS's blocked sum: more accurate than einsum's
            r += eps
            xp.sqrt(r, out=r)
            xp.reciprocal(r, out=r)
            xh *= r                                     # xhat
            if xhat is None:                            # inference: xh is the output
                if w is not None:
                    xh *= w
            elif w is not None:
                xp.multiply(xh, w, out=out[lo:hi])
            else:
                out[lo:hi] = xh
            if b is not None:
                out[lo:hi] += b

        parallel_units(x2.shape[0], dim, ROW_CHUNK_ELEMENTS, work, xp, x.dtype)
        self.xhat, self.rstd, self.w, self.has = xhat, rstd, w, (has_weight, has_bias)
        return out.reshape(x.shape)

    def backward(self, g):
        has_weight, has_bias = self.has
        dx, dw, db = _norm_backward(g.data, self.xhat, self.rstd, self.w, has_weight, has_bias, center=True)
        return tuple(Tensor._wrap(a) for a in (dx, dw, db) if a is not None)


class RMSNorm(Function):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis.

    d/dx = rstd * (gw - xhat * mean(gw * xhat)), gw = g * weight. Chunked like LayerNorm, and like
    it keeps xhat only while grad mode is on.
    """
    once_differentiable = True

    def forward(self, x, *params, eps, has_weight):
        xp = backend.get_array_module(x)
        w = params[0] if has_weight else None
        dim = x.shape[-1]
        x2 = x.reshape(-1, dim)
        out = xp.empty(x2.shape, dtype=x.dtype)
        xhat = xp.empty(x2.shape, dtype=x.dtype) if is_grad_enabled() and w is not None else out
        rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)
        mean_vec = xp.full(dim, 1.0 / max(dim, 1), dtype=x.dtype)

        def work(lo, hi, scratch):
            xc, xh, r = x2[lo:hi], xhat[lo:hi], rstd[lo:hi]
            xp.multiply(xc, xc, out=xh)
            xp.matmul(xh, mean_vec, out=r[:, 0])
            r += eps
            xp.sqrt(r, out=r)
            xp.reciprocal(r, out=r)
            xp.multiply(xc, r, out=xh)
            if w is not None:
                xp.multiply(xh, w, out=out[lo:hi])      # in place when xh is the output

        parallel_units(x2.shape[0], dim, ROW_CHUNK_ELEMENTS, work, xp, x.dtype)
        self.xhat, self.rstd, self.w = xhat, rstd, w
        return out.reshape(x.shape)

    def backward(self, g):
        dx, dw, _ = _norm_backward(g.data, self.xhat, self.rstd, self.w, self.w is not None, False, center=False)
        return Tensor._wrap(dx) if dw is None else (Tensor._wrap(dx), Tensor._wrap(dw))


def _norm_backward(g, xhat, rstd, w, want_weight: bool, want_bias: bool, center: bool):
    """The input, weight and bias gradients of LayerNorm (center=True) and RMSNorm (center=False):

        dx = rstd * (gw - [mean(gw)] - xhat * mean(gw * xhat)),  gw = g * weight
        dweight = sum over rows of g * xhat,  dbias = sum over rows of g

    in chunks of rows over our threads; the row means are matrix-vector products with weight / dim.
    """
    xp = backend.get_array_module(g)
    dim = xhat.shape[-1]
    g2 = g.reshape(-1, dim)
    w = w if w is not None else xp.ones(dim, dtype=g2.dtype)
    w_mean = w / max(dim, 1)
    dx = xp.empty(g2.shape, dtype=g2.dtype)
    dw_parts, db_parts = {}, {}

    def work(lo, hi, scratch):
        gc, xh, out = g2[lo:hi], xhat[lo:hi], dx[lo:hi]
        gxh = xp.multiply(gc, xh, out=scratch(gc.shape))
        if want_weight:
            dw_parts[lo] = _column_sums(gxh)
        if want_bias:
            db_parts[lo] = _column_sums(gc)
        xp.multiply(xh, (gxh @ w_mean)[:, None], out=out)          # xhat * mean(gw * xhat)
        gw = xp.multiply(gc, w, out=gxh)
        xp.subtract(gw, out, out=out)
        if center:
            out -= (gc @ w_mean)[:, None]                          # - mean(gw)
        out *= rstd[lo:hi]

    parallel_units(g2.shape[0], dim, ROW_CHUNK_ELEMENTS, work, xp, g2.dtype)
    zeros = lambda: xp.zeros(dim, dtype=g2.dtype)  # noqa: E731
    return (dx.reshape(g.shape), _chunk_sum(dw_parts, zeros()) if want_weight else None,
            _chunk_sum(db_parts, zeros()) if want_bias else None)


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
