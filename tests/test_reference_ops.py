"""The reference ops (ops/reference.py: each fused op as its formula in Tensor ops) against the fused
ops, against torch, and against finite differences; the reference AdamW update against the fused
kernel; and the switch (tg.use_reference_ops / tg.reference_ops) that runs a whole model on them.

The fused and reference paths compute the same function with different roundings, so float64
values and gradients agree to ~1e-10, and training a model for a few steps gives the same loss
curve to ~1e-9 in float64 (~1e-4 in float32).
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tinygrad_reason as tg
from tinygrad_reason import Tensor, functional as F, optim
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.ops import attention as fused_attention, matmul as fused_matmul, nn as fused_nn
from tinygrad_reason.ops import reference as R
from tinygrad_reason.optim import AdamW, adamw_reference_update, decay_groups
from tinygrad_reason.tensor import topological_order

torch = pytest.importorskip("torch")
TF = torch.nn.functional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUSED_OPS = {"Linear", "LayerNorm", "RMSNorm", "CrossEntropy", "Attention", "PackedAttention"}

# all-ignored cross-entropy means are 0/0 = nan on the fused path, as in torch
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:divide by zero encountered:RuntimeWarning")


def _settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ================================================================ helpers
def _arrays(shapes, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _value_and_grads(fn, arrays, upstream_seed=1):
    """fn on fresh Tensors: its output and the gradients of sum(out * v), v a fixed random array
    (not ones, which would hide a transposed or mis-scaled gradient)."""
    xs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*xs)
    v = np.random.default_rng(upstream_seed).standard_normal(out.shape).astype(out.dtype)
    grads = tg.grad((out * Tensor(v)).sum(), xs, allow_unused=True)
    return out.numpy(), [None if g is None else g.numpy() for g in grads]


def _same(fused, reference, arrays, tol=1e-10):
    """The reference op equals the fused one in value and in every input's gradient."""
    out_f, grads_f = _value_and_grads(fused, arrays)
    out_r, grads_r = _value_and_grads(reference, arrays)
    assert out_r.shape == out_f.shape and out_r.dtype == out_f.dtype
    np.testing.assert_allclose(out_r, out_f, rtol=tol, atol=tol, err_msg="forward")
    for i, (gf, gr) in enumerate(zip(grads_f, grads_r)):
        assert (gf is None) == (gr is None), f"input {i}: only one path gives a gradient"
        if gf is not None:
            np.testing.assert_allclose(gr, gf, rtol=tol, atol=tol, err_msg=f"gradient of input {i}")
    return out_r, grads_r


def _mask(kind, b, t, s, rng):
    """(B or 1, 1, T, S) boolean, True = may not attend; queries sit at positions s - t .. s - 1."""
    causal = (np.arange(s)[None, :] > (s - t) + np.arange(t)[:, None])[None, None]
    if kind == "none":
        return None
    if kind == "causal":
        return causal
    keep = rng.random((b, s)) > 0.3
    if kind == "dead_row":
        keep[0] = False                           # row 0 may see no key at all: uniform weights
    padding = np.repeat(~keep[:, None, None, :], t, axis=2)
    return padding if kind == "padding" else causal | padding


MASKS = ["none", "causal", "padding", "causal_padding", "dead_row"]


