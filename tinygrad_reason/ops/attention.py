"""Scaled dot-product attention as one fused op (llm.c's attention_forward / attention_backward).

    S = q k^T * scale  (masked positions get a large negative bias)      P = softmax(S) over the keys
    out = P v

    backward, for the output gradient dO:
    dV = P^T dO        dP = dO V^T        dS = P * (dP - rowsum(dO * out))        dQ = dS K * scale
    dK = dS^T Q * scale

Grouped-query heads: H query heads share Hkv key/value heads (H / Hkv queries per group); dK and
dV sum over the group. The numbers are computed by fast/attention.py's blocked kernel (score blocks
that stay in cache, only the blocks a causal mask leaves live, threads); ops/reference.py writes the
same formula in Tensor ops, which is the version to read first. Once-differentiable: the backward
works on raw arrays.

An additive bias on the scores, S = q k^T * scale + bias with bias (B or 1, H or 1, T, S), is
BiasedAttention (attention(..., bias=...)): dS above is also the bias's gradient, summed over the
axes it broadcasts along. A hard mask belongs in `masked`, not in the bias (no gradient, and the
blocked kernel skips what it masks); a bias may be large and negative, or -inf where a row keeps
one finite score.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..fast import attention as kernel
from ..tensor import Function, Tensor, is_grad_enabled
from .movement import concatenate


class Attention(Function):
    """q (B, H, T, D), k and v (B, Hkv, S, D); masked boolean broadcastable to (B, 1, T, S)."""
    once_differentiable = True

    def forward(self, q, k, v, masked, scale, dropout_p):
        kernel.check_qkv("attention", q.shape, k.shape, v.shape)
        b, _, t, _ = q.shape
        if t == 1 and backend.get_array_module(q) is np and not is_grad_enabled() and dropout_p == 0.0:
            # a decode step without a graph: one query per row, nothing to save
            return kernel.one_query(q, k, v, kernel.checked_mask(masked, b, t, k.shape[2], np), scale)
        out, self.blocks = kernel.forward(q, k, v, masked, scale, dropout_p, keep_inputs=is_grad_enabled())
        return out

    def backward(self, g):
        q, k, v = self.parents
        dq, dk, dv = kernel.backward(self.blocks, g.data, q.requires_grad, k.requires_grad, v.requires_grad)
        wrap = lambda a: None if a is None else Tensor._wrap(a)  # noqa: E731
        return wrap(dq), wrap(dk), wrap(dv)


class PackedAttention(Function):
    """Attention on the packed projection of all heads: qkv (B, T, 3 H D) holds q | k | v, each
    (B, T, H, D) in torch's head layout; the output is (B, T, H D), the layout the output
    projection reads, and the gradient is one (B, T, 3 H D) array: no head transposes or copies
    either way. One key/value head per query head. q is scaled first unless scale is 1 (the model
    folds it into q's weights)."""
    once_differentiable = True

    def forward(self, qkv, masked, n_heads, scale, dropout_p):
        if qkv.ndim != 3 or n_heads < 1 or qkv.shape[-1] % (3 * n_heads):
            raise ValueError(f"packed_attention: qkv shape {qkv.shape} is not (B, T, 3 * {n_heads} * head_dim)")
        if scale is None:
            scale = 1.0 / math.sqrt(qkv.shape[-1] // (3 * n_heads))
        out, self.blocks = kernel.packed_forward(qkv, masked, n_heads, scale, dropout_p)
        return out

    def backward(self, g):
        return Tensor._wrap(kernel.packed_backward(self.blocks, g.data))


class BiasedAttention(Function):
    """Attention with an additive bias on the scores: q (B, H, T, D), k and v (B, Hkv, S, D), bias
    (B or 1, H or 1, T, S) in q's dtype; masked as in Attention. The gradient reaches the bias too.
    A decode step without a graph takes fast.attention.one_query with the bias added; everything
    else one unblocked score array (fast.attention.biased_forward)."""
    once_differentiable = True

    def forward(self, q, k, v, bias, masked, scale, dropout_p):
        kernel.check_qkv("attention", q.shape, k.shape, v.shape)
        b, h, t, _ = q.shape
        s = k.shape[2]
        kernel.check_bias(bias.shape, b, h, t, s)
        if t == 1 and backend.get_array_module(q) is np and not is_grad_enabled() and dropout_p == 0.0:
            return kernel.one_query(q, k, v, kernel.checked_mask(masked, b, t, s, np), scale, bias)
        out, self.saved = kernel.biased_forward(q, k, v, bias, masked, scale, dropout_p,
                                                keep_inputs=is_grad_enabled())
        return out

    def backward(self, g):
        q, k, v, bias = self.parents
        grads = kernel.biased_backward(self.saved, g.data, q.requires_grad, k.requires_grad, v.requires_grad,
                                       bias.requires_grad)
        return tuple(None if a is None else Tensor._wrap(a) for a in grads)


def attention(q, k, v, masked=None, scale: float | None = None, dropout_p: float = 0.0, bias=None):
    """softmax(q k^T * scale [+ bias], masked positions excluded) v; scale defaults to 1/sqrt(D).

    masked: boolean array (True = may not attend), broadcastable as (B or 1, 1, T, S).
    bias: None, or an additive bias on the scores (B or 1, H or 1, T, S): a Tensor in q's dtype
    (its gradient is computed when it requires grad) or an array (cast to q's dtype). Without a bias
    this is the Attention op, unchanged; with one, BiasedAttention.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    masked = masked.data if isinstance(masked, Tensor) else masked
    if bias is None:
        return Attention.apply(q, k, v, masked=masked, scale=scale, dropout_p=dropout_p)
    if q.ndim != 4:
        raise ValueError(f"attention: q shape {q.shape} is not (B, H, T, D)")
    kernel.check_qkv("attention", q.shape, k.shape, v.shape)           # before S is read off k
    bias = check_bias(q, k.shape[2], bias)
    return BiasedAttention.apply(q, k, v, bias, masked=masked, scale=scale, dropout_p=dropout_p)


def check_bias(q, s: int, bias) -> Tensor:
    """The attention bias as a Tensor on q's device in q's dtype (an array is converted; a Tensor must
    have q's dtype already, so a gradient is never silently cast), or a clear error when it is not
    (B or 1, H or 1, T, S) for S keys. Shared with ops/reference.py."""
    if q.ndim != 4:
        raise ValueError(f"attention: q shape {q.shape} is not (B, H, T, D)")
    if isinstance(bias, Tensor):
        if bias.dtype != q.dtype:
            raise ValueError(f"attention: bias dtype {bias.dtype} differs from q's {q.dtype}")
    else:
        arr = bias if hasattr(bias, "shape") else np.asarray(bias)
        bias = Tensor._wrap(backend.to_device(arr, q.device).astype(q.dtype, copy=False))
    kernel.check_bias(bias.shape, q.shape[0], q.shape[1], q.shape[2], s)
    return bias


def prefix_attention(q, k, v, prefix, masked=None, scale: float | None = None, dropout_p: float = 0.0,
                     bias=None):
    """attention() for rows that continue shared prefixes (nn.KVCache.share_prefix): row i attends to
    the keys [pk[group[i]]; k[i]] with prefix = (pk, pv, group); pk, pv (G, Hkv, P, D) arrays, group
    (B,) indices, masked and bias over all P + S keys. A decode step without a graph (one query per
    row, NumPy, no dropout) reads each prefix once for all its rows; otherwise each row's keys are
    gathered and concatenated (gradients reach q, k, v and the bias; the prefix is a constant)."""
    pk, pv, group = check_prefix(q, k, prefix)
    b, h, t, d = q.shape
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    masked = masked.data if isinstance(masked, Tensor) else masked
    if t == 1 and q.xp is np and not is_grad_enabled() and dropout_p == 0.0:
        kernel.check_qkv("prefix_attention", q.shape, k.shape, v.shape)
        masked = kernel.checked_mask(masked, b, t, pk.shape[2] + k.shape[2], np)
        bias = None if bias is None else check_bias(q, pk.shape[2] + k.shape[2], bias).data
        return Tensor._wrap(kernel.prefix_one_query(q.data, k.data, v.data, pk, pv, group, masked, scale, bias))
    rows = [backend.to_device(a, k.device)[k.xp.asarray(group)] for a in (pk, pv)]   # each row's prefix, on k's device
    keys = concatenate([Tensor._wrap(rows[0]), k], axis=2)
    values = concatenate([Tensor._wrap(rows[1]), v], axis=2)
    return attention(q, keys, values, masked, scale, dropout_p, bias)


def check_prefix(q, k, prefix):
    """(pk, pv, group) of a shared prefix, group as a CPU index array; a clear error when they do not
    fit q and k. Shared with ops/reference.py."""
    pk, pv, group = prefix
    group = np.asarray(backend.to_device(group, "cpu") if hasattr(group, "shape") else group)
    b, d = q.shape[0], q.shape[-1]
    if (pk.ndim != 4 or pv.shape != pk.shape or k.ndim != 4 or pk.shape[1] != k.shape[1] or pk.shape[3] != d
            or group.shape != (b,) or (group.size and (group.min() < 0 or group.max() >= pk.shape[0]))):
        raise ValueError(f"prefix_attention: prefix keys {pk.shape} and values {pv.shape} with group {group.shape} "
                         f"do not fit q {q.shape} and k {k.shape} ((G, Hkv, P, D), group (B,) in [0, G))")
    return pk, pv, group


def packed_attention(qkv, n_heads: int, masked=None, scale: float | None = None, dropout_p: float = 0.0):
    """Attention over qkv (B, T, 3 H D) = [q | k | v] (torch's head layout in each third); returns
    (B, T, H D). The same result as splitting the heads out and calling `attention`, without the
    copies. scale defaults to 1/sqrt(D); pass 1.0 when q's projection already carries it."""
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"packed_attention: dropout_p must be in [0, 1), got {dropout_p}")
    masked = masked.data if isinstance(masked, Tensor) else masked
    return PackedAttention.apply(qkv, masked=masked, n_heads=n_heads, scale=scale, dropout_p=dropout_p)
