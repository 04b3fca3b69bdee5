"""The fused ops written as their formulas: read these first.

linear, layer_norm, rms_norm, cross_entropy and the three attentions are each a few lines of the
library's own Tensor ops (+ - * / @, sum, mean, sqrt, softmax, log_softmax, where, indexing), ops
that already have a backward, so autograd derives every gradient here and nothing needs a
hand-written backward. The versions that run by default (ops/matmul.py, ops/nn.py,
ops/attention.py, with their kernels in fast/) compute the same numbers with chunks, threads and
scratch buffers for speed; tests/test_reference_ops.py checks them against these, value and
gradient. `tinygrad_reason.use_reference_ops(True)` (or `with tinygrad_reason.reference_ops():`)
runs a whole model on these instead. Being Tensor ops all the way down, they are also twice
differentiable (create_graph=True), which the fused ops are not. The AdamW update, which is no
autograd op, has its reference in optim.py (adamw_reference_update).

Every function takes and returns Tensors, with the same arguments, defaults and errors as the
fused op of the same name (the argument checks are the fused ops' own: check_linear, check_norm,
check_cross_entropy, check_prefix, check_bias).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Tensor
from .elementwise import where
from .attention import check_bias, check_prefix
from .matmul import check_linear
from .movement import concatenate
from .nn import check_cross_entropy, check_norm


# ---------------------------------------------------------------- linear and the norms
def linear(x, weight, bias=None):
    """x @ weight^T + bias, weight stored (out, in) like torch; x (..., in) -> (..., out)."""
    check_linear(x.shape, weight.shape, None if bias is None else bias.shape)
    y = x @ weight.T
    return y if bias is None else y + bias


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5):
    """(x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the last axis; var divides by the
    dimension (biased, as torch's layer_norm)."""
    check_norm("layer_norm", x, weight, bias)
    centered = x - x.mean(axis=-1, keepdims=True)
    var = (centered * centered).mean(axis=-1, keepdims=True)
    out = centered / (var + eps).sqrt()
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def rms_norm(x, weight=None, eps: float = 1e-6):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (no centering, no bias)."""
    check_norm("rms_norm", x, weight, None)
    out = x / ((x * x).mean(axis=-1, keepdims=True) + eps).sqrt()
    return out if weight is None else out * weight


# ---------------------------------------------------------------- cross-entropy
def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean"):
    """-log softmax(logits)[target] per position, classes on the last axis; reduction "mean" averages
    over the positions whose target is not ignore_index, "sum" adds them, "none" keeps them (0 where
    ignored).

    logits (..., C), targets (...) integers in [0, C) or ignore_index. Ignored positions are
    selected out with where(), so they get exactly 0 gradient; with every position ignored the
    mean is 0/0 = nan, as in torch, and the gradient is still 0.
    """
    t = targets.data if isinstance(targets, Tensor) else logits.xp.asarray(targets)
    flat, valid = check_cross_entropy(logits.shape, t, ignore_index, reduction)
    n_cls = logits.shape[-1]
    xp = logits.xp
    log_probs = logits.reshape(-1, n_cls).log_softmax(axis=-1)                  # (N, C)
    picked = log_probs[xp.arange(flat.size), xp.where(valid, flat, 0)]          # class 0 stands in where ignored
    nll = where(valid, -picked, 0.0)                                            # (N,)
    if reduction == "none":
        return nll.reshape(t.shape)
    total = nll.sum()
    if reduction == "sum":
        return total
    count = int(valid.sum())
    return total / count if count else total * float("nan")


# ---------------------------------------------------------------- attention
def attention(q, k, v, masked=None, scale: float | None = None, dropout_p: float = 0.0, bias=None):
    """softmax(q k^T * scale + bias, masked positions excluded) v, per head; scale defaults to 1/sqrt(D).

    q (B, H, T, D); k, v (B, Hkv, S, D) with Hkv dividing H: query head i reads key/value head
    i // (H / Hkv) (grouped-query attention; Hkv = H is plain multi-head attention).
    masked: boolean, True where query t may not attend to key s, broadcastable as (B or 1, 1, T, S).
    A masked score is replaced by half the dtype's lowest number: its weight comes out exactly 0,
    and a query with every key masked gets equal scores, hence uniform weights (not NaN) and no
    gradient, as in the fused op.
    bias: None, or an additive bias on the scores (B or 1, H or 1, T, S), a Tensor in q's dtype (or an
    array); added before the mask, so masked scores give it no gradient.
    dropout_p: each attention weight is zeroed with this probability and the rest scaled by
    1 / (1 - p) (backend.generator's draws, in the fused op's order: see _dropout_keep).
    """
    _check_qkv("attention", q.shape, k.shape, v.shape)
    b, h, t, d = q.shape
    _check_dropout("attention", dropout_p)
    hkv, s = k.shape[1], k.shape[2]
    masked = _checked_mask(masked, b, t, s, q.xp)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    if hkv != h:
        kv_head = np.arange(h) // (h // hkv)          # each query head's key/value head
        k, v = k[:, kv_head], v[:, kv_head]            # (B, H, S, D); backward adds up each group's gradients
    scores = (q @ k.transpose(-1, -2)) * scale                                  # (B, H, T, S)
    if bias is not None:
        scores = scores + check_bias(q, s, bias)
    if masked is not None:
        scores = where(masked, float(np.finfo(q.dtype).min) / 2, scores)
    weights = scores.softmax(axis=-1)
    if dropout_p > 0.0:
        weights = weights * _dropout_keep(weights, hkv, dropout_p)
    return weights @ v                                                          # (B, H, T, D)


def packed_attention(qkv, n_heads: int, masked=None, scale: float | None = None, dropout_p: float = 0.0):
    """attention() on the heads of one packed projection: qkv (B, T, 3 H D) = [q | k | v], each third
    (B, T, H, D) in torch's head layout; returns (B, T, H D). scale defaults to 1/sqrt(D)."""
    if qkv.ndim != 3 or n_heads < 1 or qkv.shape[-1] % (3 * n_heads):
        raise ValueError(f"packed_attention: qkv shape {qkv.shape} is not (B, T, 3 * {n_heads} * head_dim)")
    _check_dropout("packed_attention", dropout_p)
    b, t, width = qkv.shape
    d = width // (3 * n_heads)
    q, k, v = (third.reshape(b, t, n_heads, d).transpose(1, 2) for third in qkv.split(3, axis=-1))
    out = attention(q, k, v, masked, scale, dropout_p)                          # (B, H, T, D)
    return out.transpose(1, 2).reshape(b, t, n_heads * d)


def prefix_attention(q, k, v, prefix, masked=None, scale: float | None = None, dropout_p: float = 0.0,
                     bias=None):
    """attention(q, [pk[group]; k], [pv[group]; v]): row i's keys and values are those of its shared
    prefix group[i] followed by its own (nn.KVCache.share_prefix). prefix = (pk, pv, group): pk, pv
    (G, Hkv, P, D) arrays, group (B,) indices; masked and bias over all P + S keys. The prefix is a
    constant (in k's dtype): gradients reach q, k, v and the bias."""
    pk, pv, group = check_prefix(q, k, prefix)
    keys = concatenate([Tensor(pk, dtype=k.dtype, device=k.device)[group], k], axis=2)   # (B, Hkv, P + S, D)
    values = concatenate([Tensor(pv, dtype=v.dtype, device=v.device)[group], v], axis=2)
    return attention(q, keys, values, masked, scale, dropout_p, bias)


def _dropout_keep(weights, hkv: int, p: float) -> Tensor:
    """The dropout factor of each attention weight: 1 / (1 - p) where kept, 0 where dropped.

    The uniform draws are taken in the order the fused op takes them (per batch row and key/value
    head, keys by the query rows of its head group), so one seed drops the same weights on either
    path (the fused op draws once per score block; it has one block unless a causal mask over 256 or
    more queries lets it skip some)."""
    b, h, t, s = weights.shape
    gen = backend.generator(weights.device)
    shape, dtype = (b, hkv, s, h // hkv, t), weights.dtype
    draws = gen.random(shape, dtype=dtype) if isinstance(gen, np.random.Generator) \
        else gen.random_sample(shape, dtype=dtype)
    keep = draws.transpose(0, 1, 3, 4, 2).reshape(b, h, t, s) >= p
    return Tensor._wrap(keep.astype(dtype) * (1.0 / (1.0 - p)))


def _check_qkv(op: str, q_shape, k_shape, v_shape) -> None:
    if len(q_shape) != 4:
        raise ValueError(f"{op}: q shape {q_shape} is not (B, H, T, D)")
    b, h, _, d = q_shape
    if len(k_shape) != 4 or k_shape != v_shape or k_shape[0] != b or k_shape[3] != d or h % k_shape[1]:
        raise ValueError(f"{op}: q {q_shape}, k {k_shape}, v {v_shape} do not fit "
                         "(B, H, T, D) and (B, Hkv, S, D) with Hkv dividing H")


def _check_dropout(op: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {p}")


def _checked_mask(masked, b: int, t: int, s: int, xp):
    """The mask as a boolean array of xp, or a clear error when its shape is not (B or 1, 1, T, S)."""
    if s == 0 and t > 0:
        raise ValueError(f"attention: {t} queries but no keys (S = 0) to attend to")
    if masked is None:
        return None
    masked = xp.asarray(masked.data if isinstance(masked, Tensor) else masked).astype(bool, copy=False)
    if masked.ndim != 4 or masked.shape[1] != 1 or masked.shape[0] not in (1, b) or masked.shape[-2:] != (t, s):
        raise ValueError(f"attention: mask shape {masked.shape} must be (B or 1, 1, {t}, {s})")
    return masked