# ================================================================ each reference op against its fused op
@_settings(25)
@given(lead=st.lists(st.integers(1, 3), max_size=2), n_in=st.integers(1, 5), n_out=st.integers(1, 4),
       has_bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_linear_matches_fused(lead, n_in, n_out, has_bias, seed):
    shapes = [tuple(lead) + (n_in,), (n_out, n_in)] + ([(n_out,)] if has_bias else [])
    _same(fused_matmul.linear, R.linear, _arrays(shapes, seed))


@_settings(25)
@given(lead=st.lists(st.integers(1, 3), max_size=2), dim=st.integers(1, 6), has_w=st.booleans(),
       has_b=st.booleans(), eps=st.sampled_from([1e-5, 1e-2]), seed=st.integers(0, 2 ** 16))
def test_layer_norm_matches_fused(lead, dim, has_w, has_b, eps, seed):
    shapes = [tuple(lead) + (dim,)] + [(dim,)] * (has_w + has_b)

    def call(op):
        return lambda x, *ps: op(x, ps[0] if has_w else None, ps[-1] if has_b else None, eps=eps)

    _same(call(fused_nn.layer_norm), call(R.layer_norm), _arrays(shapes, seed))


@_settings(25)
@given(lead=st.lists(st.integers(1, 3), max_size=2), dim=st.integers(1, 6), has_w=st.booleans(),
       eps=st.sampled_from([1e-6, 1e-2]), seed=st.integers(0, 2 ** 16))
def test_rms_norm_matches_fused(lead, dim, has_w, eps, seed):
    shapes = [tuple(lead) + (dim,)] + [(dim,)] * has_w

    def call(op):
        return lambda x, *ps: op(x, ps[0] if ps else None, eps=eps)

    _same(call(fused_nn.rms_norm), call(R.rms_norm), _arrays(shapes, seed))


@_settings(40)
@given(lead=st.lists(st.integers(1, 4), min_size=1, max_size=2), n_cls=st.integers(1, 5),
       reduction=st.sampled_from(["mean", "sum", "none"]), ignore_index=st.sampled_from([-100, -1, 0]),
       ignored=st.sampled_from(["some", "none", "all"]), seed=st.integers(0, 2 ** 16))
def test_cross_entropy_matches_fused(lead, n_cls, reduction, ignore_index, ignored, seed):
    rng = np.random.default_rng(seed)
    lead = tuple(lead)
    targets = rng.integers(0, n_cls, size=lead)
    drop = {"some": rng.random(lead) < 0.3, "none": np.zeros(lead, bool), "all": np.ones(lead, bool)}[ignored]
    targets = np.where(drop, ignore_index, targets)
    (logits,) = _arrays([lead + (n_cls,)], seed)
    call = lambda op: lambda z: op(z, targets, ignore_index=ignore_index, reduction=reduction)  # noqa: E731
    if ignored == "all" and reduction == "mean":            # nan, on both paths; the gradient is 0
        out_f, (g_f,) = _value_and_grads(call(fused_nn.cross_entropy), [logits])
        out_r, (g_r,) = _value_and_grads(call(R.cross_entropy), [logits])
        assert np.isnan(out_f) and np.isnan(out_r)
        np.testing.assert_array_equal(g_f, 0.0)
        np.testing.assert_array_equal(g_r, 0.0)
        return
    _, (g,) = _same(call(fused_nn.cross_entropy), call(R.cross_entropy), [logits])
    np.testing.assert_array_equal(g[targets == ignore_index], 0.0)        # ignored rows: exactly no gradient


@pytest.mark.parametrize("logits_shape, targets, kw, error", [
    ((2, 3), np.array([0, 3]), {}, IndexError),                         # a target past the classes
    ((2, 3), np.array([-2, 1]), {}, IndexError),                        # a negative one that is not ignored
    ((2, 3), np.array([0, 1, 2]), {}, ValueError),                      # one target too many
    ((2, 3), np.array([0.0, 1.0]), {}, TypeError),                      # float targets
    ((2, 3), np.array([0, 1]), {"reduction": "max"}, ValueError),
    ((), np.array(0), {}, ValueError),                                   # 0-d logits have no class axis
])
def test_cross_entropy_errors_match_fused(logits_shape, targets, kw, error):
    logits = Tensor(np.zeros(logits_shape))
    with pytest.raises(error) as fused:
        fused_nn.cross_entropy(logits, targets, **kw)
    with pytest.raises(error) as ours:
        R.cross_entropy(logits, targets, **kw)
    assert str(ours.value) == str(fused.value)


def test_shape_errors_match_fused():
    x, w = Tensor(np.zeros((2, 3))), Tensor(np.zeros((4, 5)))
    q, k = Tensor(np.zeros((1, 2, 3, 4))), Tensor(np.zeros((1, 2, 5, 4)))
    for fused, ours in [
        (lambda: fused_matmul.linear(x, w), lambda: R.linear(x, w)),
        (lambda: fused_nn.layer_norm(x, Tensor(np.ones(2))), lambda: R.layer_norm(x, Tensor(np.ones(2)))),
        (lambda: fused_nn.rms_norm(x, Tensor(np.ones(4))), lambda: R.rms_norm(x, Tensor(np.ones(4)))),
        (lambda: fused_attention.attention(q, k, k, np.zeros((1, 1, 3, 3), bool)),
         lambda: R.attention(q, k, k, np.zeros((1, 1, 3, 3), bool))),
        (lambda: fused_attention.attention(q, k, k, dropout_p=1.0), lambda: R.attention(q, k, k, dropout_p=1.0)),
        (lambda: fused_attention.packed_attention(x, 2), lambda: R.packed_attention(x, 2)),
    ]:
        with pytest.raises(ValueError) as expected:
            fused()
        with pytest.raises(ValueError, match=re.escape(str(expected.value))):
            ours()


@_settings(40)
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), rep=st.integers(1, 3), t=st.integers(1, 4),
       start=st.integers(0, 2), d=st.integers(1, 4), mask=st.sampled_from(MASKS), mask_rows=st.sampled_from(["B", "1"]),
       scale=st.sampled_from([None, 0.7]), seed=st.integers(0, 2 ** 16))
