"""The op set under test: one OpSpec per differentiable op, shared by the gradcheck, hypothesis and
torch-parity suites so that every op gets all three. test_registry_covers_every_function fails
when an op (a Function subclass in tinygrad_reason.ops) has no spec here.

Each spec says how to call our op and torch's on the same inputs, default shapes, the values the
inputs may take (`domain`), and whether the op is twice differentiable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import tinygrad_reason as tg
from tinygrad_reason import functional as F
from tinygrad_reason.ops import attention as AT, elementwise as E, matmul as MM, movement as M, nn as NN, reduce as R
from tinygrad_reason.ops import rope as RP
from tinygrad_reason.ops.rope import rope, rope_tables

# Domains: how input values are drawn (the same draw feeds our op and torch's).
#   real      standard normal
#   positive  uniform in [0.5, 2]      (log, sqrt, pow bases, divisors)
#   kinkfree  normal, pushed at least 0.1 away from 0 (relu, abs: finite differences at the kink are wrong)
#   distinct  well-separated values in random order, jittered so two inputs never tie (max/min/maximum)


@dataclass
class OpSpec:
    name: str
    ours: Callable
    torch: Callable
    shapes: list                    # one shape per input tensor
    functions: tuple                # the Function classes this spec exercises
    domain: str = "real"
    twice: bool = True              # twice differentiable: gradgradcheck applies
    kind: str = "unary"             # unary | binary | reduce | other (hypothesis picks shape strategies by kind)
    grad_inputs: tuple | None = None  # which inputs are differentiable (default: all)
    extra: dict = field(default_factory=dict)
    tol32: float = 1e-5             # float32 parity tolerance (atol and rtol)


def draw(domain: str, shape, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    shape = tuple(shape)
    if domain == "positive":
        a = rng.uniform(0.5, 2.0, size=shape)
    elif domain == "kinkfree":
        a = rng.standard_normal(shape)
        a = np.where(np.abs(a) < 0.1, np.sign(a + 1e-12) * (0.1 + np.abs(a)), a)
    elif domain == "distinct":
        n = int(np.prod(shape)) if shape else 1
        a = (rng.permutation(n) * 0.37 - n * 0.15 + rng.uniform(0.01, 0.2, n)).reshape(shape)
    else:
        a = rng.standard_normal(shape)
    return np.asarray(a, dtype=dtype)


def torch_dtype(dtype):
    import torch
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


_T = np.array([[0, 3, 1], [2, -100, 4]])          # cross-entropy targets for logits (2, 3, 5)
_IDS = np.array([[1, 0, 3], [3, 3, 2]])           # embedding ids into a (5, 4) table (repeats on purpose)
_IDX = np.array([0, 2, 2, 1])                     # getitem integer array with repeats
_MASK = np.array([True, False, True])             # getitem boolean mask on axis 0 of size 3


def _t(arr):
    import torch
    return torch.from_numpy(np.asarray(arr))


def _torch_rope(x, base=10000.0):
    """HF Llama's rotate-half RoPE, written in torch independently of ours."""
    import torch
    t, d = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq)
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _causal(t):
    return np.triu(np.ones((t, t), dtype=bool), 1)[None, None]


# padding: row 0 may not see key 2, row 1 sees nothing at all (uniform weights, finite)
_PAD_MASKED = np.array([[False, False, True], [True, True, True]])[:, None, None, :].repeat(3, axis=2)


# rows continuing shared prefixes (KVCache.share_prefix): 2 prefixes of 3 positions, row i continues _PREFIX_GROUP[i];
# each row's 2 queries sit at positions 3 and 4 and see the keys up to their own
_PREFIX_K, _PREFIX_V = np.random.default_rng(7).standard_normal((2, 2, 2, 3, 4))
_PREFIX_GROUP = np.array([1, 0, 1])
_PREFIX_MASKED = (np.arange(5)[None, :] > 3 + np.arange(2)[:, None])[None, None]


def _prefix_attention(q, k, v):
    prefix = (_PREFIX_K.astype(k.dtype), _PREFIX_V.astype(v.dtype), _PREFIX_GROUP)
    return F.prefix_attention(q, k, v, prefix, _PREFIX_MASKED)


