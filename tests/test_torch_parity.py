"""Torch parity, in the style of tinygrad's `helper_test_op`: every op in the registry, a composite
MLP and attention block, gradient accumulation, and second derivatives, each checked against
PyTorch (CPU) on the same inputs in float32 and float64.

For one op, `helper_test_op` feeds the same numpy draw to our op and to torch's, compares the
forward values, dtype and shape, then backpropagates the SAME random upstream gradient (not ones,
which would hide transposed or mis-scaled rules) through both and compares every input gradient.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tinygrad_reason as tg  # noqa: E402
from tinygrad_reason import Tensor, functional as F  # noqa: E402
from op_registry import SPECS, make_inputs  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL64 = dict(rtol=1e-10, atol=1e-10)


def _tol(dtype, tol32=1e-5):
    return TOL64 if np.dtype(dtype) == np.float64 else dict(rtol=tol32, atol=tol32)


def _np_dtype(t) -> np.dtype:
    """torch dtype -> numpy dtype (via an empty tensor, so every dtype maps)."""
    return torch.empty(0, dtype=t.dtype).numpy().dtype


def _close(ours: Tensor, theirs, what: str, tol: dict) -> None:
    """Same shape, same dtype (torch's mapped to numpy), same values."""
    assert isinstance(ours, Tensor), f"{what}: expected a Tensor, got {type(ours).__name__}"
    assert ours.shape == tuple(theirs.shape), f"{what}: shape {ours.shape} != torch {tuple(theirs.shape)}"
    assert ours.dtype == _np_dtype(theirs), f"{what}: dtype {ours.dtype} != torch {theirs.dtype}"
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), err_msg=what, **tol)


