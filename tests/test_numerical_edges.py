"""Numerical edge cases: huge logits, -inf rows, saturation, kinks, ties, overflow, 0/0, and the
float32 erf approximation, each compared with PyTorch (CPU) where torch defines the answer.

numpy RuntimeWarnings (overflow, divide by zero, invalid) are expected on several of these inputs
and ignored module-wide; tests that promise no warning turn them into errors locally.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinygrad_reason import Tensor, functional as F  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DTYPES = [np.float32, np.float64]
dtype_ids = lambda d: np.dtype(d).name  # noqa: E731
TF = torch.nn.functional


def _tol(dtype, tol32=1e-6, tol64=1e-12):
    t = tol64 if np.dtype(dtype) == np.float64 else tol32
    return dict(rtol=t, atol=t)


def _run(ours_fn, torch_fn, *arrays, grad=None, seed=1):
    """Forward and backward of both on the same inputs and the same upstream gradient.

    Returns (our output, torch output, our input grads, torch input grads) as numpy arrays.
    """
    ours_in = [Tensor(np.array(a), requires_grad=True) for a in arrays]
    torch_in = [torch.tensor(np.array(a), requires_grad=True) for a in arrays]
    out, ref = ours_fn(*ours_in), torch_fn(*torch_in)
    assert out.dtype == torch.empty(0, dtype=ref.dtype).numpy().dtype
    assert out.shape == tuple(ref.shape)
    if grad is None:
        grad = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
    grad = np.asarray(grad, dtype=out.dtype)
    out.backward(grad)
    ref.backward(torch.from_numpy(grad.copy()))
    return (out.numpy(), ref.detach().numpy(), [t.grad.numpy() for t in ours_in],
            [t.grad.numpy() for t in torch_in])


def _same(ours, theirs, **tol):
    """Equal to torch, nan where torch has nan and the same infinities (assert_allclose's rules)."""
    np.testing.assert_allclose(ours, theirs, equal_nan=True, **tol)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs))
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))