def _torch_prefix_attention(q, k, v):
    import torch
    pk, pv = (torch.from_numpy(a[_PREFIX_GROUP]).to(k.dtype) for a in (_PREFIX_K, _PREFIX_V))
    return _torch_attention(q, torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2), _PREFIX_MASKED)


def _torch_packed_attention(qkv, n_heads, masked, scale=None):
    """Split the (B, T, 3 H D) projection into heads, written-out attention, heads merged back.
    scale: the score scale instead of 1/sqrt(D) (q is rescaled for _torch_attention's 1/sqrt(D))."""
    b, t, w = qkv.shape
    d = w // (3 * n_heads)
    q, k, v = (qkv[..., i * n_heads * d:(i + 1) * n_heads * d].reshape(b, t, n_heads, d).transpose(1, 2)
               for i in range(3))
    if scale is not None:
        q = q * (scale * d ** 0.5)
    return _torch_attention(q, k, v, masked).transpose(1, 2).reshape(b, t, n_heads * d)


def _torch_attention(q, k, v, masked, bias=None):
    """Written-out attention in torch: repeat kv heads, scores (+ an additive bias), mask, softmax,
    weighted sum."""
    import torch
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(_t(masked), torch.finfo(q.dtype).min)
    return scores.softmax(-1) @ v


def _prefix_attention_bias(q, k, v, bias):
    prefix = (_PREFIX_K.astype(k.dtype), _PREFIX_V.astype(v.dtype), _PREFIX_GROUP)
    return F.prefix_attention(q, k, v, prefix, _PREFIX_MASKED, bias=bias)


def _torch_prefix_attention_bias(q, k, v, bias):
    import torch
    pk, pv = (torch.from_numpy(a[_PREFIX_GROUP]).to(k.dtype) for a in (_PREFIX_K, _PREFIX_V))
    return _torch_attention(q, torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2), _PREFIX_MASKED, bias)


def _tmask(shape, rng_seed=7):
    return np.random.default_rng(rng_seed).random(shape) > 0.5


