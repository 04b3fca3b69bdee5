"""Scaled dot-product attention as one fused op (llm.c's attention_forward / attention_backward).

    scores = q k^T * scale;  scores[masked] = very negative;  att = softmax(scores);  [att = dropout(att)]
    out = att v

Grouped-query heads: the H query heads form Hkv groups of rep = H / Hkv; the rep*T query rows of
a group are stacked into one matrix, so each key/value head takes part in one matmul (no copy of
k or v per query head), and dk, dv come out summed over the group automatically.

The work is a loop over "units" (one batch row and key/value head each) in chunks small enough
that a chunk's (rep*T, S) scores stay in L2 between the matmul, the softmax passes and the second
matmul; on NumPy the chunks are split over backend.num_threads() threads (NumPy releases the GIL,
and BLAS runs single-threaded inside each), so the softmax passes use every core too. Small
problems (a decode step) are one chunk: one batched matmul per product, as before.

Savings over the formula as written: q is scaled once (T x D) instead of the scores (T x S), by
scale * log2(e) so the softmax can use exp2 (faster than exp in NumPy, same weights); the mask is
added as a large negative bias (a select costs ~30x an add); and the softmax backward's row sums
sum_j att_ij dA_ij are the cheap dot products dO_i . O_i (FlashAttention's D_i).
Once-differentiable: the backward works on raw arrays.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Function, Tensor, is_grad_enabled
from .kernels import parallel_units

_LOG2E = 1.0 / math.log(2.0)
CHUNK_ELEMENTS = 128 * 1024   # scores per chunk: 512 KiB of float32 stays in L2 with its operands


def _units(a, n_units: int, own: bool = False):
    """(B, Hx, R, D) -> (B * Hx, R', D) with the head groups' rows stacked: a view when the strides
    allow (a KV cache's [:, :, :end] slice is one, and is not copied each decode step), else a copy.
    own=True always copies: arrays saved for backward must not alias a cache that is written later."""
    if own or a.strides[-1] != a.itemsize:
        a = backend.get_array_module(a).array(a, order="C")
    return a.reshape(n_units, -1, a.shape[-1])


class Attention(Function):
    """q (B, H, T, D), k and v (B, Hkv, S, D); masked boolean broadcastable to (B, 1, T, S)."""
    once_differentiable = True

    def forward(self, q, k, v, masked, scale, dropout_p):
        xp = backend.get_array_module(q)
        b, h, t, d = q.shape
        if k.ndim != 4 or k.shape != v.shape or k.shape[0] != b or k.shape[3] != d or h % k.shape[1]:
            raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit "
                             "(B, H, T, D) and (B, Hkv, S, D) with Hkv dividing H")
        hkv, s = k.shape[1], k.shape[2]
        rep, n = h // hkv, b * hkv
        self.bias = self.dead = None
        if masked is not None:
            masked = xp.asarray(masked)
            if masked.ndim != 4 or masked.shape[1] != 1 or masked.shape[0] not in (1, b) \
                    or masked.shape[-2:] != (t, s):
                raise ValueError(f"attention: mask shape {masked.shape} must be (B or 1, 1, {t}, {s})")
            # half the dtype's lowest value: adding a score cannot overflow to -inf, and a row with
            # every key masked gets uniform finite weights instead of NaNs that would poison gradients
            self.bias = masked[:, 0] * xp.asarray(xp.finfo(q.dtype).min / 2, dtype=q.dtype)   # (Bm, T, S)
            # masked scores are constants: att = 0 drops their gradient, except in a row with every
            # key masked (uniform weights), so those rows are remembered and zeroed in backward
            dead = masked[:, 0].all(axis=-1)                                          # (Bm, T)
            self.dead = dead if bool(dead.any()) else None
        # q carries the scale and log2(e): softmax by exp2 (NumPy's float32 exp2 is ~1.8x faster than
        # exp), the same weights since exp2(y log2 e) = exp(y)
        qs = _units(q * xp.asarray(scale * _LOG2E, dtype=q.dtype), n)     # (N, rep*T, D)
        kc, vc = _units(k, n, is_grad_enabled()), _units(v, n, is_grad_enabled())   # (N, S, D)
        att = xp.empty((n, rep * t, s), dtype=q.dtype)
        out = xp.empty((n, rep * t, d), dtype=q.dtype)
        self.keep = None
        if dropout_p > 0.0:
            gen = backend.generator(backend.device_of(q))
            draw = gen.random(att.shape, dtype=att.dtype) if xp is np else gen.random_sample(att.shape, dtype=att.dtype)
            self.keep = (draw >= dropout_p).astype(att.dtype) * (1.0 / (1.0 - dropout_p))

        def work(lo, hi, scratch):
            sc = att[lo:hi]
            xp.matmul(qs[lo:hi], kc[lo:hi].swapaxes(-1, -2), out=sc)
            self._add_bias(sc, lo, hi, rep, hkv)
            sc -= sc.max(axis=-1, keepdims=True)
            xp.exp2(sc, out=sc)
            sc /= sc.sum(axis=-1, keepdims=True)
            if self.keep is not None:
                sc = xp.multiply(sc, self.keep[lo:hi], out=scratch(sc.shape))
            xp.matmul(sc, vc[lo:hi], out=out[lo:hi])

        parallel_units(n, rep * t * s, CHUNK_ELEMENTS, work, xp, att.dtype)
        self.att, self.qs, self.k, self.v, self.out = att, qs, kc, vc, out
        self.shape, self.scale = (b, h, t, d, hkv, s, rep), scale
        return out.reshape(b, h, t, d)

    def _add_bias(self, sc, lo, hi, rep, hkv):
        """scores of units [lo, hi) += the mask bias of their batch rows (one bias for every head)."""
        if self.bias is None:
            return
        rows = sc.reshape(hi - lo, rep, *self.bias.shape[1:])
        if self.bias.shape[0] == 1:
            rows += self.bias
        else:
            xp = backend.get_array_module(sc)
            rows += self.bias[xp.arange(lo, hi) // hkv][:, None]

    def _zero_dead(self, ds, lo, hi, rep, hkv):
        if self.dead is None:
            return
        xp = backend.get_array_module(ds)
        dead = self.dead if self.dead.shape[0] == 1 else self.dead[xp.arange(lo, hi) // hkv]
        rows = ds.reshape(hi - lo, rep, *self.dead.shape[1:], ds.shape[-1])
        rows *= ~xp.broadcast_to(dead[:, None, :, None], rows.shape)

    def backward(self, g):
        q, k, v = self.parents
        xp = g.xp
        b, h, t, d, hkv, s, rep = self.shape
        n = b * hkv
        gg = _units(g.data, n)                                             # (N, rep*T, D)
        rowdot = (gg * self.out).sum(axis=-1, keepdims=True)               # sum_j att_ij dA_ij = dO_i . O_i
        dq = xp.empty_like(self.qs) if q.requires_grad else None
        dk = xp.empty_like(self.k) if k.requires_grad else None
        dv = xp.empty_like(self.v) if v.requires_grad else None
        att, keep = self.att, self.keep

        def work(lo, hi, scratch):
            ds = xp.matmul(gg[lo:hi], self.v[lo:hi].swapaxes(-1, -2), out=scratch((hi - lo, rep * t, s)))
            if dv is not None:
                used = att[lo:hi] if keep is None else xp.multiply(att[lo:hi], keep[lo:hi],
                                                                      out=scratch((hi - lo, rep * t, s), 1))
                xp.matmul(used.swapaxes(-1, -2), gg[lo:hi], out=dv[lo:hi])
            if keep is not None:
                ds *= keep[lo:hi]
            ds -= rowdot[lo:hi]
            ds *= att[lo:hi]                                               # d scores
            self._zero_dead(ds, lo, hi, rep, hkv)
            if dq is not None:
                xp.matmul(ds, self.k[lo:hi], out=dq[lo:hi])
            if dk is not None:
                xp.matmul(ds.swapaxes(-1, -2), self.qs[lo:hi], out=dk[lo:hi])

        parallel_units(n, rep * t * s, CHUNK_ELEMENTS, work, xp, att.dtype)
        if dq is not None:
            dq *= xp.asarray(self.scale, dtype=dq.dtype)
        if dk is not None:
            dk *= xp.asarray(1.0 / _LOG2E, dtype=dk.dtype)                  # qs carried log2(e)
        wrap = lambda a, shape: None if a is None else Tensor._wrap(a.reshape(shape))  # noqa: E731
        return wrap(dq, q.shape), wrap(dk, k.shape), wrap(dv, v.shape)


def attention(q, k, v, masked=None, scale: float | None = None, dropout_p: float = 0.0):
    """softmax(q k^T * scale, masked positions excluded) v; scale defaults to 1/sqrt(D).

    masked: boolean array (True = may not attend), broadcastable as (B or 1, 1, T, S).
    """
    if scale is None:
        scale = 1.0 / float(np.sqrt(q.shape[-1]))
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    masked = masked.data if isinstance(masked, Tensor) else masked
    return Attention.apply(q, k, v, masked=masked, scale=scale, dropout_p=dropout_p)