# ---------------------------------------------------------------- softmax family
HUGE = {
    "around_1e4": [[1e4, 1e4 + 1.0, 1e4 - 2.0, 1e4 + 0.5], [-1e4, -1e4 + 3.0, -1e4 - 1.0, -1e4]],
    "mixed_pm_1e4": [[1e4, -1e4, 0.0, 1e4 - 1.0], [-1e4, -1e4, 1e4, 5.0]],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("case", sorted(HUGE))
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_family_huge_logits(op, case, dtype):
    x = np.array(HUGE[case], dtype=dtype)
    ours_fn = (lambda t: F.softmax(t, axis=-1)) if op == "softmax" else (lambda t: F.log_softmax(t, axis=-1))
    torch_fn = (lambda t: t.softmax(-1)) if op == "softmax" else (lambda t: t.log_softmax(-1))
    out, ref, (g,), (tg_,) = _run(ours_fn, torch_fn, x)
    assert np.isfinite(out).all() and np.isfinite(g).all()
    # log_softmax values reach -2e4: float32 ulp there is 2e-3, so relative tolerance carries it
    _same(out, ref, **_tol(dtype, 1e-6))
    _same(g, tg_, **_tol(dtype, 1e-5))
    if op == "softmax":
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)
    # a naive exp(x) would overflow: the answer must not be the naive one
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    assert not np.isfinite(naive).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_softmax_all_neg_inf_but_one_is_one_hot(dtype):
    x = np.array([[-np.inf, 3.0, -np.inf], [-np.inf, -np.inf, -7.5]], dtype=dtype)
    out, ref, (g,), (tg_,) = _run(lambda t: F.softmax(t, axis=-1), lambda t: t.softmax(-1), x)
    np.testing.assert_array_equal(out, [[0, 1, 0], [0, 0, 1]])
    assert np.isfinite(g).all()
    _same(out, ref)
    _same(g, tg_, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_log_softmax_all_neg_inf_but_one(dtype):
    x = np.array([[-np.inf, 3.0, -np.inf], [2.0, -np.inf, 1.0]], dtype=dtype)
    out, ref, (g,), (tg_,) = _run(lambda t: F.log_softmax(t, axis=-1), lambda t: t.log_softmax(-1), x)
    assert out[0, 1] == 0.0 and np.isneginf(out[0, [0, 2]]).all()
    assert np.isfinite(g).all()
    _same(out, ref, **_tol(dtype))
    _same(g, tg_, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_softmax_fully_neg_inf_row_is_nan_like_torch(dtype):
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.5, -1.0, 2.0]], dtype=dtype)
    out, ref, (g,), (tg_,) = _run(lambda t: F.softmax(t, axis=-1), lambda t: t.softmax(-1), x)
    assert np.isnan(out[0]).all() and np.isnan(ref[0]).all()
    assert np.isfinite(out[1]).all()                # the nan row does not leak into the others
    _same(out, ref, **_tol(dtype))
    _same(g, tg_, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_logsumexp_all_neg_inf_is_neg_inf(dtype):
    x = np.array([[-np.inf, -np.inf, -np.inf], [-np.inf, 1.0, -np.inf], [1e4, 1e4, -1e4]], dtype=dtype)
    out, ref, (g,), (tg_,) = _run(lambda t: t.logsumexp(axis=-1), lambda t: t.logsumexp(-1), x)
    assert np.isneginf(out[0]) and out[1] == 1.0
    np.testing.assert_allclose(out[2], 1e4 + np.log(2.0), rtol=1e-7)
    _same(out, ref, **_tol(dtype))
    _same(g, tg_, **_tol(dtype))                    # the -inf row's gradient is nan in both


# ---------------------------------------------------------------- saturation
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("op", ["tanh", "sigmoid", "silu"])
def test_saturating_activations_at_pm_1000(op, dtype):
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=dtype)
    ours_fn = {"tanh": lambda t: t.tanh(), "sigmoid": lambda t: t.sigmoid(), "silu": F.silu}[op]
    torch_fn = {"tanh": lambda t: t.tanh(), "sigmoid": lambda t: t.sigmoid(), "silu": TF.silu}[op]
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no overflow warning may escape forward or backward
        out, ref, (g,), (tg_,) = _run(ours_fn, torch_fn, x)
    assert np.isfinite(out).all() and np.isfinite(g).all()
    if op == "tanh":
        np.testing.assert_array_equal(out[[0, -1]], [-1.0, 1.0])
    elif op == "sigmoid":
        np.testing.assert_array_equal(out[[0, -1]], [0.0, 1.0])
    else:
        np.testing.assert_array_equal(out[[0, -1]], [0.0, 1000.0])
    _same(out, ref, **_tol(dtype))
    _same(g, tg_, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_sigmoid_very_negative_keeps_relative_precision(dtype):
    x = np.array([-30.0, -50.0, -80.0], dtype=dtype)
    out, ref, (g,), (tg_,) = _run(lambda t: t.sigmoid(), lambda t: t.sigmoid(), x, grad=np.ones(3))
    exact = np.exp(np.array([-30.0, -50.0, -80.0])) / (1 + np.exp(np.array([-30.0, -50.0, -80.0])))
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    assert (out > 0).all(), "sigmoid(-80) underflowed to 0"
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=0)        # relative, no absolute slack
    np.testing.assert_allclose(out, exact, rtol=rtol, atol=0)
    np.testing.assert_allclose(g, tg_, rtol=rtol, atol=0)


# ---------------------------------------------------------------- kinks
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_sqrt_at_zero(dtype):
    x = np.array([0.0, 4.0], dtype=dtype)
    out, ref, (g,), (tg_,) = _run(lambda t: t.sqrt(), lambda t: t.sqrt(), x, grad=np.ones(2))
    assert out[0] == 0.0 and np.isposinf(g[0]) and g[1] == 0.25
    _same(out, ref)
    _same(g, tg_)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("op", ["abs", "relu"])
def test_abs_and_relu_at_zero_have_zero_gradient(op, dtype):
    x = np.array([-2.0, -0.0, 0.0, 3.0], dtype=dtype)
    fn = (lambda t: t.abs()) if op == "abs" else (lambda t: t.relu())
    out, ref, (g,), (tg_,) = _run(fn, fn, x, grad=np.full(4, 2.0))
    assert g[1] == 0.0 and g[2] == 0.0
    _same(out, ref)
    _same(g, tg_)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_clip_at_the_bounds_passes_the_gradient(dtype):
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=dtype)
    out, ref, (g,), (tg_,) = _run(lambda t: t.clip(-1.0, 0.5), lambda t: t.clamp(-1.0, 0.5), x,
                                  grad=np.arange(1.0, 8.0))
    np.testing.assert_array_equal(g, [0, 2, 3, 4, 5, 0, 0])   # inclusive at both bounds, like torch.clamp
    _same(out, ref)
    _same(g, tg_)