SPECS: list[OpSpec] = [
    # ---- elementwise arithmetic (binary ops broadcast: the second shape broadcasts into the first)
    OpSpec("add", lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (4,)], (E.Add,), kind="binary"),
    OpSpec("sub", lambda a, b: a - b, lambda a, b: a - b, [(3, 4), (3, 1)], (E.Sub,), kind="binary"),
    OpSpec("mul", lambda a, b: a * b, lambda a, b: a * b, [(2, 3, 4), (3, 4)], (E.Mul,), kind="binary"),
    OpSpec("div", lambda a, b: a / b, lambda a, b: a / b, [(3, 4), (4,)], (E.Div,), kind="binary",
           extra={"domains": ("real", "positive")}),
    OpSpec("neg", lambda a: -a, lambda a: -a, [(3, 4)], (E.Neg,)),
    OpSpec("pow_tensor", lambda a, b: a ** b, lambda a, b: a ** b, [(3, 4), (4,)], (E.Pow,), kind="binary",
           domain="positive"),
    OpSpec("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, [(3, 4)], (E.PowScalar,)),
    OpSpec("pow_scalar_frac", lambda a: a ** 1.5, lambda a: a ** 1.5, [(3, 4)], (E.PowScalar,), domain="positive"),
    OpSpec("rsub_scalar", lambda a: 2.0 - a, lambda a: 2.0 - a, [(3, 4)], (E.Sub,)),
    OpSpec("rdiv_scalar", lambda a: 2.0 / a, lambda a: 2.0 / a, [(3, 4)], (E.Div,), domain="positive"),
    # ---- transcendental and activations
    OpSpec("exp", lambda a: a.exp(), lambda a: a.exp(), [(3, 4)], (E.Exp,)),
    OpSpec("log", lambda a: a.log(), lambda a: a.log(), [(3, 4)], (E.Log,), domain="positive"),
    OpSpec("sqrt", lambda a: a.sqrt(), lambda a: a.sqrt(), [(3, 4)], (E.Sqrt,), domain="positive"),
    OpSpec("tanh", lambda a: a.tanh(), lambda a: a.tanh(), [(3, 4)], (E.Tanh,)),
    OpSpec("sigmoid", lambda a: a.sigmoid(), lambda a: a.sigmoid(), [(3, 4)], (E.Sigmoid,)),
    OpSpec("erf", lambda a: a.erf(), lambda a: a.erf(), [(3, 4)], (E.Erf,)),
    OpSpec("relu", lambda a: a.relu(), lambda a: a.relu(), [(3, 4)], (E.Relu,), domain="kinkfree"),
    OpSpec("gelu", lambda a: F.gelu(a), lambda a: __import__("torch").nn.functional.gelu(a), [(3, 4)], (E.Gelu,)),
    OpSpec("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"),
           lambda a: __import__("torch").nn.functional.gelu(a, approximate="tanh"), [(3, 4)], (E.GeluTanh,)),
    OpSpec("silu", lambda a: F.silu(a), lambda a: __import__("torch").nn.functional.silu(a), [(3, 4)], (E.Silu,)),
    OpSpec("abs", lambda a: a.abs(), lambda a: a.abs(), [(3, 4)], (E.Abs,), domain="kinkfree"),
    OpSpec("maximum", lambda a, b: a.maximum(b), lambda a, b: __import__("torch").maximum(a, b), [(3, 4), (3, 4)],
           (E.Maximum,), kind="binary", domain="distinct"),
    OpSpec("minimum", lambda a, b: a.minimum(b), lambda a, b: __import__("torch").minimum(a, b), [(3, 4), (3, 4)],
           (E.Minimum,), kind="binary", domain="distinct"),
    OpSpec("clip", lambda a: a.clip(-0.55, 0.65), lambda a: a.clamp(-0.55, 0.65), [(4, 5)], (E.Clip,), domain="distinct"),
    OpSpec("where", lambda a, b: tg.where(_tmask(a.shape), a, b),
           lambda a, b: __import__("torch").where(_t(_tmask(tuple(a.shape))), a, b), [(3, 4), (4,)], (E.Where,),
           kind="other"),
    OpSpec("masked_fill", lambda a: a.masked_fill(_tmask(a.shape), -1.5),
           lambda a: a.masked_fill(_t(_tmask(tuple(a.shape))), -1.5), [(3, 4)], (E.Where,)),
    OpSpec("astype", lambda a: a.astype(np.float32).astype(np.float64) * 1.0,
           lambda a: a.float().double() * 1.0, [(3, 4)], (E.Cast,),
           # a round trip through float32 is exact only to ~1e-7: finite differences need a coarse step
           extra={"gradcheck": {"eps": 1e-3, "atol": 1e-3, "rtol": 1e-3}}),
    # ---- reductions (axis variants)
    OpSpec("sum", lambda a: a.sum(), lambda a: a.sum(), [(3, 4)], (R.Sum,), kind="reduce"),
    OpSpec("sum_axis_keepdims", lambda a: a.sum(axis=(0, -1), keepdims=True),
           lambda a: a.sum(dim=(0, -1), keepdim=True), [(2, 3, 4)], (R.Sum,), kind="reduce"),
    OpSpec("mean", lambda a: a.mean(axis=1), lambda a: a.mean(dim=1), [(3, 4)], (R.Sum,), kind="reduce"),
    OpSpec("var", lambda a: a.var(axis=-1), lambda a: a.var(dim=-1), [(3, 5)], (R.Sum,), kind="reduce"),
    OpSpec("var_all_biased", lambda a: a.var(correction=0), lambda a: a.var(correction=0), [(3, 5)], (R.Sum,),
           kind="reduce"),
    OpSpec("max", lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [(3, 4)], (R.Max,), kind="reduce",
           domain="distinct"),
    OpSpec("min_keepdims", lambda a: a.min(axis=0, keepdims=True), lambda a: a.amin(dim=0, keepdim=True),
           [(3, 4)], (R.Min,), kind="reduce", domain="distinct"),
    OpSpec("max_all", lambda a: a.max(), lambda a: a.amax(), [(3, 4)], (R.Max,), kind="reduce", domain="distinct"),
    OpSpec("logsumexp", lambda a: a.logsumexp(axis=-1), lambda a: a.logsumexp(dim=-1), [(3, 4)], (R.LogSumExp,),
           kind="reduce"),
    # ---- movement
    OpSpec("reshape", lambda a: a.reshape(4, 3), lambda a: a.reshape(4, 3), [(3, 4)], (M.Reshape,), kind="other"),
    OpSpec("permute", lambda a: a.permute(2, 0, 1), lambda a: a.permute(2, 0, 1), [(2, 3, 4)], (M.Permute,),
           kind="other"),
    OpSpec("transpose", lambda a: a.transpose(0, 1), lambda a: a.transpose(0, 1), [(3, 4)], (M.Permute,), kind="other"),
    OpSpec("expand", lambda a: a.expand(2, 3, 4), lambda a: a.expand(2, 3, 4), [(3, 1)], (M.Expand,), kind="other"),
    OpSpec("squeeze", lambda a: a.squeeze(1), lambda a: a.squeeze(1), [(3, 1, 4)], (M.Reshape,), kind="other"),
    OpSpec("unsqueeze", lambda a: a.unsqueeze(-1), lambda a: a.unsqueeze(-1), [(3, 4)], (M.Reshape,), kind="other"),
    OpSpec("getitem_slice", lambda a: a[1:, ::2], lambda a: a[1:, ::2], [(3, 4)], (M.GetItem, M.ScatterAdd),
           kind="other"),
    OpSpec("getitem_int_array", lambda a: a[_IDX], lambda a: a[_t(_IDX)], [(3, 4)], (M.GetItem, M.ScatterAdd),
           kind="other"),
    OpSpec("getitem_bool_mask", lambda a: a[_MASK], lambda a: a[_t(_MASK)], [(3, 4)], (M.GetItem, M.ScatterAdd),
           kind="other"),
    OpSpec("getitem_mixed", lambda a: a[None, _IDX, 1:3], lambda a: a[None, _t(_IDX), 1:3], [(3, 4)],
           (M.GetItem, M.ScatterAdd), kind="other"),
    OpSpec("concatenate", lambda a, b: tg.concatenate([a, b], axis=1),
           lambda a, b: __import__("torch").cat([a, b], dim=1), [(3, 2), (3, 4)], (M.Concatenate,), kind="other"),
    OpSpec("stack", lambda a, b: tg.stack([a, b], axis=-1), lambda a, b: __import__("torch").stack([a, b], dim=-1),
           [(3, 4), (3, 4)], (M.Concatenate, M.Reshape), kind="other"),
    OpSpec("split", lambda a: a.split([1, 3], axis=1)[1], lambda a: a.split([1, 3], dim=1)[1], [(3, 4)],
           (M.GetItem,), kind="other"),
    OpSpec("pad", lambda a: a.pad(((1, 0), (2, 1)), value=0.5),
           lambda a: __import__("torch").nn.functional.pad(a, (2, 1, 1, 0), value=0.5), [(3, 4)], (M.Pad,),
           kind="other"),
    # ---- matmul
    OpSpec("matmul_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 5)], (MM.MatMul,), kind="other"),
    OpSpec("matmul_batched_broadcast", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)],
           (MM.MatMul,), kind="other"),
    OpSpec("matmul_3d_by_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4, 5)], (MM.MatMul,), kind="other"),
    OpSpec("linear", lambda x, w, b: F.linear(x, w, b),
           lambda x, w, b: __import__("torch").nn.functional.linear(x, w, b), [(2, 3, 4), (5, 4), (5,)],
           (MM.Linear,), kind="other"),
    OpSpec("linear_no_bias", lambda x, w: F.linear(x, w),
           lambda x, w: __import__("torch").nn.functional.linear(x, w), [(3, 4), (5, 4)], (MM.Linear,), kind="other"),
    OpSpec("rope", lambda x: rope(x, *rope_tables(x.shape[-2], x.shape[-1], dtype=x.dtype)),
           lambda x: _torch_rope(x), [(2, 3, 5, 8)], (RP.Rope,), kind="other"),
    OpSpec("attention_causal_gqa", lambda q, k, v: F.attention(q, k, v, _causal(q.shape[2])),
           lambda q, k, v: _torch_attention(q, k, v, _causal(q.shape[2])), [(2, 4, 5, 8), (2, 2, 5, 8), (2, 2, 5, 8)],
           (AT.Attention,), twice=False, kind="other"),
    OpSpec("attention_padding", lambda q, k, v: F.attention(q, k, v, _PAD_MASKED),
           lambda q, k, v: _torch_attention(q, k, v, _PAD_MASKED), [(2, 2, 3, 4), (2, 2, 3, 4), (2, 2, 3, 4)],
           (AT.Attention,), twice=False, kind="other"),
    OpSpec("packed_attention_causal", lambda qkv: F.packed_attention(qkv, 2, _causal(5)),
           lambda qkv: _torch_packed_attention(qkv, 2, _causal(5)), [(2, 5, 3 * 2 * 4)],
           (AT.PackedAttention,), twice=False, kind="other"),
    OpSpec("packed_attention_padding_prescaled", lambda qkv: F.packed_attention(qkv, 2, _PAD_MASKED, scale=1.0),
           lambda qkv: _torch_packed_attention(qkv, 2, _PAD_MASKED, scale=1.0), [(2, 3, 3 * 2 * 4)],
           (AT.PackedAttention,), twice=False, kind="other"),
    OpSpec("prefix_attention_gqa", _prefix_attention, _torch_prefix_attention,
           [(3, 4, 2, 4), (3, 2, 2, 4), (3, 2, 2, 4)], (AT.Attention, M.Concatenate), twice=False, kind="other"),
    # an additive bias on the scores (B or 1, H or 1, T, S): its gradient is checked with q's, k's and v's
    OpSpec("attention_bias_causal_gqa", lambda q, k, v, bias: F.attention(q, k, v, _causal(q.shape[2]), bias=bias),
           lambda q, k, v, bias: _torch_attention(q, k, v, _causal(q.shape[2]), bias),
           [(2, 4, 5, 8), (2, 2, 5, 8), (2, 2, 5, 8), (2, 1, 5, 5)], (AT.BiasedAttention,), twice=False, kind="other"),
    OpSpec("attention_bias_per_head_padding", lambda q, k, v, bias: F.attention(q, k, v, _PAD_MASKED, bias=bias),
           lambda q, k, v, bias: _torch_attention(q, k, v, _PAD_MASKED, bias),
           [(2, 2, 3, 4), (2, 2, 3, 4), (2, 2, 3, 4), (1, 2, 3, 3)], (AT.BiasedAttention,), twice=False, kind="other"),
    OpSpec("prefix_attention_bias", _prefix_attention_bias, _torch_prefix_attention_bias,
           [(3, 4, 2, 4), (3, 2, 2, 4), (3, 2, 2, 4), (3, 4, 2, 5)], (AT.BiasedAttention, M.Concatenate), twice=False,
           kind="other"),
    OpSpec("matmul_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (2, 4, 3)], (MM.MatMul,), kind="other"),
    # ---- nn
    OpSpec("softmax", lambda a: F.softmax(a, axis=-1), lambda a: a.softmax(dim=-1), [(3, 5)], (NN.Softmax,),
           kind="other"),
    OpSpec("log_softmax", lambda a: F.log_softmax(a, axis=0), lambda a: a.log_softmax(dim=0), [(3, 5)],
           (NN.LogSoftmax,), kind="other"),
    OpSpec("cross_entropy", lambda a: F.cross_entropy(a, _T),
           lambda a: __import__("torch").nn.functional.cross_entropy(a.permute(0, 2, 1), _t(_T)), [(2, 3, 5)],
           (NN.CrossEntropy,), twice=False, kind="other"),
    OpSpec("cross_entropy_sum", lambda a: F.cross_entropy(a, _T, reduction="sum"),
           lambda a: __import__("torch").nn.functional.cross_entropy(a.permute(0, 2, 1), _t(_T), reduction="sum"),
           [(2, 3, 5)], (NN.CrossEntropy,), twice=False, kind="other"),
    OpSpec("cross_entropy_none", lambda a: F.cross_entropy(a, _T, reduction="none"),
           lambda a: __import__("torch").nn.functional.cross_entropy(a.permute(0, 2, 1), _t(_T), reduction="none"),
           [(2, 3, 5)], (NN.CrossEntropy,), twice=False, kind="other"),
    OpSpec("embedding", lambda w: F.embedding(w, _IDS),
           lambda w: __import__("torch").nn.functional.embedding(_t(_IDS), w), [(5, 4)],
           (M.GetItem, M.ScatterAdd), kind="other"),
    OpSpec("layer_norm", lambda x, w, b: F.layer_norm(x, w, b),
           lambda x, w, b: __import__("torch").nn.functional.layer_norm(x, (x.shape[-1],), w, b),
           [(2, 3, 6), (6,), (6,)], (NN.LayerNorm,), twice=False, kind="other"),
    OpSpec("layer_norm_no_affine", lambda x: F.layer_norm(x),
           lambda x: __import__("torch").nn.functional.layer_norm(x, (x.shape[-1],)), [(4, 6)], (NN.LayerNorm,),
           twice=False, kind="other"),
    OpSpec("rms_norm", lambda x, w: F.rms_norm(x, w),
           lambda x, w: __import__("torch").nn.functional.rms_norm(x, (x.shape[-1],), w, eps=1e-6),
           [(2, 3, 6), (6,)], (NN.RMSNorm,), twice=False, kind="other"),
    OpSpec("dropout_p0", lambda a: F.dropout(a, 0.0), lambda a: __import__("torch").nn.functional.dropout(a, 0.0),
           [(3, 4)], (), kind="other"),
]

# Dropout draws random numbers, so it cannot share a torch parity draw; it is checked by
# gradcheck (fixed seed, same mask on every call) and by its own statistical tests.
DROPOUT = OpSpec("dropout", lambda a: (tg.manual_seed(0), F.dropout(a, 0.3))[1], None, [(20, 10)], (NN.Dropout,),
                 kind="other")

PACKED_ATTENTION_DROPOUT = OpSpec(
    "packed_attention_dropout",
    lambda qkv: (tg.manual_seed(0), F.packed_attention(qkv, 2, _causal(3), dropout_p=0.25))[1],
    None, [(1, 3, 3 * 2 * 4)], (AT.PackedAttention,), twice=False, kind="other")

BIASED_ATTENTION_DROPOUT = OpSpec(
    "biased_attention_dropout",
    lambda q, k, v, bias: (tg.manual_seed(0), F.attention(q, k, v, _causal(3), dropout_p=0.25, bias=bias))[1],
    None, [(1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 3)], (AT.BiasedAttention,), twice=False, kind="other")

ATTENTION_DROPOUT = OpSpec("attention_dropout",
                           lambda q, k, v: (tg.manual_seed(0), F.attention(q, k, v, _causal(3), dropout_p=0.25))[1],
                           None, [(1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4)], (AT.Attention,), twice=False, kind="other")

# Not differentiable or tested elsewhere: ToDevice (tests/test_cuda.py).
UNCOVERED_BY_DESIGN = {"ToDevice"}

BY_NAME = {s.name: s for s in SPECS + [DROPOUT, ATTENTION_DROPOUT, PACKED_ATTENTION_DROPOUT,
                                       BIASED_ATTENTION_DROPOUT]}


def make_inputs(spec: OpSpec, seed: int = 0, dtype=np.float64, shapes=None) -> list:
    """Fresh numpy inputs for a spec (the same seed gives the same values)."""
    rng = np.random.default_rng(seed)
    shapes = shapes or spec.shapes
    domains = spec.extra.get("domains", (spec.domain,) * len(shapes))
    return [draw(d, s, rng, dtype) for d, s in zip(domains, shapes)]