def _upstream(shape, dtype, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def helper_test_op(spec, dtype, seed: int = 0) -> None:
    dtype = np.dtype(dtype)
    arrays = make_inputs(spec, seed, dtype)
    diff = spec.grad_inputs if spec.grad_inputs is not None else tuple(range(len(arrays)))
    ours_in = [Tensor(a.copy(), requires_grad=i in diff) for i, a in enumerate(arrays)]
    torch_in = [torch.tensor(a, requires_grad=i in diff) for i, a in enumerate(arrays)]
    tol = _tol(dtype, spec.tol32)

    out = spec.ours(*ours_in)
    ref = spec.torch(*torch_in)
    _close(out, ref, f"{spec.name} forward ({dtype})", tol)

    g = _upstream(out.shape, out.dtype)
    out.backward(g)
    ref.backward(torch.from_numpy(g.copy()))
    for i in diff:
        assert ours_in[i].grad is not None, f"{spec.name}: input {i} got no gradient"
        assert torch_in[i].grad is not None, f"{spec.name}: torch gave input {i} no gradient"
        _close(ours_in[i].grad, torch_in[i].grad, f"{spec.name} grad of input {i} ({dtype})", tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_op_parity(spec, dtype):
    helper_test_op(spec, dtype)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_op_parity_second_seed_float64(spec):
    # a second draw, so a rule that only holds for one sample of values cannot slip through
    helper_test_op(spec, np.float64, seed=3)


def test_upstream_gradient_is_not_trivial():
    # the parity helper's point: a random upstream gradient, not ones, and not symmetric
    g = _upstream((3, 4), np.float64)
    assert np.unique(g).size == g.size and not np.allclose(g, 1.0)


def test_parity_helper_catches_a_wrong_rule():
    # the helper must be able to fail: a tanh whose backward uses 1 - y instead of 1 - y^2
    class WrongTanh(tg.Function):
        def forward(self, x):
            return np.tanh(x)

        def backward(self, g):
            return g * (1.0 - self.output)

    class Spec:
        name, grad_inputs, tol32, shapes, domain, extra = "wrong_tanh", None, 1e-5, [(3, 4), (4, 5)], "real", {}
        ours = staticmethod(lambda a, b: (a @ b).tanh())
        torch = staticmethod(lambda a, b: (a @ b).tanh())

    helper_test_op(Spec, np.float64)                   # the right rule passes
    Spec.ours = staticmethod(lambda a, b: WrongTanh.apply(a @ b))
    with pytest.raises(AssertionError, match="grad of input"):
        helper_test_op(Spec, np.float64)               # the wrong one fails on the gradient
    Spec.ours = staticmethod(lambda a, b: (a @ b).tanh().astype(np.float32))
    with pytest.raises(AssertionError, match="dtype"):
        helper_test_op(Spec, np.float64)               # a dtype mismatch fails on the forward


# ---------------------------------------------------------------- composites
def _params(rng, shapes, dtype):
    return {k: (rng.standard_normal(s) * (1.0 / math.sqrt(s[0]) if len(s) == 2 else 0.5) +
                (1.0 if k.startswith("ln_w") else 0.0)).astype(dtype) for k, s in shapes.items()}


def _both(params):
    ours = {k: Tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    return ours, theirs


def _compare_params(ours, theirs, dtype, what, tol32=1e-4):
    tol = _tol(dtype, tol32)
    for k in ours:
        assert ours[k].grad is not None, f"{what}: parameter {k} got no gradient"
        _close(ours[k].grad, theirs[k].grad, f"{what}: grad of {k} ({np.dtype(dtype)})", tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_mlp_layernorm_gelu_cross_entropy(dtype):
    rng = np.random.default_rng(0)
    B, D, H, C = 6, 8, 16, 5
    params = _params(rng, {"w1": (D, H), "b1": (H,), "ln_w": (H,), "ln_b": (H,), "w2": (H, C), "b2": (C,)}, dtype)
    x = rng.standard_normal((B, D)).astype(dtype)
    y = np.array([0, 4, 2, -100, 1, 3])   # one ignored target
    o, t = _both(params)
    TF = torch.nn.functional

    h = F.gelu(F.layer_norm(Tensor(x) @ o["w1"] + o["b1"], o["ln_w"], o["ln_b"]))
    loss = F.cross_entropy(h @ o["w2"] + o["b2"], y)
    th = TF.gelu(TF.layer_norm(torch.from_numpy(x) @ t["w1"] + t["b1"], (H,), t["ln_w"], t["ln_b"]))
    tloss = TF.cross_entropy(th @ t["w2"] + t["b2"], torch.from_numpy(y))
    _close(loss, tloss, "mlp loss", _tol(dtype, 1e-5))
    loss.backward()
    tloss.backward()
    _compare_params(o, t, dtype, "mlp")


def _attention(x, p, mask, softmax, masked_fill, lib_transpose):
    d = p["wq"].shape[1]
    q, k, v = x @ p["wq"], x @ p["wk"], x @ p["wv"]
    scores = (q @ lib_transpose(k)) * (1.0 / math.sqrt(d))
    att = softmax(masked_fill(scores, mask, float("-inf")))
    return (att @ v) @ p["wo"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_causal_attention_block(dtype):
    rng = np.random.default_rng(1)
    B, T, D, Dh = 2, 5, 8, 4
    params = _params(rng, {"wq": (D, Dh), "wk": (D, Dh), "wv": (D, Dh), "wo": (Dh, D)}, dtype)
    x = rng.standard_normal((B, T, D)).astype(dtype)
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    o, t = _both(params)
    xo, xt = Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)
    out = _attention(xo, o, mask, lambda s: F.softmax(s, axis=-1), lambda s, m, v: s.masked_fill(m, v),
                     lambda k: k.transpose(-1, -2))
    ref = _attention(xt, t, torch.from_numpy(mask), lambda s: s.softmax(dim=-1),
                     lambda s, m, v: s.masked_fill(m, v), lambda k: k.transpose(-1, -2))
    _close(out, ref, "attention forward", _tol(dtype, 1e-5))
    # the first position attends only to itself: its output depends on its own row alone
    assert np.isfinite(out.numpy()).all()
    g = _upstream(out.shape, dtype, seed=5)
    out.backward(g)
    ref.backward(torch.from_numpy(g.copy()))
    _compare_params(o, t, dtype, "attention")
    _close(xo.grad, xt.grad, "attention grad of x", _tol(dtype, 1e-4))
    # causality: position 0's output has no gradient path from later positions
    xo2 = Tensor(x.copy(), requires_grad=True)
    first = _attention(xo2, {k: Tensor(v) for k, v in params.items()}, mask,
                       lambda s: F.softmax(s, axis=-1), lambda s, m, v: s.masked_fill(m, v),
                       lambda k: k.transpose(-1, -2))[:, 0]
    first.sum().backward()
    assert np.all(xo2.grad.numpy()[:, 1:] == 0), "position 0 must not depend on later positions"
    assert np.any(xo2.grad.numpy()[:, 0] != 0)


# ---------------------------------------------------------------- linear's two GEMM layouts
@pytest.mark.parametrize("rows", [1, 16, 64, 65, 300])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_linear_both_gemm_layouts(rows, dtype):
    """Linear computes few rows (decoding) as W x^T and many as x W^T (ops/matmul.py SKINNY_ROWS):
    both sides of the switch equal torch, values and gradients."""
    from tinygrad_reason.fast.packing import SKINNY_ROWS
    assert 16 <= SKINNY_ROWS < 300
    rng = np.random.default_rng(rows)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(rows, 24), (40, 24), (40,)])
    g = _upstream((rows, 40), dtype)
    ours = [Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    out, ref = F.linear(*ours), torch.nn.functional.linear(*theirs)
    _close(out, ref, f"linear rows={rows}", _tol(dtype))
    out.backward(Tensor(g))
    ref.backward(torch.from_numpy(g))
    for name, a, t in zip(("x", "weight", "bias"), ours, theirs):
        _close(a.grad, t.grad, f"linear rows={rows} d{name}", _tol(dtype))


# ---------------------------------------------------------------- accumulation
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_backward_twice_accumulates(dtype):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)
    g1, g2 = _upstream((3, 2), dtype, 1), _upstream((3, 2), dtype, 2)
    oa, ob = Tensor(a.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)

    out = (oa @ ob).tanh()
    ref = (ta @ tb).tanh()
    out.backward(g1, retain_graph=True)
    ref.backward(torch.from_numpy(g1.copy()), retain_graph=True)
    first = oa.grad.numpy().copy()
    out.backward(g2)                              # the same graph a second time
    ref.backward(torch.from_numpy(g2.copy()))
    tol = _tol(dtype)
    _close(oa.grad, ta.grad, "accumulated grad of a", tol)
    _close(ob.grad, tb.grad, "accumulated grad of b", tol)
    assert not np.allclose(oa.grad.numpy(), first), "the second backward must add to .grad"

    # a fresh graph (second forward) accumulates too
    (oa * ob.sum()).sum().backward()
    (ta * tb.sum()).sum().backward()
    _close(oa.grad, ta.grad, "grad of a after a second graph", tol)
    _close(ob.grad, tb.grad, "grad of b after a second graph", tol)

    # the freed graph refuses a third walk (torch raises too)
    with pytest.raises(RuntimeError):
        out.backward(g1)
    with pytest.raises(RuntimeError):
        ref.backward(torch.from_numpy(g1.copy()))


def test_shared_input_and_retain_grad_accumulate():
    x = np.array([[0.3, -1.2, 2.0]])
    ox, tx = Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)
    oh, th = (ox * ox).retain_grad(), tx * tx
    th.retain_grad()
    (oh.exp() + oh * ox).sum().backward()
    (th.exp() + th * tx).sum().backward()
    _close(ox.grad, tx.grad, "x used three times", TOL64)
    _close(oh.grad, th.grad, "retained intermediate grad", TOL64)


# ---------------------------------------------------------------- second derivatives
TWICE = {
    "tanh": ([(3, 4)], "real", lambda x: x.tanh(), lambda x: x.tanh()),
    "sigmoid": ([(3, 4)], "real", lambda x: x.sigmoid(), lambda x: x.sigmoid()),
    "softmax": ([(3, 5)], "real", lambda x: F.softmax(x, axis=-1), lambda x: x.softmax(-1)),
    "log_softmax": ([(3, 5)], "real", lambda x: F.log_softmax(x, axis=0), lambda x: x.log_softmax(0)),
    "gelu": ([(3, 4)], "real", lambda x: F.gelu(x), lambda x: torch.nn.functional.gelu(x)),
    "gelu_tanh": ([(3, 4)], "real", lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    "silu": ([(3, 4)], "real", lambda x: F.silu(x), lambda x: torch.nn.functional.silu(x)),
    "mul": ([(3, 4), (4,)], "real", lambda a, b: a * b * a, lambda a, b: a * b * a),
    "div": ([(3, 4), (4,)], "positive", lambda a, b: a / b, lambda a, b: a / b),
    "pow_tensor": ([(3, 4), (4,)], "positive", lambda a, b: a ** b, lambda a, b: a ** b),
    "pow_scalar": ([(3, 4)], "positive", lambda a: a ** 2.5, lambda a: a ** 2.5),
    "matmul": ([(3, 4), (4, 2)], "real", lambda a, b: (a @ b) * (a @ b), lambda a, b: (a @ b) * (a @ b)),
    "logsumexp": ([(3, 5)], "real", lambda x: x.logsumexp(axis=-1), lambda x: x.logsumexp(-1)),
    "exp_log": ([(3, 4)], "positive", lambda x: x.log() * x.exp(), lambda x: x.log() * x.exp()),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", sorted(TWICE))
def test_second_derivative_parity(name, dtype):
    shapes, domain, ours_fn, torch_fn = TWICE[name]
    rng = np.random.default_rng(4)
    from op_registry import draw
    arrays = [draw(domain, s, rng, dtype) for s in shapes]
    ours_in = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    torch_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = ours_fn(*ours_in), torch_fn(*torch_in)
    g = _upstream(out.shape, dtype, 6)
    tol = _tol(dtype, 1e-4)

    first = tg.grad(out, ours_in, grad_outputs=g, create_graph=True)
    tfirst = torch.autograd.grad(ref, torch_in, grad_outputs=torch.from_numpy(g.copy()), create_graph=True)
    for i, (f, tf) in enumerate(zip(first, tfirst)):
        _close(f, tf, f"{name}: first derivative wrt input {i}", tol)
        assert f.requires_grad, f"{name}: create_graph=True must give a differentiable gradient"

    # contract the first derivatives with random vectors and differentiate again (Hessian-vector products)
    vs = [_upstream(a.shape, dtype, 10 + i) for i, a in enumerate(arrays)]
    s = sum((f * Tensor(v)).sum() for f, v in zip(first, vs))
    ts = sum((tf * torch.from_numpy(v.copy())).sum() for tf, v in zip(tfirst, vs))
    second = tg.grad(s, ours_in, allow_unused=True)
    tsecond = torch.autograd.grad(ts, torch_in, allow_unused=True)
    for i, (h, th) in enumerate(zip(second, tsecond)):
        # an input the first derivative does not depend on is None (torch) or zeros: both mean 0
        if th is None:
            th = torch.zeros(arrays[i].shape, dtype=torch_in[i].dtype)
        if h is None:
            h = Tensor(np.zeros(arrays[i].shape, dtype=arrays[i].dtype))
        _close(h, th, f"{name}: second derivative wrt input {i}", tol)
        assert np.any(th.numpy() != 0), f"{name}: a zero Hessian-vector product tests nothing"


def test_backward_create_graph_gives_a_differentiable_grad():
    # y = x^3: x.grad = 3x^2 (a graph), d/dx sum(x.grad * v) = 6 x v
    x = np.array([0.5, -1.5, 2.0])
    v = np.array([1.0, -2.0, 0.5])
    ox = Tensor(x.copy(), requires_grad=True)
    (ox * ox * ox).sum().backward(create_graph=True)
    gx = ox.grad
    assert gx.requires_grad
    (h,) = tg.grad((gx * Tensor(v)).sum(), [ox])
    tx = torch.tensor(x, requires_grad=True)
    (tgx,) = torch.autograd.grad((tx * tx * tx).sum(), tx, create_graph=True)
    (th,) = torch.autograd.grad((tgx * torch.from_numpy(v)).sum(), tx)
    _close(gx, tgx, "first derivative via backward(create_graph=True)", TOL64)
    _close(h, th, "second derivative via backward(create_graph=True)", TOL64)


def test_no_warnings_on_ordinary_inputs():
    # the parity runs above must not depend on suppressed RuntimeWarnings for ordinary values
    spec = next(s for s in SPECS if s.name == "log_softmax")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        helper_test_op(spec, np.float32)
