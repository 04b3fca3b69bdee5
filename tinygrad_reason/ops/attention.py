"""Scaled dot-product attention as one fused op (llm.c's attention_forward / attention_backward).

    scores = q k^T * scale;  scores[masked] = lowest;  att = softmax(scores);  [att = dropout(att)]
    out = att v

Grouped-query heads: the H query heads form Hkv groups of rep = H / Hkv; the rep*T query rows of
a group are stacked into one matrix so each key/value head takes part in one large matmul (no
copy of k or v per query head), and dk, dv come out summed over the group automatically.
Operands are made contiguous first: NumPy's batched matmul is about twice as slow on transposed
views. Once-differentiable: the backward works on raw arrays.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Function, Tensor


def _c(a):
    return backend.get_array_module(a).ascontiguousarray(a)


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
        rep = h // hkv
        qg = _c(q).reshape(b, hkv, rep * t, d)
        scores = qg @ _c(k.swapaxes(-1, -2))                           # (B, Hkv, rep*T, S)
        scores *= scale
        if masked is not None:
            masked = xp.asarray(masked)
            if masked.ndim != 4 or masked.shape[1] != 1 or masked.shape[-2:] != (t, s):
                raise ValueError(f"attention: mask shape {masked.shape} must be (B or 1, 1, {t}, {s})")
            # the dtype's lowest finite value rather than -inf: a row with every key masked then
            # gets uniform finite weights instead of NaNs that would poison the gradients
            view = scores.reshape(b, hkv, rep, t, s)
            xp.copyto(view, xp.asarray(xp.finfo(scores.dtype).min, dtype=scores.dtype), where=masked[:, :, None])
        # masked scores are constants: their gradient must be dropped. Elsewhere att = 0 there does it,
        # but not in a fully masked row (uniform weights), so only then is the mask kept for backward
        self.masked = masked if masked is not None and bool(masked.all(axis=-1).any()) else None
        scores -= scores.max(axis=-1, keepdims=True)
        xp.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        att = scores
        self.keep = None
        if dropout_p > 0.0:
            gen = backend.generator(backend.device_of(q))
            draw = gen.random(att.shape, dtype=att.dtype) if xp is np else gen.random_sample(att.shape, dtype=att.dtype)
            self.keep = (draw >= dropout_p).astype(att.dtype) * (1.0 / (1.0 - dropout_p))
            att_used = att * self.keep
        else:
            att_used = att
        vc = _c(v)
        out = att_used @ vc                                            # (B, Hkv, rep*T, D)
        self.att, self.att_used, self.qg, self.v = att, att_used, qg, vc
        self.shape, self.scale = (b, h, t, d, hkv, s, rep), scale
        return out.reshape(b, h, t, d)

    def backward(self, g):
        q, k, v = self.parents
        b, h, t, d, hkv, s, rep = self.shape
        gg = _c(g.data).reshape(b, hkv, rep * t, d)
        d_att = gg @ _c(self.v.swapaxes(-1, -2))                       # (B, Hkv, rep*T, S)
        dv = (_c(gg.swapaxes(-1, -2)) @ self.att_used).swapaxes(-1, -2) if v.requires_grad else None
        if self.keep is not None:
            d_att *= self.keep
        # softmax backward: d_scores = att * (d_att - sum(d_att * att)), then the scale
        att = self.att
        d_att -= (d_att * att).sum(axis=-1, keepdims=True)
        d_att *= att
        d_att *= self.scale
        if self.masked is not None:
            d_att.reshape(b, hkv, rep, t, s)[...] *= ~self.masked[:, :, None]
        dq = (d_att @ _c(k.data)).reshape(b, h, t, d) if q.requires_grad else None
        dk = (_c(self.qg.swapaxes(-1, -2)) @ d_att).swapaxes(-1, -2) if k.requires_grad else None
        wrap = lambda a: None if a is None else Tensor._wrap(a)  # noqa: E731
        return wrap(dq), wrap(dk), wrap(dv)


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