def test_attention_matches_fused(b, hkv, rep, t, start, d, mask, mask_rows, scale, seed):
    s = start + t
    masked = _mask(mask, b, t, s, np.random.default_rng(seed))
    if masked is not None and mask_rows == "1":
        masked = masked[:1]                                     # one mask row broadcast over the batch
    arrays = _arrays([(b, hkv * rep, t, d), (b, hkv, s, d), (b, hkv, s, d)], seed)
    out, (dq, _, _) = _same(lambda *z: fused_attention.attention(*z, masked, scale),
                            lambda *z: R.attention(*z, masked, scale), arrays)
    if masked is not None:                                      # a query that sees no key: uniform, no gradient
        dead = np.broadcast_to(masked, (b, 1, t, s)).all(axis=-1)[:, 0]         # (B, T)
        for bi, ti in zip(*np.nonzero(dead)):
            np.testing.assert_allclose(out[bi, :, ti], np.repeat(arrays[2][bi], rep, axis=0).mean(axis=1), atol=1e-12)
            np.testing.assert_array_equal(dq[bi, :, ti], 0.0)


def test_attention_matches_fused_over_score_blocks():
    """256 queries or more under a causal mask: the fused op computes only the live score blocks."""
    b, h, hkv, t, d = 2, 4, 2, 260, 3
    rng = np.random.default_rng(0)
    masked = _mask("causal_padding", b, t, t, rng)
    masked[1, 0, :, :5] = True                                   # row 1's first queries see nothing
    _same(lambda *z: fused_attention.attention(*z, masked), lambda *z: R.attention(*z, masked),
          _arrays([(b, h, t, d), (b, hkv, t, d), (b, hkv, t, d)], 1))


@_settings(25)
@given(b=st.integers(1, 2), h=st.integers(1, 3), t=st.integers(1, 5), d=st.integers(1, 3),
       mask=st.sampled_from(MASKS), scale=st.sampled_from([None, 1.0]), seed=st.integers(0, 2 ** 16))
def test_packed_attention_matches_fused(b, h, t, d, mask, scale, seed):
    masked = _mask(mask, b, t, t, np.random.default_rng(seed))
    _same(lambda z: fused_attention.packed_attention(z, h, masked, scale),
          lambda z: R.packed_attention(z, h, masked, scale), _arrays([(b, t, 3 * h * d)], seed))


def _prefix_case(t, seed=0):
    """3 rows over 2 shared prefixes of 4 positions; each row adds t keys of its own (GQA: 4 over 2)."""
    b, h, hkv, p, d = 3, 4, 2, 4, 3
    pk, pv = _arrays([(2, hkv, p, d), (2, hkv, p, d)], seed + 10)
    group = np.array([1, 0, 1])
    s = p + t
    masked = (np.arange(s)[None, :] > p + np.arange(t)[:, None])[None, None].repeat(b, axis=0)
    masked[2, 0, :, :2] = True                                   # row 2 may not see its prefix's first keys
    return (pk, pv, group), masked, _arrays([(b, h, t, d), (b, hkv, t, d), (b, hkv, t, d)], seed)