# ---------------------------------------------------------------- ties
TIES = np.array([[1.0, 3.0, 3.0, 2.0], [2.0, 2.0, 2.0, 2.0], [5.0, -1.0, 5.0, 5.0]])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("case", ["max_axis1", "max_axis0_keepdims", "max_all", "min_axis1"])
def test_max_min_ties_split_evenly_like_amax(case, dtype):
    x = TIES.astype(dtype)
    ours_fn, torch_fn = {
        "max_axis1": (lambda t: t.max(axis=1), lambda t: t.amax(dim=1)),
        "max_axis0_keepdims": (lambda t: t.max(axis=0, keepdims=True), lambda t: t.amax(dim=0, keepdim=True)),
        "max_all": (lambda t: t.max(), lambda t: t.amax()),
        "min_axis1": (lambda t: t.min(axis=1), lambda t: t.amin(dim=1)),
    }[case]
    out, ref, (g,), (tg_,) = _run(ours_fn, torch_fn, x)
    _same(out, ref)
    _same(g, tg_, **_tol(dtype))
    if case == "max_axis1":
        # row 1: four-way tie, each gets a quarter; row 2: three-way
        gg = np.random.default_rng(1).standard_normal(3).astype(dtype)
        np.testing.assert_allclose(g[1], np.full(4, gg[1] / 4), rtol=1e-6)
        np.testing.assert_allclose(g[2], [gg[2] / 3, 0, gg[2] / 3, gg[2] / 3], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_ties_split_in_half(op, dtype):
    a = np.array([1.0, 2.0, 3.0, -0.5], dtype=dtype)
    b = np.array([1.0, 5.0, 0.0, -0.5], dtype=dtype)
    ours_fn = (lambda x, y: x.maximum(y)) if op == "maximum" else (lambda x, y: x.minimum(y))
    torch_fn = torch.maximum if op == "maximum" else torch.minimum
    out, ref, (ga, gb), (tga, tgb) = _run(ours_fn, torch_fn, a, b, grad=np.full(4, 2.0))
    np.testing.assert_array_equal(ga[[0, 3]], [1.0, 1.0])
    np.testing.assert_array_equal(gb[[0, 3]], [1.0, 1.0])
    _same(out, ref)
    _same(ga, tga)
    _same(gb, tgb)


# ---------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_cross_entropy_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [5e3, 5e3 + 2.0, -3e4], [-1e4, -1e4, -1e4 + 1.0]], dtype=dtype)
    targets = np.array([1, 0, 2])
    for reduction in ("mean", "sum", "none"):
        out, ref, (g,), (tg_,) = _run(lambda t: F.cross_entropy(t, targets, reduction=reduction),
                                      lambda t: TF.cross_entropy(t, torch.from_numpy(targets), reduction=reduction),
                                      logits)
        assert np.isfinite(out).all() and np.isfinite(g).all()
        _same(out, ref, **_tol(dtype))
        _same(g, tg_, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_cross_entropy_every_target_ignored(dtype):
    logits = np.random.default_rng(0).standard_normal((3, 4)).astype(dtype)
    targets = np.array([-100, -100, -100])
    for reduction in ("mean", "sum", "none"):
        out, ref, (g,), (tg_,) = _run(lambda t: F.cross_entropy(t, targets, reduction=reduction),
                                      lambda t: TF.cross_entropy(t, torch.from_numpy(targets), reduction=reduction),
                                      logits, grad=np.ones(() if reduction != "none" else 3))
        if reduction == "mean":
            assert np.isnan(out) and np.isnan(ref)    # 0 / 0, as torch
        else:
            assert not np.any(out)
        np.testing.assert_array_equal(g, 0.0)         # nothing counts, nothing flows (torch: zeros)
        _same(out, ref)
        _same(g, tg_)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_cross_entropy_ignore_index_in_the_middle(dtype):
    logits = np.random.default_rng(1).standard_normal((2, 5, 4)).astype(dtype)
    targets = np.array([[3, 0, -1, 2, 1], [-1, 1, -1, 3, 0]])
    for reduction in ("mean", "sum", "none"):
        out, ref, (g,), (tg_,) = _run(
            lambda t: F.cross_entropy(t, targets, ignore_index=-1, reduction=reduction),
            lambda t: TF.cross_entropy(t.permute(0, 2, 1), torch.from_numpy(targets), ignore_index=-1,
                                       reduction=reduction),
            logits)
        assert not np.any(g[targets == -1]), "ignored positions must get no gradient"
        _same(out, ref, **_tol(dtype))
        _same(g, tg_, **_tol(dtype))


# ---------------------------------------------------------------- overflow, 0/0, pow at 0
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_exp_overflow_is_inf_like_torch(dtype):
    big = 100.0 if dtype == np.float32 else 1000.0      # past float32's 88.7 / float64's 709.8
    x = np.array([big, -1000.0, -big, 0.0, 1.0], dtype=dtype)
    out, ref, (g,), (tg_,) = _run(lambda t: t.exp(), lambda t: t.exp(), x, grad=np.array([1.0, 1.0, 1.0, 1.0, -1.0]))
    assert np.isposinf(out[0]) and out[1] == 0.0
    assert np.isposinf(g[0]) and g[1] == 0.0
    _same(out, ref, **_tol(dtype))
    _same(g, tg_, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_division_by_zero_like_torch(dtype):
    a = np.array([1.0, -1.0, 0.0, 3.0, 2.0], dtype=dtype)
    b = np.array([0.0, 0.0, 0.0, -0.0, 4.0], dtype=dtype)
    out, ref, (ga, gb), (tga, tgb) = _run(lambda x, y: x / y, lambda x, y: x / y, a, b,
                                          grad=np.array([1.0, -2.0, 1.0, 0.5, 1.0]))
    assert np.isposinf(out[0]) and np.isneginf(out[1]) and np.isnan(out[2]) and np.isneginf(out[3])
    _same(out, ref)
    _same(ga, tga)
    _same(gb, tgb)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_pow_zero_base_tensor_exponent(dtype):
    a = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0], dtype=dtype)
    b = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 3.0, -1.0], dtype=dtype)
    out, ref, (ga, gb), (tga, tgb) = _run(lambda x, y: x ** y, lambda x, y: x ** y, a, b,
                                          grad=np.full(7, 1.5))
    # d/db a^b = a^b log a: 0 where a == 0 and b >= 0 (not 0 * -inf = nan), like torch
    np.testing.assert_array_equal(gb[:5], 0.0)
    # d/da a^0 = 0 even at a == 0 (torch's rule; 0 * 0^-1 would be nan)
    assert ga[0] == 0.0 and np.isposinf(ga[1]) and ga[2] == 1.5 and ga[3] == 0.0
    _same(out, ref, **_tol(dtype))
    _same(ga, tga, **_tol(dtype))
    _same(gb, tgb, **_tol(dtype))


# ---------------------------------------------------------------- gelu and erf
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("size", [6, 600], ids=["small", "large"])   # <= 64 elements: the exact erf path
def test_gelu_large_magnitudes(size, dtype):
    base = np.array([-30.0, -10.0, 10.0, 30.0])
    x = np.resize(base, size).astype(dtype)
    out, ref, (g,), (tg_,) = _run(F.gelu, TF.gelu, x)
    np.testing.assert_array_equal(out[[0, 2, 3]], [0.0, 10.0, 30.0])   # Phi saturates: x * 1 and x * 0 exactly
    # gelu(-10) = -7.6e-23: float32 keeps a tiny value (its Phi for x < 0 is the tail q itself, no
    # 1 + erf cancellation), float64's 1 + erf rounds to 0 like torch
    assert abs(out[1]) < 1e-20
    upstream = np.random.default_rng(1).standard_normal(size).astype(dtype)
    np.testing.assert_allclose(g[:4] / upstream[:4], [0.0, 0.0, 1.0, 1.0], rtol=0, atol=1e-20)  # Phi + x phi
    _same(out, ref, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-20)
    _same(g, tg_, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-20)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_gelu_moderate_negative_tail(dtype):
    # at x = -5..-4, gelu = x * Phi(x) ~ 1e-6..1e-4: float32 loses it to 1 + erf cancellation (ulp of 1
    # is 6e-8, scaled by |x| / 2), so compare with torch's float64 answer at that absolute accuracy
    x = np.linspace(-5.0, -4.0, 11).astype(dtype)
    out = F.gelu(Tensor(x)).numpy()
    exact = TF.gelu(torch.from_numpy(x.astype(np.float64))).numpy()
    atol = 2.5 * 2.0 ** -23 * 2 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(out, exact, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=atol)


def _as7126_in_float64(x):
    """The same A&S 7.1.26 formula as the library, evaluated in float64 (the approximation alone)."""
    a = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.copysign(1.0 - poly * np.exp(-a * a), x)


MEASURED = {}