def test_prefix_attention_matches_fused():
    prefix, masked, arrays = _prefix_case(t=3)
    _same(lambda *z: fused_attention.prefix_attention(*z, prefix, masked),
          lambda *z: R.prefix_attention(*z, prefix, masked), arrays)


def test_prefix_attention_matches_the_fused_decode_step():
    """One query per row, no graph: the fused op reads each prefix once for all of its rows."""
    prefix, masked, arrays = _prefix_case(t=1)
    with tg.no_grad():
        fused = fused_attention.prefix_attention(*map(Tensor, arrays), prefix, masked).numpy()
        ours = R.prefix_attention(*map(Tensor, arrays), prefix, masked).numpy()
    np.testing.assert_allclose(ours, fused, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_attention_dropout_drops_what_the_fused_op_drops(dtype):
    """One seed, the same weights dropped on both paths (the draws are taken in the same order)."""
    b, h, hkv, t, d, p = 2, 4, 2, 5, 3, 0.3
    masked = _mask("causal", b, t, t, None)
    arrays = _arrays([(b, h, t, d), (b, hkv, t, d), (b, hkv, t, d)], 0, dtype)
    qkv = _arrays([(b, t, 3 * h * d)], 1, dtype)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    seeded = lambda op: lambda *z: (tg.manual_seed(3), op(*z))[1]  # noqa: E731
    out, _ = _same(seeded(lambda *z: fused_attention.attention(*z, masked, dropout_p=p)),
                   seeded(lambda *z: R.attention(*z, masked, dropout_p=p)), arrays, tol)
    _same(seeded(lambda z: fused_attention.packed_attention(z, h, masked, dropout_p=p)),
          seeded(lambda z: R.packed_attention(z, h, masked, dropout_p=p)), qkv, tol)
    without = R.attention(*map(Tensor, arrays), masked).numpy()
    assert not np.allclose(out, without)                          # dropout did drop something


# ================================================================ gradcheck and torch parity of the reference ops
_CAUSAL5 = np.triu(np.ones((5, 5), bool), 1)[None, None]
_PAD_DEAD = np.array([[False, False, True], [True, True, True]])[:, None, None, :].repeat(3, axis=2)
_TARGETS = np.array([[0, 4, -100], [2, 2, 1]])
_ALL_IGNORED = np.full((2, 3), -100)


def _dropped(op):
    return lambda *z: (tg.manual_seed(0), op(*z))[1]          # the same dropout on every call


# name: (reference op on Tensors, inputs' shapes)
GRADCHECK = {
    "linear": (lambda x, w, b: R.linear(x, w, b), [(2, 3, 4), (5, 4), (5,)]),
    "linear_no_bias": (lambda x, w: R.linear(x, w), [(3, 4), (2, 4)]),
    "layer_norm": (lambda x, w, b: R.layer_norm(x, w, b), [(3, 5), (5,), (5,)]),
    "layer_norm_no_affine": (lambda x: R.layer_norm(x), [(2, 2, 4)]),
    "rms_norm": (lambda x, w: R.rms_norm(x, w), [(3, 5), (5,)]),
    "cross_entropy_mean": (lambda z: R.cross_entropy(z, _TARGETS), [(2, 3, 5)]),
    "cross_entropy_sum": (lambda z: R.cross_entropy(z, _TARGETS, reduction="sum"), [(2, 3, 5)]),
    "cross_entropy_none": (lambda z: R.cross_entropy(z, _TARGETS, reduction="none"), [(2, 3, 5)]),
    "cross_entropy_all_ignored_sum": (lambda z: R.cross_entropy(z, _ALL_IGNORED, reduction="sum"), [(2, 3, 5)]),
    "attention_causal_gqa": (lambda q, k, v: R.attention(q, k, v, _CAUSAL5), [(2, 4, 5, 3), (2, 2, 5, 3), (2, 2, 5, 3)]),
    "attention_padding_dead_row": (lambda q, k, v: R.attention(q, k, v, _PAD_DEAD, 0.5),
                                   [(2, 2, 3, 4), (2, 1, 3, 4), (2, 1, 3, 4)]),
    "attention_dropout": (_dropped(lambda q, k, v: R.attention(q, k, v, _CAUSAL5, dropout_p=0.25)),
                          [(1, 2, 5, 3), (1, 2, 5, 3), (1, 2, 5, 3)]),
    "packed_attention": (lambda qkv: R.packed_attention(qkv, 2, _CAUSAL5), [(2, 5, 3 * 2 * 3)]),
    "packed_attention_prescaled": (lambda qkv: R.packed_attention(qkv, 2, _PAD_DEAD, scale=1.0), [(2, 3, 3 * 2 * 2)]),
    "prefix_attention": (lambda q, k, v: R.prefix_attention(q, k, v, *_prefix_case(t=2)[:2]),
                         [(3, 4, 2, 3), (3, 2, 2, 3), (3, 2, 2, 3)]),
}


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck(name):
    fn, shapes = GRADCHECK[name]
    xs = [Tensor(a, requires_grad=True) for a in _arrays(shapes, 0)]
    assert tg.gradcheck(fn, xs)


@pytest.mark.parametrize("name", ["layer_norm", "rms_norm", "cross_entropy_mean", "attention_causal_gqa",
                                  "packed_attention"])
def test_gradgradcheck(name):
    """Unlike the fused ops, the reference ops are Tensor ops all the way down: twice differentiable."""
    fn, shapes = GRADCHECK[name]
    xs = [Tensor(a, requires_grad=True) for a in _arrays(shapes, 0)]
    assert tg.gradgradcheck(fn, xs)


def _torch_attention(q, k, v, masked, scale=None):
    """Written out from the definition: k/v heads repeated per query head, masked_fill, softmax."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(torch.from_numpy(masked), torch.finfo(q.dtype).min)
    return scores.softmax(-1) @ v


def _torch_packed(qkv, h, masked, scale=None):
    b, t, width = qkv.shape
    q, k, v = (x.reshape(b, t, h, width // (3 * h)).transpose(1, 2) for x in qkv.chunk(3, dim=-1))
    return _torch_attention(q, k, v, masked, scale).transpose(1, 2).reshape(b, t, width // 3)


def _torch_prefix(q, k, v):
    (pk, pv, group), masked, _ = _prefix_case(t=2)
    keys = torch.cat([torch.from_numpy(pk[group]).to(k.dtype), k], dim=2)
    values = torch.cat([torch.from_numpy(pv[group]).to(v.dtype), v], dim=2)
    return _torch_attention(q, keys, values, masked)


def _torch_ce(z, targets, reduction="mean"):
    return TF.cross_entropy(z.permute(0, 2, 1), torch.from_numpy(targets), reduction=reduction)


# name in GRADCHECK: the same function in torch
TORCH = {
    "linear": lambda x, w, b: TF.linear(x, w, b),
    "linear_no_bias": lambda x, w: TF.linear(x, w),
    "layer_norm": lambda x, w, b: TF.layer_norm(x, (x.shape[-1],), w, b),
    "layer_norm_no_affine": lambda x: TF.layer_norm(x, (x.shape[-1],)),
    "rms_norm": lambda x, w: TF.rms_norm(x, (x.shape[-1],), w, eps=1e-6),
    "cross_entropy_mean": lambda z: _torch_ce(z, _TARGETS),
    "cross_entropy_sum": lambda z: _torch_ce(z, _TARGETS, "sum"),
    "cross_entropy_none": lambda z: _torch_ce(z, _TARGETS, "none"),
    "cross_entropy_all_ignored_sum": lambda z: _torch_ce(z, _ALL_IGNORED, "sum"),
    "attention_causal_gqa": lambda q, k, v: _torch_attention(q, k, v, _CAUSAL5),
    "attention_padding_dead_row": lambda q, k, v: _torch_attention(q, k, v, _PAD_DEAD, 0.5),
    "packed_attention": lambda qkv: _torch_packed(qkv, 2, _CAUSAL5),
    "packed_attention_prescaled": lambda qkv: _torch_packed(qkv, 2, _PAD_DEAD, 1.0),
    "prefix_attention": _torch_prefix,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(TORCH))
def test_torch_parity(name, dtype):
    ours, shapes = GRADCHECK[name]
    arrays = _arrays(shapes, 0, dtype)
    out, grads = _value_and_grads(ours, arrays)
    xs = [torch.tensor(a, requires_grad=True) for a in arrays]
    expected = TORCH[name](*xs)
    v = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    (expected * torch.from_numpy(v)).sum().backward()
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    assert out.dtype == expected.detach().numpy().dtype
    np.testing.assert_allclose(out, expected.detach().numpy(), err_msg="forward", **tol)
    for i, (g, x) in enumerate(zip(grads, xs)):
        np.testing.assert_allclose(g, x.grad.numpy(), err_msg=f"gradient of input {i}", **tol)


# ================================================================ the AdamW update
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_reference_update_equals_the_fused_kernel(dtype, weight_decay, monkeypatch):
    """Six steps on two parameters (one a non-contiguous view), with random gradients, both ways."""
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((70, 50)).astype(dtype), rng.standard_normal((6, 4)).astype(dtype).T]
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in start] for _ in range(6)]
    calls = []
    monkeypatch.setattr(optim, "adamw_reference_update",
                        lambda *a: (calls.append(1), adamw_reference_update(*a))[1])

    def train(reference: bool):
        params = [Tensor(p.copy(), requires_grad=True) for p in start]
        opt = AdamW(params, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
        with tg.reference_ops(reference):
            for step_grads in grads:
                for p, g in zip(params, step_grads):
                    p.grad = Tensor(g)
                opt.step()
        return params, opt.state

    fused_params, fused_state = train(False)
    assert not calls
    ref_params, ref_state = train(True)
    assert len(calls) == 2 * len(grads)                            # the reference update really ran
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for i, (pf, pr) in enumerate(zip(fused_params, ref_params)):
        assert pr.dtype == dtype
        np.testing.assert_allclose(pr.numpy(), pf.numpy(), rtol=rtol, atol=rtol)
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(ref_state[i][key], fused_state[i][key], rtol=rtol, atol=rtol * 1e-3)
    assert not np.allclose(ref_params[0].numpy(), start[0])


def test_adamw_reference_update_by_hand():
    """One step from zero moments: m_hat = g, v_hat = g^2, so p moves by lr * g / (|g| + eps) after decay."""
    p, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, -1e-3, 2.0])
    m, v = np.zeros(3), np.zeros(3)
    adamw_reference_update(p, g, m, v, 1, 0.1, (0.9, 0.99), 1e-8, 0.5)
    np.testing.assert_allclose(p, np.array([1.0, -2.0, 0.5]) * 0.95 - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-12)
    np.testing.assert_allclose(v, 0.01 * g * g, rtol=1e-12)


# ================================================================ the switch
def _graph_ops(loss) -> set:
    return {t.op for t in topological_order([loss])}


CONFIGS = {
    "gpt": lambda: TransformerConfig.gpt(vocab_size=13, context_length=12, d_model=16, n_layers=2, n_heads=2),
    "llama_gqa": lambda: TransformerConfig.llama(vocab_size=13, context_length=12, d_model=16, n_layers=2,
                                                 n_heads=4, n_kv_heads=2, mlp_hidden=24, qk_norm=True),
}


def _batch(seed=0):
    """Fixed tokens; row 1 is left-padded (its first query sees only padding: a fully masked row)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 13, size=(3, 10))
    targets = np.roll(ids, -1, axis=1)
    pad_mask = np.ones((3, 10), bool)
    pad_mask[1, :3] = False
    targets[1, :3] = -100
    return ids, targets, pad_mask


def _train(name, dtype, reference: bool, steps=5):
    """The loss of each of `steps` AdamW steps, and the ops in the first step's graph."""
    tg.manual_seed(0)
    model = Transformer(CONFIGS[name](), dtype=dtype)
    opt = AdamW(decay_groups(model, 0.1), lr=1e-2, betas=(0.9, 0.95))
    ids, targets, pad_mask = _batch()
    losses, ops = [], None
    with tg.reference_ops(reference):
        for _ in range(steps):
            opt.zero_grad()
            loss = model.loss(ids, targets, pad_mask if name == "llama_gqa" else None)
            ops = _graph_ops(loss) if ops is None else ops
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return np.array(losses), ops


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_model_trains_the_same_on_the_reference_ops(name, dtype, rtol):
    fused, fused_ops = _train(name, dtype, reference=False)
    ours, ours_ops = _train(name, dtype, reference=True)
    assert fused_ops & FUSED_OPS                                   # the default path is fused ...
    assert not ours_ops & FUSED_OPS, ours_ops & FUSED_OPS          # ... and the switch leaves none of them
    assert fused[-1] < fused[0] - 0.05                             # it did learn: the curve is not flat
    np.testing.assert_allclose(ours, fused, rtol=rtol)
    assert not tg.reference_ops_enabled()