def test_float32_erf_and_gelu_error_on_a_dense_grid():
    """A&S 7.1.26 (float32 arrays over 64 elements) against torch's float64 erf / gelu on [-10, 10].

    The formula itself is within 1.5e-7 of erf (checked in float64 below); evaluated in float32 its
    Horner sum near t = 1 (|x| small) adds a few ulps of 1: measured 5.2e-7 at x ~ -0.035.
    """
    x32 = np.linspace(-10.0, 10.0, 400_001, dtype=np.float32)
    x64 = torch.from_numpy(x32.astype(np.float64))
    erf_exact = torch.erf(x64).numpy()
    erf_err = np.abs(Tensor(x32).erf().numpy().astype(np.float64) - erf_exact).max()
    formula_err = np.abs(_as7126_in_float64(x32) - erf_exact).max()
    gelu_ours = F.gelu(Tensor(x32)).numpy().astype(np.float64)
    gelu_err = np.abs(gelu_ours - TF.gelu(x64).numpy()).max()
    gelu_err_vs_torch32 = np.abs(gelu_ours - TF.gelu(torch.from_numpy(x32)).numpy()).max()
    torch32_gelu_err = np.abs(TF.gelu(torch.from_numpy(x32)).numpy() - TF.gelu(x64).numpy()).max()
    MEASURED.update(erf=erf_err, formula=formula_err, gelu=gelu_err, gelu_vs_torch32=gelu_err_vs_torch32)
    print(f"\nfloat32 erf max abs error {erf_err:.3e} (A&S formula in float64: {formula_err:.3e}); "
          f"gelu max abs error {gelu_err:.3e} vs float64 torch (torch float32 itself: {torch32_gelu_err:.3e}), "
          f"{gelu_err_vs_torch32:.3e} vs float32 torch")
    assert formula_err < 1.5e-7, formula_err          # Abramowitz & Stegun's stated bound
    assert erf_err < 6e-7, erf_err                    # + float32 evaluation (a few ulps of 1)
    # gelu = x (1 + erf(x / sqrt 2)) / 2: near 0 the erf error is scaled by |x| / 2, at |x| ~ 10 the
    # result rounds to float32 (half an ulp of 10 is 4.8e-7)
    assert gelu_err < 1e-6, gelu_err
    assert gelu_err_vs_torch32 < 2e-6, gelu_err_vs_torch32
    # the float32 gradient (cdf + x pdf, with the same erf) stays close to torch's float32 gradient
    xg = Tensor(x32.copy(), requires_grad=True)
    F.gelu(xg).sum().backward()
    xt = torch.from_numpy(x32.copy()).requires_grad_()
    TF.gelu(xt).sum().backward()
    assert np.abs(xg.grad.numpy() - xt.grad.numpy()).max() < 1e-6


def test_float32_erf_takes_the_approximate_path():
    # the dense-grid test must exercise the approximation: on a large float32 array our erf differs
    # from the correctly rounded float32 erf somewhere; on a small one (exact path) it never does
    x = np.linspace(-3, 3, 1001, dtype=np.float32)
    correctly_rounded = torch.erf(torch.from_numpy(x.astype(np.float64))).numpy().astype(np.float32)
    assert np.any(Tensor(x).erf().numpy() != correctly_rounded)
    np.testing.assert_array_equal(Tensor(x[:50]).erf().numpy(), correctly_rounded[:50])


# ---------------------------------------------------------------- layer_norm
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_layer_norm_constant_row(dtype):
    x = np.array([[3.0, 3.0, 3.0, 3.0], [1.0, -2.0, 0.5, 4.0], [-1e3, -1e3, -1e3, -1e3]], dtype=dtype)
    w = np.array([1.5, -0.5, 2.0, 1.0], dtype=dtype)
    b = np.array([0.1, 0.2, -0.3, 0.4], dtype=dtype)
    out, ref, grads, tgrads = _run(lambda t, ww, bb: F.layer_norm(t, ww, bb),
                                   lambda t, ww, bb: TF.layer_norm(t, (4,), ww, bb), x, w, b)
    assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in grads)
    np.testing.assert_array_equal(out[0], b)        # variance 0: xhat = 0, the output is the bias
    np.testing.assert_array_equal(out[2], b)
    _same(out, ref, **_tol(dtype, 1e-5))
    # the gradient is rstd * (gw - mean(gw)), rstd = 1 / sqrt(eps) = 316. torch's float32 backward
    # loses ~5e-4 relative on the x = -1e3 row (cancellation against x), so float32 is compared with
    # torch's float64 gradient
    _, _, _, tgrads64 = _run(lambda t, ww, bb: F.layer_norm(t, ww, bb),
                             lambda t, ww, bb: TF.layer_norm(t, (4,), ww, bb), *(a.astype(np.float64) for a in (x, w, b)))
    for g, tg64 in zip(grads, tgrads64):
        _same(g, tg64.astype(dtype), **_tol(dtype, 1e-5, 1e-10))
    _same(grads[0][:2], tgrads[0][:2], **_tol(dtype, 1e-4, 1e-10))   # well-conditioned rows: torch's own dtype