def test_the_switch_reaches_data_parallel_shards():
    """data_parallel_backward runs shards on worker threads: the process-wide switch reaches them."""
    tg.manual_seed(0)
    model = Transformer(CONFIGS["gpt"](), dtype=np.float64)
    ids, targets, _ = _batch()
    shard_ops = []

    def loss_fn(x, y):
        loss = model.loss(x, y)
        shard_ops.append(_graph_ops(loss))
        return loss

    grads = {}
    for reference in (False, True):
        model.zero_grad()
        with tg.reference_ops(reference):
            tg.data_parallel_backward(loss_fn, (ids, targets), model.parameters(), threads=2)
        grads[reference] = [p.grad.numpy() for p in model.parameters()]
    assert len(shard_ops) == 4
    assert all(ops & FUSED_OPS for ops in shard_ops[:2]) and not any(ops & FUSED_OPS for ops in shard_ops[2:])
    for gf, gr in zip(grads[False], grads[True]):
        np.testing.assert_allclose(gr, gf, rtol=1e-9, atol=1e-12)


def test_the_switch_is_restored_after_the_block():
    assert not tg.reference_ops_enabled()
    with tg.reference_ops():
        assert tg.reference_ops_enabled()
        with tg.reference_ops(False):                               # nested: the inner setting, then the outer
            assert not tg.reference_ops_enabled()
        assert tg.reference_ops_enabled()
    assert not tg.reference_ops_enabled()
    with pytest.raises(ZeroDivisionError):
        with tg.reference_ops():
            1 / 0
    assert not tg.reference_ops_enabled()
    tg.use_reference_ops(True)
    try:
        assert tg.reference_ops_enabled()
        x, w = Tensor(np.ones((2, 3)), requires_grad=True), Tensor(np.ones((4, 3)), requires_grad=True)
        assert F.linear(x, w).op != "Linear"
    finally:
        tg.use_reference_ops(False)
    assert F.linear(x, w).op == "Linear"


def test_switched_functions_keep_the_fused_signatures():
    import inspect
    for name in ("linear", "layer_norm", "rms_norm", "cross_entropy", "attention", "packed_attention",
                 "prefix_attention"):
        fused = getattr(fused_attention if "attention" in name else fused_matmul if name == "linear" else fused_nn, name)
        assert inspect.signature(getattr(F, name)) == inspect.signature(fused)
        assert inspect.signature(getattr(R, name)) == inspect.signature(fused), name


# ================================================================ the example
def test_train_tiny_gpt_example_runs_on_the_reference_ops(tmp_path):
    """--reference trains the same model on the reference ops: the same printed losses."""
    def run(*extra):
        out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "02_train_tiny_gpt.py"), "--steps", "3",
                              "--batch", "4", "--context", "32", "--sample-chars", "5", *extra],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    fused, ours = run(), run("--reference")
    assert "reference ops" in ours and "reference ops" not in fused
    losses = lambda text: re.findall(r"loss (\d+\.\d+)", text)  # noqa: E731
    assert losses(ours) == losses(fused) and len(losses(fused)) >= 3
