"""Property-based tests of every op: hypothesis draws the shapes AND the values.

For each op (every Function subclass in tinygrad_reason.ops, plus the composites built on them)
hypothesis generates 0-d tensors, size-1 and size-0 dims, broadcasting pairs, non-contiguous
inputs (transposed, strided, reversed views), negative axes, keepdims, random permutations,
slices / integer arrays with repeats / boolean masks, split sizes, pad widths and matmul shapes,
and checks:

1. forward equals a plain NumPy reference (math.erf vectorised for erf);
2. output shape and dtype follow NumPy's rules; every input's gradient has its shape and dtype;
3. tinygrad_reason.gradcheck passes in float64 (values drawn away from kinks and ties);
4. op-specific invariants (softmax sums to 1, ignore_index rows are ignored, ...), and float32
   inputs give the float64 result to float32 precision.

Runs are deterministic (derandomize=True, no example database). TG_HYPOTHESIS_SCALE=10 in the
environment runs ten times as many examples per test.
"""
from __future__ import annotations

import importlib
import math
import os
import pkgutil
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, find, given, note, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_reason as tg
from tinygrad_reason import Function, Tensor, functional as F
from tinygrad_reason import ops as _ops_pkg
from tinygrad_reason.ops import attention as AT, elementwise as E, matmul as MM, movement as M, nn as NN, reduce as R
from tinygrad_reason.fast import attention as attention_kernel

# every module of the ops package, imported, so that every Function subclass is defined
for _mod in pkgutil.iter_modules(_ops_pkg.__path__):
    importlib.import_module(f"{_ops_pkg.__name__}.{_mod.name}")
try:
    from tinygrad_reason.ops import rope as RP
except ImportError:  # the rope op is optional: its test is skipped, the coverage test still counts
    RP = None

MAX_SIZE = 24          # elements per tensor: finite differences stay cheap
_SCALE = float(os.environ.get("TG_HYPOTHESIS_SCALE", "1"))


def _settings(n: int):
    """Deterministic, database-free settings with n examples (times TG_HYPOTHESIS_SCALE)."""
    return settings(max_examples=max(1, int(n * _SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


FEW, SOME, MANY = _settings(20), _settings(40), _settings(60)

# empty reductions and all-ignored cross-entropy means are nan, as in numpy and torch; the tests
# assert those values, so numpy's warnings about them are noise here
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:divide by zero encountered:RuntimeWarning",
                                        "ignore:Mean of empty slice:RuntimeWarning")


# ================================================================ coverage bookkeeping
def covers(*functions, composites=(), by_param=None):
    """Declare the Function classes (and composite functions) a test exercises.

    by_param=(argname, {value: (Function, ...)}) declares per parametrized case. The autouse
    fixture below checks that each declared class was really applied during the test, and
    test_every_op_has_a_hypothesis_test checks the union against the ops package.
    """
    def deco(fn):
        fn._covers = frozenset(functions)
        fn._covers_param = by_param
        fn._composites = frozenset(composites)
        return fn
    return deco


@pytest.fixture(autouse=True)
def _functions_applied(request, monkeypatch):
    seen = set()
    original = Function.__dict__["apply"].__func__

    def apply(cls, *parents, **kwargs):
        seen.add(cls)
        return original(cls, *parents, **kwargs)

    monkeypatch.setattr(Function, "apply", classmethod(apply))
    yield seen
    declared = set(getattr(request.function, "_covers", ()))
    by_param = getattr(request.function, "_covers_param", None)
    if by_param is not None:
        argname, table = by_param
        declared |= set(table[request.node.callspec.params[argname]])
    missing = {f.__name__ for f in declared - seen}
    assert not missing, f"{request.node.name} declares {sorted(missing)} but never applied them"


# ================================================================ strategies
@st.composite
def shapes(draw, min_dims=0, max_dims=4, min_side=0, max_side=4, max_size=MAX_SIZE):
    """A small shape: 0-d, size-1 and size-0 dims included, at most max_size elements."""
    nd = draw(st.integers(min_dims, max_dims))
    shape, budget = [], max_size
    for _ in range(nd):
        n = draw(st.integers(min_side, max(min_side, min(max_side, budget))))
        shape.append(n)
        budget = max(budget // max(n, 1), 1)
    return tuple(shape)


_ELEMENTS = {
    "real": st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False),
    "positive": st.floats(0.25, 4.0),
    # away from 0 by 0.1: relu / abs kinks, and a divisor stays well conditioned with |b| >= 0.5
    "kinkfree": st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(0.1, 3.0)).map(lambda t: t[0] * t[1]),
    "nonzero": st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(0.5, 3.0)).map(lambda t: t[0] * t[1]),
    "exponent": st.floats(-2.0, 2.0),
}

LAYOUTS = ("c", "fortran", "strided", "reversed", "permuted")


@st.composite
def laid_out(draw, arr):
    """The same values in a C, Fortran, strided, negatively strided or axis-permuted layout (a view:
    np.ascontiguousarray is NOT applied, so many draws are not C-contiguous)."""
    how = draw(st.sampled_from(LAYOUTS))
    if arr.ndim == 0 or how == "c":
        return arr.copy()
    if how == "fortran":
        return np.asfortranarray(arr)
    if how == "strided":
        big = np.full(tuple(2 * n + 1 for n in arr.shape), np.nan, dtype=arr.dtype)
        view = big[tuple(slice(1, None, 2) for _ in arr.shape)]
        view[...] = arr
        return view
    if how == "reversed":
        return np.flip(np.flip(arr).copy())
    perm = draw(st.permutations(range(arr.ndim)))
    return np.transpose(np.transpose(arr, perm).copy(), np.argsort(perm))


@st.composite
def arrays(draw, shape, domain="real", dtype=np.float64):
    values = draw(hnp.arrays(np.float64, shape, elements=_ELEMENTS[domain]))
    return draw(laid_out(values.astype(dtype)))


@st.composite
def distinct_arrays(draw, shape_list, step=0.1, offset=0.0):
    """Arrays whose values are all different multiples of `step` (+ offset), across all of them:
    no ties inside or between arrays, every gap at least `step` (max / min / maximum / clip)."""
    sizes = [math.prod(s) for s in shape_list]
    ints = draw(st.lists(st.integers(-60, 60), min_size=sum(sizes), max_size=sum(sizes), unique=True))
    flat = np.asarray(ints, dtype=np.float64) * step + offset
    out, start = [], 0
    for s, n in zip(shape_list, sizes):
        out.append(draw(laid_out(flat[start:start + n].reshape(s))))
        start += n
    return out


def _size_ok(*shape_list):
    return all(math.prod(s) <= MAX_SIZE for s in shape_list)


def broadcast_pairs(num_shapes=2):
    """Mutually broadcastable shapes (0-d, size-1 and size-0 dims included), all small."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=0, max_dims=4, min_side=0,
                                             max_side=4).filter(
        lambda b: _size_ok(*b.input_shapes, b.result_shape))


@st.composite
def reduce_axes(draw, ndim):
    """None, an int (negatives allowed) or a tuple of distinct axes in random order, some negative."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if ndim == 0:
        return draw(st.sampled_from([0, -1, (), (0,), (-1,)]))
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(a - ndim if draw(st.booleans()) else a for a in chosen)


def _norm_axes(axis, ndim):
    if ndim == 0:
        return ()
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(a % ndim for a in axes))


# ================================================================ the generic check
_np_erf = np.vectorize(math.erf, otypes=[np.float64])


def _projection(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


def _grads(out, xs, v):
    """Gradient of sum(out * v) for every input that requires grad; each has its input's shape and dtype."""
    wanted = [x for x in xs if x.requires_grad]
    loss = (out * Tensor(v.astype(out.dtype))).sum()
    gs = tg.grad(loss, wanted)
    for k, (g, x) in enumerate(zip(gs, wanted)):
        assert g.shape == x.shape, f"grad {k}: shape {g.shape} != input shape {x.shape}"
        assert g.dtype == x.dtype, f"grad {k}: dtype {g.dtype} != input dtype {x.dtype}"
        assert isinstance(g.data, np.ndarray)
    return [g.numpy() for g in gs]


def _close(actual, desired, tol, what):
    desired = np.asarray(desired, dtype=np.float64)
    finite = desired[np.isfinite(desired)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired, rtol=tol, atol=tol * scale,
                               err_msg=what)


def check(fn, ref, inputs, *, requires=None, gc=None, tol32=2e-4, gradcheck=True, f32=True):
    """The common properties 1-3 and float32 parity for fn (on Tensors) against ref (on arrays).

    Returns (output Tensor, float64 gradients) for op-specific invariants.
    """
    requires = [True] * len(inputs) if requires is None else list(requires)
    keep = [a.copy() for a in inputs]
    xs = [Tensor(a, requires_grad=r) for a, r in zip(inputs, requires)]
    note(f"shapes {[a.shape for a in inputs]}, C-contiguous {[a.flags.c_contiguous for a in inputs]}")
    out = fn(*xs)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.asarray(ref(*inputs))
    assert isinstance(out, Tensor)
    assert out.shape == expected.shape, f"shape {out.shape} != numpy's {expected.shape}"
    assert out.dtype == expected.dtype, f"dtype {out.dtype} != numpy's {expected.dtype}"
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9, atol=1e-12)
    for a, k in zip(inputs, keep):
        np.testing.assert_array_equal(a, k, err_msg="the op modified its input in place")
    v = _projection(out.shape)
    grads = _grads(out, xs, v) if any(requires) else []
    for g in grads:
        assert np.isfinite(g).all() or not np.isfinite(expected).all()
    if gradcheck and any(requires) and np.isfinite(expected).all():
        tg.gradcheck(fn, [Tensor(a, requires_grad=r) for a, r in zip(inputs, requires)], **(gc or {}))
    if f32:
        xs32 = [Tensor(a.astype(np.float32), requires_grad=r) for a, r in zip(inputs, requires)]
        out32 = fn(*xs32)
        assert out32.dtype == np.float32, f"float32 inputs gave {out32.dtype}"
        assert out32.shape == out.shape
        _close(out32.numpy(), out.numpy(), tol32, "float32 forward vs float64")
        if any(requires):
            for k, (g32, g64) in enumerate(zip(_grads(out32, xs32, v), grads)):
                _close(g32, g64, tol32, f"float32 gradient of input {k} vs float64")
    return out, grads


# ================================================================ elementwise: binary
BINARY = {   # name: (Function, ours, numpy, domains)
    "add": (E.Add, lambda a, b: a + b, np.add, ("real", "real")),
    "sub": (E.Sub, lambda a, b: a - b, np.subtract, ("real", "real")),
    "mul": (E.Mul, lambda a, b: a * b, np.multiply, ("real", "real")),
    "div": (E.Div, lambda a, b: a / b, np.divide, ("real", "nonzero")),
    "pow": (E.Pow, lambda a, b: a ** b, np.power, ("positive", "exponent")),
    "maximum": (E.Maximum, lambda a, b: a.maximum(b), np.maximum, "distinct"),
    "minimum": (E.Minimum, lambda a, b: a.minimum(b), np.minimum, "distinct"),
}


@covers(by_param=("name", {k: (v[0],) for k, v in BINARY.items()}))
@pytest.mark.parametrize("name", list(BINARY))
@SOME
@given(data=st.data())
def test_binary_broadcasting(name, data):
    _, ours, ref, domains = BINARY[name]
    pair = data.draw(broadcast_pairs(), label="shapes")
    if domains == "distinct":
        a, b = data.draw(distinct_arrays(pair.input_shapes), label="a, b")
    else:
        a, b = (data.draw(arrays(s, d), label=f"input {i}")
                for i, (s, d) in enumerate(zip(pair.input_shapes, domains)))
    out, _ = check(ours, ref, [a, b])
    assert out.shape == pair.result_shape


SCALAR_FORMS = {   # reflected and scalar operands: Python numbers keep the tensor's float dtype
    "radd": (E.Add, lambda x: 1.5 + x, lambda a: 1.5 + a, "real"),
    "rsub": (E.Sub, lambda x: 2.0 - x, lambda a: 2.0 - a, "real"),
    "rmul": (E.Mul, lambda x: -3 * x, lambda a: -3 * a, "real"),
    "rdiv": (E.Div, lambda x: 2.0 / x, lambda a: 2.0 / a, "nonzero"),
    "rpow": (E.Pow, lambda x: 2.0 ** x, lambda a: 2.0 ** a, "real"),
    "sub_scalar": (E.Sub, lambda x: x - 0.5, lambda a: a - 0.5, "real"),
    "div_scalar": (E.Div, lambda x: x / 4, lambda a: a / 4, "real"),
    "maximum_scalar": (E.Maximum, lambda x: x.maximum(0.05), lambda a: np.maximum(a, 0.05), "kinkfree"),
    "minimum_scalar": (E.Minimum, lambda x: x.minimum(-0.05), lambda a: np.minimum(a, -0.05), "kinkfree"),
}


@covers(by_param=("name", {k: (v[0],) for k, v in SCALAR_FORMS.items()}))
@pytest.mark.parametrize("name", list(SCALAR_FORMS))
@FEW
@given(data=st.data())
def test_scalar_operands(name, data):
    _, ours, ref, domain = SCALAR_FORMS[name]
    a = data.draw(arrays(data.draw(shapes()), domain))
    check(ours, ref, [a])


@covers(E.Add, E.Sub, E.Mul, E.Div, E.Maximum, E.Minimum)
@SOME
@given(data=st.data(), dtypes=st.tuples(st.sampled_from([np.float32, np.float64]),
                                        st.sampled_from([np.float32, np.float64])))
def test_binary_mixed_dtypes_promote_like_numpy(data, dtypes):
    pair = data.draw(broadcast_pairs())
    a64, b64 = data.draw(distinct_arrays(pair.input_shapes))
    a, b = a64.astype(dtypes[0]), b64.astype(dtypes[1])
    for ours, ref in ((lambda x, y: x + y, np.add), (lambda x, y: x - y, np.subtract),
                      (lambda x, y: x * y, np.multiply), (lambda x, y: x / y, np.divide),
                      (lambda x, y: x.maximum(y), np.maximum), (lambda x, y: x.minimum(y), np.minimum)):
        xa, xb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
        out = ours(xa, xb)
        with np.errstate(all="ignore"):
            expected = ref(a, b)
        assert out.dtype == expected.dtype and out.shape == expected.shape
        _close(out.numpy(), expected, 1e-6, "mixed-dtype forward")
        ga, gb = _grads(out, [xa, xb], _projection(out.shape))   # float32 input -> float32 grad
        assert ga.dtype == dtypes[0] and gb.dtype == dtypes[1]


# ================================================================ elementwise: unary
UNARY = {   # name: (Function, ours, numpy reference, domain)
    "neg": (E.Neg, lambda x: -x, np.negative, "real"),
    "exp": (E.Exp, lambda x: x.exp(), np.exp, "real"),
    "log": (E.Log, lambda x: x.log(), np.log, "positive"),
    "sqrt": (E.Sqrt, lambda x: x.sqrt(), np.sqrt, "positive"),
    "tanh": (E.Tanh, lambda x: x.tanh(), np.tanh, "real"),
    "sigmoid": (E.Sigmoid, lambda x: x.sigmoid(), lambda a: 1.0 / (1.0 + np.exp(-a)), "real"),
    "erf": (E.Erf, lambda x: x.erf(), _np_erf, "real"),
    "relu": (E.Relu, lambda x: x.relu(), lambda a: np.where(a > 0, a, 0.0), "kinkfree"),
    "gelu": (E.Gelu, lambda x: F.gelu(x), lambda a: 0.5 * a * (1.0 + _np_erf(a / math.sqrt(2.0))), "real"),
    "gelu_tanh": (E.GeluTanh, lambda x: F.gelu(x, approximate="tanh"),
                  lambda a: 0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a ** 3))), "real"),
    "silu": (E.Silu, lambda x: F.silu(x), lambda a: a / (1.0 + np.exp(-a)), "real"),
    "abs": (E.Abs, lambda x: x.abs(), np.abs, "kinkfree"),
}


@covers(by_param=("name", {k: (v[0],) for k, v in UNARY.items()}))
@pytest.mark.parametrize("name", list(UNARY))
@SOME
@given(data=st.data())
def test_unary(name, data):
    _, ours, ref, domain = UNARY[name]
    a = data.draw(arrays(data.draw(shapes(), label="shape"), domain), label="x")
    out, (g,) = check(ours, ref, [a])
    v = _projection(out.shape)
    if name == "relu":      # the gradient is the upstream gradient where x > 0, else 0
        np.testing.assert_array_equal(g, np.where(a > 0, v, 0.0))
    if name == "abs":
        np.testing.assert_array_equal(g, np.sign(a) * v)
    if name in ("sigmoid", "tanh", "erf"):   # bounded, odd / symmetric
        assert np.all(np.abs(out.numpy() - (0.5 if name == "sigmoid" else 0.0)) <= 1.0)


@covers(E.Erf, E.Gelu)
@FEW
@given(n=st.integers(65, 300), seed=st.integers(0, 2 ** 16))
def test_erf_float32_large_arrays_match_libm(n, seed):
    # float32 arrays over 64 elements take the vectorised Abramowitz-Stegun path
    a = (np.random.default_rng(seed).standard_normal(n) * 2).astype(np.float32)
    got = Tensor(a).erf()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.numpy(), _np_erf(a.astype(np.float64)), rtol=0, atol=5e-7)
    gelu = F.gelu(Tensor(a))
    ref = 0.5 * a.astype(np.float64) * (1.0 + _np_erf(a.astype(np.float64) / math.sqrt(2.0)))
    np.testing.assert_allclose(gelu.numpy(), ref, rtol=0, atol=2e-6)


@covers(E.PowScalar)
@SOME
@given(data=st.data(), p=st.sampled_from([0, 1, 2, 3, -1, -2, 0.5, 1.5, -0.5, 2.5]))
def test_pow_scalar(data, p):
    domain = "real" if isinstance(p, int) and p >= 0 else "positive"
    a = data.draw(arrays(data.draw(shapes()), domain))
    out, (g,) = check(lambda x: x ** p, lambda y: y ** p, [a])
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(g, p * a ** (p - 1) * _projection(out.shape) if p else 0.0 * a,
                                   rtol=1e-10, atol=1e-12)


@covers(E.Cast)
@SOME
@given(data=st.data(), src=st.sampled_from([np.float32, np.float64]),
       dst=st.sampled_from([np.float16, np.float32, np.float64]))
def test_cast(data, src, dst):
    assume(src != dst)
    a = data.draw(arrays(data.draw(shapes()), "real", dtype=src))
    x = Tensor(a, requires_grad=True)
    out = x.astype(dst)
    assert out.dtype == dst and out.shape == a.shape and out.op == "Cast"
    np.testing.assert_array_equal(out.numpy(), a.astype(dst))
    v = _projection(a.shape).astype(dst)
    (g,) = tg.grad((out * Tensor(v)).sum(), [x])
    assert g.dtype == src and g.shape == a.shape
    np.testing.assert_array_equal(g.numpy(), v.astype(src))   # the gradient is cast back, unchanged
    if src == np.float64 and dst == np.float32:
        # a round trip through float32 is exact only to ~1e-7: finite differences need a coarse step
        tg.gradcheck(lambda t: t.astype(dst).astype(np.float64), [Tensor(a, requires_grad=True)],
                     eps=1e-3, atol=1e-3, rtol=1e-3)


@covers(E.Clip)
@SOME
@given(data=st.data())
def test_clip(data):
    shape = data.draw(shapes())
    # values at odd multiples of 0.05, bounds at multiples of 0.1: never within 0.05 of a bound
    (a,) = data.draw(distinct_arrays([shape], offset=0.05))
    lo, hi = sorted(data.draw(st.lists(st.integers(-40, 40), min_size=2, max_size=2)))
    low = data.draw(st.sampled_from([lo * 0.1, None]))
    high = data.draw(st.sampled_from([hi * 0.1, None]))

    def ref(y):
        y = y if low is None else np.maximum(y, low)
        return y if high is None else np.minimum(y, high)

    out, (g,) = check(lambda x: x.clip(low, high), ref, [a])
    inside = np.ones(a.shape, bool)
    if low is not None:
        inside &= a > low
    if high is not None:
        inside &= a < high
    np.testing.assert_array_equal(g, np.where(inside, _projection(out.shape), 0.0))


@covers(E.Where)
@SOME
@given(data=st.data())
def test_where(data):
    b3 = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, min_side=0, max_side=3).filter(
        lambda b: _size_ok(*b.input_shapes, b.result_shape)))
    cond = data.draw(hnp.arrays(np.bool_, b3.input_shapes[0]))
    a = data.draw(arrays(b3.input_shapes[1]))
    b = data.draw(arrays(b3.input_shapes[2]))
    out, (ga, gb) = check(lambda x, y: tg.where(cond, x, y), lambda x, y: np.where(cond, x, y), [a, b])
    v = _projection(out.shape)
    # every upstream element goes to exactly one of the two inputs
    np.testing.assert_allclose(ga.sum() + gb.sum(), v.sum(), atol=1e-9)


@covers(E.Where, composites=("masked_fill",))
@SOME
@given(data=st.data(), value=st.floats(-5, 5))
def test_masked_fill(data, value):
    shape = data.draw(shapes())
    mask_shape = data.draw(hnp.broadcastable_shapes(shape, min_side=0).filter(
        lambda m: np.broadcast_shapes(m, shape) == shape))               # the mask broadcasts INTO x
    mask = data.draw(hnp.arrays(np.bool_, mask_shape))
    a = data.draw(arrays(shape))
    out, (g,) = check(lambda x: x.masked_fill(mask, value), lambda y: np.where(mask, value, y), [a])
    np.testing.assert_array_equal(g, np.where(mask, 0.0, _projection(out.shape)))


# ================================================================ reductions
def _ref_var(correction):
    return lambda a, axis, keepdims: np.var(a, axis=axis, keepdims=keepdims, ddof=correction)


REDUCTIONS = {   # name: (Functions, ours(x, axis, keepdims), numpy(a, axes, keepdims), domain)
    "sum": ((R.Sum,), lambda x, ax, kd: x.sum(axis=ax, keepdims=kd), np.sum, "real"),
    "max": ((R.Max,), lambda x, ax, kd: x.max(axis=ax, keepdims=kd), np.max, "distinct"),
    "min": ((R.Min,), lambda x, ax, kd: x.min(axis=ax, keepdims=kd), np.min, "distinct"),
    "logsumexp": ((R.LogSumExp,), lambda x, ax, kd: x.logsumexp(axis=ax, keepdims=kd),
                  lambda a, axis, keepdims: np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims)), "real"),
    "mean": ((R.Sum,), lambda x, ax, kd: x.mean(axis=ax, keepdims=kd), np.mean, "real"),
    "var": ((R.Sum,), lambda x, ax, kd: x.var(axis=ax, keepdims=kd), _ref_var(1), "real"),
    "var_biased": ((R.Sum,), lambda x, ax, kd: x.var(axis=ax, keepdims=kd, correction=0), _ref_var(0), "real"),
}


@covers(by_param=("name", {k: v[0] for k, v in REDUCTIONS.items()}), composites=("mean", "var"))
@pytest.mark.parametrize("name", list(REDUCTIONS))
@SOME
@given(data=st.data(), keepdims=st.booleans())
def test_reductions(name, data, keepdims):
    _, ours, ref, domain = REDUCTIONS[name]
    shape = data.draw(shapes(), label="shape")
    axis = data.draw(reduce_axes(len(shape)), label="axis")
    axes = _norm_axes(axis, len(shape))
    if domain == "distinct":
        (a,) = data.draw(distinct_arrays([shape]))
    else:
        a = data.draw(arrays(shape, domain))
    if name in ("max", "min") and any(shape[i] == 0 for i in axes):
        with pytest.raises(ValueError, match="size-0 axis"):
            ours(Tensor(a), axis, keepdims)
        return
    fn = lambda x: ours(x, axis, keepdims)  # noqa: E731
    out, (g,) = check(fn, lambda y: ref(y, axis=axes, keepdims=keepdims), [a])
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    count = math.prod(shape[i] for i in axes)
    if name in ("max", "min") and a.size:
        # no ties: the gradient of sum(out) is one-hot in every reduced slice
        x = Tensor(a, requires_grad=True)
        (g1,) = tg.grad(ours(x, axis, keepdims).sum(), [x])
        assert set(np.unique(g1.numpy())) <= {0.0, 1.0}
        np.testing.assert_array_equal(g1.numpy().sum(axis=axes).reshape(-1), np.ones(max(a.size // count, 1))
                                      if a.size else [])
    if name == "logsumexp" and a.size and count:
        o = out.numpy().reshape(kept)
        mx = a.max(axis=axes, keepdims=True)
        assert np.all(o >= mx - 1e-12) and np.all(o <= mx + math.log(count) + 1e-12)
        np.testing.assert_allclose(g.sum(axis=axes), _projection(out.shape).reshape(
            tuple(n for i, n in enumerate(kept) if i not in axes)), atol=1e-9)   # softmax weights sum to 1
    if name == "mean" and count:
        np.testing.assert_allclose(out.numpy() * count, np.sum(a, axis=axes, keepdims=keepdims), atol=1e-12)
    if name.startswith("var") and np.isfinite(out.numpy()).all():
        assert np.all(out.numpy() >= 0)
        shifted = ours(Tensor(a + 1.75), axis, keepdims).numpy()          # shift invariant
        np.testing.assert_allclose(shifted, out.numpy(), atol=1e-9)


# ================================================================ movement
@st.composite
def reshape_targets(draw, shape):
    """A random shape with the same number of elements; sometimes one -1."""
    n = math.prod(shape)
    if n == 0:
        dims = draw(st.lists(st.integers(0, 3), max_size=3))
        dims.insert(draw(st.integers(0, len(dims))), 0)
        return tuple(dims)
    factors, m, p = [], n, 2
    while m > 1:
        while m % p == 0:
            factors.append(p)
            m //= p
        p += 1
    k = draw(st.integers(0 if n == 1 else 1, 4))
    k = max(k, 1) if factors else k
    dims = [1] * k
    for f in factors:
        dims[draw(st.integers(0, k - 1))] *= f
    if dims and draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


@covers(M.Reshape, composites=("flatten", "view"))
@SOME
@given(data=st.data())
def test_reshape(data):
    shape = data.draw(shapes())
    target = data.draw(reshape_targets(shape), label="target")
    a = data.draw(arrays(shape))
    assume(target != shape)   # an identical shape is returned as is (no op)
    check(lambda x: x.reshape(target), lambda y: y.reshape(target), [a])
    check(lambda x: x.view(*target), lambda y: y.reshape(target), [a], gradcheck=False, f32=False)
    if len(shape) >= 1:
        start = data.draw(st.integers(-len(shape), len(shape) - 1))
        end = data.draw(st.integers(start % len(shape), len(shape) - 1))
        flat_shape = shape[:start % len(shape)] + (math.prod(shape[start % len(shape):end + 1]),) + shape[end + 1:]
        if flat_shape != shape:
            check(lambda x: x.flatten(start, end), lambda y: y.reshape(flat_shape), [a], f32=False)


@covers(M.Permute, composites=("transpose", "T"))
@SOME
@given(data=st.data())
def test_permute_and_transpose(data):
    shape = data.draw(shapes())
    nd = len(shape)
    perm = data.draw(st.permutations(range(nd)), label="perm")
    axes = tuple(p - nd if data.draw(st.booleans()) else p for p in perm)
    a = data.draw(arrays(shape))
    out, (g,) = check(lambda x: x.permute(*axes), lambda y: np.transpose(y, perm), [a])
    np.testing.assert_array_equal(g, np.transpose(_projection(out.shape), np.argsort(perm)))
    if nd >= 2:
        i, j = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
        check(lambda x: x.transpose(i, j), lambda y: np.swapaxes(y, i, j), [a], f32=False)
        check(lambda x: x.T, lambda y: y.T, [a], f32=False, gradcheck=False)


@covers(M.Expand, composites=("broadcast_to",))
@SOME
@given(data=st.data())
def test_expand(data):
    shape = data.draw(shapes(max_dims=3, max_side=3))
    lead = data.draw(st.lists(st.integers(0, 3), max_size=2))
    target = tuple(lead) + tuple(data.draw(st.integers(0, 3)) if n == 1 else n for n in shape)
    assume(target != shape and _size_ok(target))
    a = data.draw(arrays(shape))
    out, (g,) = check(lambda x: x.expand(*target), lambda y: np.broadcast_to(y, target), [a])
    # the gradient sums the upstream gradient over the copies
    v = _projection(target)
    red = tuple(range(len(lead))) + tuple(len(lead) + i for i, n in enumerate(shape) if n == 1)
    np.testing.assert_allclose(g, v.sum(axis=red).reshape(shape) if v.size else np.zeros(shape), atol=1e-12)
    check(lambda x: x.broadcast_to(target), lambda y: np.broadcast_to(y, target), [a], f32=False, gradcheck=False)


@covers(M.Reshape, composites=("squeeze", "unsqueeze"))
@SOME
@given(data=st.data())
def test_squeeze_unsqueeze(data):
    shape = data.draw(shapes(max_side=2))
    nd = len(shape)
    a = data.draw(arrays(shape))
    ones = [i for i, n in enumerate(shape) if n == 1]
    chosen = data.draw(st.lists(st.sampled_from(ones), unique=True) if ones else st.just([]))
    sq_axis = None if not chosen or data.draw(st.booleans()) else tuple(c - nd if data.draw(st.booleans()) else c
                                                                         for c in chosen)
    expected = np.squeeze(a, axis=sq_axis)
    if expected.shape != a.shape:
        check(lambda x: x.squeeze(sq_axis), lambda y: np.squeeze(y, axis=sq_axis), [a], f32=False)
    axis = data.draw(st.integers(-nd - 1, nd))
    check(lambda x: x.unsqueeze(axis), lambda y: np.expand_dims(y, axis), [a], f32=False)
    # squeeze undoes unsqueeze
    np.testing.assert_array_equal(Tensor(a).unsqueeze(axis).squeeze(axis).numpy(), a)
    big = [s for s in shape if s != 1]
    if big:
        with pytest.raises(ValueError):
            Tensor(a).squeeze(shape.index(big[0]))


# ---- getitem: every index the op takes, checked against x[index] and a bincount-style backward
def _flat_ids(shape, index):
    """Which input elements each output element comes from (flat positions)."""
    return np.arange(math.prod(shape)).reshape(shape)[index]


def _check_getitem(a, index):
    out, (g,) = check(lambda x: x[index], lambda y: y[index], [a])
    # backward: each input element gets the sum of the upstream gradient over its copies (repeats add up)
    ids = _flat_ids(a.shape, index).reshape(-1)
    v = _projection(out.shape).reshape(-1)
    np.testing.assert_allclose(g.reshape(-1), np.bincount(ids, weights=v, minlength=a.size), atol=1e-12)
    x = Tensor(a, requires_grad=True)
    (counts,) = tg.grad(x[index].sum(), [x])
    np.testing.assert_array_equal(counts.numpy().reshape(-1), np.bincount(ids, minlength=a.size))
    return out


@covers(M.GetItem, M.ScatterAdd)
@SOME
@given(data=st.data())
def test_getitem_basic_indices(data):
    shape = data.draw(shapes())
    index = data.draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True), label="index")
    a = data.draw(arrays(shape))
    _check_getitem(a, index)


@st.composite
def int_array_index(draw, n, allow_2d=True):
    """Integer positions in [-n, n) WITH at least one repeat (the first one comes again)."""
    picks = draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=5))
    picks = picks + [picks[0] if draw(st.booleans()) else picks[0] - n if picks[0] >= 0 else picks[0] + n]
    arr = np.asarray(picks)
    if allow_2d and len(picks) % 2 == 0 and draw(st.booleans()):
        arr = arr.reshape(2, -1)
    return arr


@covers(M.GetItem, M.ScatterAdd)
@SOME
@given(data=st.data())
def test_getitem_integer_arrays_with_repeats(data):
    shape = data.draw(shapes(min_dims=1, min_side=1))
    axis = data.draw(st.integers(0, len(shape) - 1))
    idx = data.draw(int_array_index(shape[axis]), label="idx")
    assert len(np.unique(idx % shape[axis])) < idx.size        # repeats, always
    form = data.draw(st.sampled_from(["array", "list", "tensor"]))
    arg = idx if form == "array" else idx.tolist() if form == "list" else Tensor(idx)
    index = (slice(None),) * axis + (arg,)
    if data.draw(st.booleans()) and axis + 1 < len(shape):
        index = index + (slice(None, None, -1),)                # mixed with a reversed slice
    a = data.draw(arrays(shape))
    numpy_index = tuple(idx if i is arg else i for i in index)
    out = _check_getitem(a, numpy_index)
    x = Tensor(a, requires_grad=True)
    np.testing.assert_array_equal(x[index].numpy(), out.numpy())   # list / Tensor forms agree
    # the count of every position along `axis` is its number of occurrences in idx
    (counts,) = tg.grad(x[index].sum(), [x])
    occurrences = np.bincount((idx % shape[axis]).reshape(-1), minlength=shape[axis])
    other = math.prod(shape) // shape[axis]
    np.testing.assert_array_equal(np.moveaxis(counts.numpy(), axis, 0).reshape(shape[axis], -1),
                                  np.repeat(occurrences[:, None], other, axis=1))


@covers(M.GetItem, M.ScatterAdd)
@SOME
@given(data=st.data())
def test_getitem_advanced_index_tuples(data):
    shape = data.draw(shapes(min_dims=1, min_side=1))
    index = data.draw(hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(min_dims=0, max_dims=2,
                                                                                     max_side=4)), label="index")
    _check_getitem(data.draw(arrays(shape)), index)


@covers(M.GetItem, M.ScatterAdd)
@SOME
@given(data=st.data())
def test_getitem_boolean_masks(data):
    shape = data.draw(shapes(min_dims=1))
    start = data.draw(st.integers(0, len(shape) - 1))
    stop = data.draw(st.integers(start + 1, len(shape)))
    mask = data.draw(hnp.arrays(np.bool_, shape[start:stop]), label="mask")
    index = (slice(None),) * start + (mask,)
    a = data.draw(arrays(shape))
    out = _check_getitem(a, index)
    assert out.shape == shape[:start] + (int(mask.sum()),) + shape[stop:]


@covers(M.ScatterAdd, M.GetItem)
@SOME
@given(data=st.data())
def test_scatter_add_direct(data):
    shape = data.draw(shapes(min_dims=1, min_side=1))
    kind = data.draw(st.sampled_from(["ints", "slices", "mask"]))
    if kind == "ints":
        axis = data.draw(st.integers(0, len(shape) - 1))
        index = (slice(None),) * axis + (data.draw(int_array_index(shape[axis])),)
    elif kind == "slices":
        index = data.draw(hnp.basic_indices(shape, allow_newaxis=False, allow_ellipsis=False))
        index = index if isinstance(index, tuple) else (index,)
    else:
        index = (data.draw(hnp.arrays(np.bool_, shape[:1])),)
    repeats = kind == "ints"
    ids = _flat_ids(shape, index)
    g = data.draw(arrays(ids.shape))
    size = math.prod(shape)

    def ref(h):
        return np.bincount(ids.reshape(-1), weights=h.reshape(-1), minlength=size).reshape(shape).astype(h.dtype)

    out, (gg,) = check(lambda t: M.ScatterAdd.apply(t, shape=shape, index=index, repeats=repeats), ref, [g])
    # ScatterAdd's adjoint is GetItem
    np.testing.assert_allclose(gg, _projection(shape)[index], atol=1e-12)


@covers(M.Concatenate, M.GetItem, composites=("split",))
@SOME
@given(data=st.data())
def test_concatenate_and_split_round_trip(data):
    base = list(data.draw(shapes(min_dims=1, max_dims=3, max_side=3, max_size=8)))
    nd = len(base)
    axis = data.draw(st.integers(-nd, nd - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=2, max_size=4), label="sizes")
    pieces_shapes = [tuple(s if i == axis % nd else n for i, n in enumerate(base)) for s in sizes]
    pieces = [data.draw(arrays(s)) for s in pieces_shapes]
    out, grads = check(lambda *xs: tg.concatenate(list(xs), axis=axis),
                       lambda *ys: np.concatenate(ys, axis=axis), pieces)
    v = _projection(out.shape)
    for g, piece in zip(grads, np.split(v, np.cumsum(sizes)[:-1], axis=axis)):
        np.testing.assert_array_equal(g, piece)
    # split undoes concatenate, for list sizes and (when they divide) an int count
    whole = Tensor(out.numpy(), requires_grad=True)
    for part, piece in zip(whole.split(sizes, axis=axis), pieces):
        np.testing.assert_array_equal(part.numpy(), piece)
    check(lambda x: tg.concatenate(list(x.split(sizes, axis=axis))[::-1], axis=axis),
                         lambda y: np.concatenate(np.split(y, np.cumsum(sizes)[:-1], axis=axis)[::-1], axis=axis),
                         [out.numpy()])
    n = out.shape[axis]
    k = data.draw(st.sampled_from([d for d in range(1, 5) if n % d == 0] or [1]))
    if n % k == 0:
        parts = Tensor(out.numpy()).split(k, axis=axis)
        assert len(parts) == k
        for p, q in zip(parts, np.split(out.numpy(), k, axis=axis)):
            np.testing.assert_array_equal(p.numpy(), q)


@covers(M.Concatenate, M.Reshape, composites=("stack",))
@SOME
@given(data=st.data())
def test_stack(data):
    shape = data.draw(shapes(max_size=8))
    k = data.draw(st.integers(2, 3))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [data.draw(arrays(shape)) for _ in range(k)]
    out, grads = check(lambda *ts: tg.stack(list(ts), axis=axis), lambda *ys: np.stack(ys, axis=axis), xs)
    v = _projection(out.shape)
    for i, g in enumerate(grads):
        np.testing.assert_array_equal(g, np.take(v, i, axis=axis))


@covers(M.Pad)
@SOME
@given(data=st.data(), value=st.floats(-3, 3))
def test_pad(data, value):
    shape = data.draw(shapes(max_dims=3, max_side=3, max_size=8))
    form = data.draw(st.sampled_from(["int", "pair", "per_axis"]))
    w = st.integers(0, 2)
    if form == "int":
        width = data.draw(w)
    elif form == "pair":
        width = (data.draw(w), data.draw(w))
    else:
        width = tuple((data.draw(w), data.draw(w)) for _ in shape)
    a = data.draw(arrays(shape))
    out, (g,) = check(lambda x: x.pad(width, value=value),
                      lambda y: np.pad(y, width if width != () else 0, mode="constant", constant_values=value), [a])
    w = np.asarray(width, dtype=np.int64)
    full = np.full((len(shape), 2), int(w)) if w.ndim == 0 else np.tile(w, (len(shape), 1)) if w.shape == (2,) \
        else w.reshape(len(shape), 2)
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(full, shape))
    np.testing.assert_array_equal(g, _projection(out.shape)[inner])
    rim = np.ones(out.shape, bool)
    rim[inner] = False
    np.testing.assert_array_equal(out.numpy()[rim], value)


# ================================================================ matmul
@st.composite
def matmul_shapes(draw):
    n, k, m = (draw(st.integers(0, 3)) for _ in range(3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, min_side=1, max_side=3))
    a = (k,) if draw(st.booleans()) and draw(st.booleans()) else batch.input_shapes[0] + (n, k)
    b = (k,) if draw(st.booleans()) and draw(st.booleans()) else batch.input_shapes[1] + (k, m)
    return a, b


@covers(MM.MatMul)
@MANY
@given(data=st.data())
def test_matmul(data):
    sa, sb = data.draw(matmul_shapes().filter(lambda p: _size_ok(*p)), label="shapes")
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    out, (ga, gb) = check(lambda x, y: x @ y, np.matmul, [a, b])
    if a.ndim == 2 and b.ndim == 2:     # the textbook rules
        v = _projection(out.shape)
        np.testing.assert_allclose(ga, v @ b.T, atol=1e-12)
        np.testing.assert_allclose(gb, a.T @ v, atol=1e-12)


if hasattr(MM, "linear"):
    @covers(MM.Linear)
    @SOME
    @given(data=st.data(), with_bias=st.booleans())
    def test_linear(data, with_bias):
        lead = data.draw(shapes(max_dims=2, max_side=3, max_size=6))
        n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
        x = data.draw(arrays(lead + (n_in,)))
        w = data.draw(arrays((n_out, n_in)))
        if with_bias:
            b = data.draw(arrays((n_out,)))
            check(lambda t, u, c: F.linear(t, u, c), lambda p, q, r: p @ q.T + r, [x, w, b])
        else:
            check(lambda t, u: F.linear(t, u), lambda p, q: p @ q.T, [x, w])


# ================================================================ nn
def _np_log_softmax(a, axis):
    if a.size == 0:
        return a.copy()
    m = a.max(axis=axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


@covers(NN.Softmax, NN.LogSoftmax)
@MANY
@given(data=st.data())
def test_softmax_and_log_softmax(data):
    shape = data.draw(shapes())
    nd = len(shape)
    axis = data.draw(st.integers(-max(nd, 1), max(nd, 1) - 1), label="axis")   # 0-d: 0 or -1, like torch
    a = data.draw(arrays(shape))
    ax = axis if nd else None
    y, (g,) = check(lambda x: F.softmax(x, axis=axis), lambda b: np.exp(_np_log_softmax(b, ax)), [a])
    ly, (lg,) = check(lambda x: F.log_softmax(x, axis=axis), lambda b: _np_log_softmax(b, ax), [a])
    if a.size:
        np.testing.assert_allclose(y.numpy().sum(axis=ax), 1.0, atol=1e-12)       # rows sum to 1
    else:
        assert y.shape == ly.shape == shape                                         # empty in, empty out
    np.testing.assert_allclose(g.sum(axis=ax), 0.0, atol=1e-12)                     # its gradient sums to 0
    np.testing.assert_allclose(lg.sum(axis=ax), 0.0, atol=1e-12)
    assert np.all(ly.numpy() <= 0.0)
    assert np.all((y.numpy() >= 0) & (y.numpy() <= 1))
    np.testing.assert_allclose(np.exp(ly.numpy()), y.numpy(), atol=1e-12)
    c = data.draw(st.floats(-50, 50))                                               # shift invariance
    np.testing.assert_allclose(F.softmax(Tensor(a + c), axis=axis).numpy(), y.numpy(), atol=1e-12)


@covers(NN.CrossEntropy)
@MANY
@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]),
       ignore_index=st.sampled_from([-100, -1, 0]))
def test_cross_entropy(data, reduction, ignore_index):
    lead = data.draw(shapes(max_dims=2, max_side=4, max_size=6), label="lead")
    n_cls = data.draw(st.integers(1, 4))
    logits = data.draw(arrays(lead + (n_cls,)))
    targets = data.draw(hnp.arrays(np.int64, lead, elements=st.integers(0, n_cls - 1)))
    ignored = data.draw(hnp.arrays(np.bool_, lead))
    targets = np.where(ignored, ignore_index, targets)
    valid = targets != ignore_index
    count = int(valid.sum())

    def ref(z):
        ls = _np_log_softmax(z, -1)
        safe = np.where(valid, targets, 0)
        nll = -np.take_along_axis(ls, safe[..., None], axis=-1)[..., 0] * valid
        return nll if reduction == "none" else nll.sum() / count if reduction == "mean" else nll.sum()

    fn = lambda z: F.cross_entropy(z, targets, ignore_index=ignore_index, reduction=reduction)  # noqa: E731
    loss, (g,) = check(fn, ref, [logits], gradcheck=reduction != "mean" or count > 0)
    # ignored rows: no gradient, and changing their logits changes neither the loss nor any gradient
    np.testing.assert_array_equal(g[~valid], 0.0)
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e-12)                    # softmax - onehot
    noise = data.draw(arrays(logits.shape)) * 5 * (~valid)[..., None]
    x2 = Tensor(logits + noise, requires_grad=True)
    loss2 = fn(x2)
    np.testing.assert_allclose(loss2.numpy(), loss.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_grads(loss2, [x2], _projection(loss2.shape))[0], g, rtol=1e-12, atol=1e-12)
    if count:
        assert np.all(loss.numpy() >= 0)


@covers(NN.Dropout)
@FEW
@given(p=st.floats(0.05, 0.9), c=st.floats(0.5, 3.0), seed=st.integers(0, 2 ** 16))
def test_dropout_statistics_and_mask(p, c, seed):
    n = 4000
    tg.manual_seed(seed)
    x = Tensor(np.full(n, c), requires_grad=True)
    out = F.dropout(x, p)
    o = out.numpy()
    scale = 1.0 / (1.0 - p)
    kept = o != 0
    np.testing.assert_allclose(o[kept], c * scale, rtol=1e-12)           # survivors are scaled by 1/(1-p)
    # E[out] = x: the mean is c within 6 standard deviations of a Bernoulli average
    sd = c * math.sqrt(p / (1 - p) / n)
    assert abs(o.mean() - c) < 6 * sd + 1e-12, (o.mean(), c, sd)
    assert abs(kept.mean() - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
    # the gradient is the same mask / (1 - p) pattern
    (g,) = tg.grad(out.sum(), [x])
    np.testing.assert_allclose(g.numpy(), np.where(kept, scale, 0.0), rtol=1e-12)
    assert F.dropout(x, p, training=False) is x and F.dropout(x, 0.0) is x


@covers(NN.Dropout)
@SOME
@given(data=st.data(), p=st.sampled_from([0.2, 0.5, 0.7]), seed=st.integers(0, 2 ** 16))
def test_dropout_shapes_and_gradcheck(data, p, seed):
    a = data.draw(arrays(data.draw(shapes())))

    def fn(x):
        tg.manual_seed(seed)            # the same mask on every call: deterministic for gradcheck
        return F.dropout(x, p)

    out, (g,) = check(fn, lambda y: fn(Tensor(y)).numpy(), [a], f32=False)
    mask = fn(Tensor(np.ones(a.shape))).numpy()
    np.testing.assert_allclose(g, mask * _projection(a.shape), rtol=1e-12)
    assert set(np.unique(mask)) <= {0.0, 1.0 / (1.0 - p)}


def _np_layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    y = y * w if w is not None else y
    return y + b if b is not None else y


@covers(NN.LayerNorm)
@SOME
@given(data=st.data(), has_w=st.booleans(), has_b=st.booleans(), eps=st.sampled_from([1e-5, 1e-3, 0.1]))
def test_layer_norm(data, has_w, has_b, eps):
    lead = data.draw(shapes(max_dims=2, max_side=3, max_size=4))
    dim = data.draw(st.integers(1, 6))
    (x,) = data.draw(distinct_arrays([lead + (dim,)], step=0.15))   # rows never (nearly) constant
    params = [data.draw(arrays((dim,))) for _ in range(has_w + has_b)]

    def fn(t, *ps):
        w = ps[0] if has_w else None
        b = ps[-1] if has_b else None
        return F.layer_norm(t, w, b, eps=eps)

    def ref(y, *ps):
        return _np_layer_norm(y, ps[0] if has_w else None, ps[-1] if has_b else None, eps)

    out, grads = check(fn, ref, [x] + params, tol32=1e-3)
    if not has_w and not has_b and x.size and dim > 1:
        o = out.numpy()
        var = x.var(axis=-1)
        np.testing.assert_allclose(o.mean(axis=-1), 0.0, atol=1e-10)           # mean 0
        np.testing.assert_allclose(o.var(axis=-1), var / (var + eps), rtol=1e-9)  # var 1 up to eps
        if eps <= 1e-3:
            np.testing.assert_allclose(o.var(axis=-1), 1.0, atol=0.2)
        np.testing.assert_allclose(grads[0].sum(axis=-1), 0.0, atol=1e-9)     # shift invariance


@covers(NN.RMSNorm)
@SOME
@given(data=st.data(), has_w=st.booleans(), eps=st.sampled_from([1e-6, 1e-3]))
def test_rms_norm(data, has_w, eps):
    lead = data.draw(shapes(max_dims=2, max_side=3, max_size=4))
    dim = data.draw(st.integers(1, 6))
    x = data.draw(arrays(lead + (dim,), "kinkfree"))                     # no all-(near-)zero rows
    params = [data.draw(arrays((dim,)))] if has_w else []

    def ref(y, *ps):
        out = y / np.sqrt((y * y).mean(axis=-1, keepdims=True) + eps)
        return out * ps[0] if ps else out

    out, _ = check(lambda t, *ps: F.rms_norm(t, ps[0] if ps else None, eps=eps), ref, [x] + params, tol32=1e-3)
    if not has_w and x.size:
        ms = (x * x).mean(axis=-1)
        np.testing.assert_allclose((out.numpy() ** 2).mean(axis=-1), ms / (ms + eps), rtol=1e-9)
        scaled = F.rms_norm(Tensor(x * 3.0), eps=eps * 9.0).numpy()          # scale invariance
        np.testing.assert_allclose(scaled, out.numpy(), rtol=1e-9, atol=1e-12)


@covers(M.GetItem, M.ScatterAdd, composites=("embedding",))
@SOME
@given(data=st.data())
def test_embedding(data):
    num, dim = data.draw(st.integers(1, 5)), data.draw(st.integers(0, 4))
    ids_shape = data.draw(shapes(max_dims=2, max_side=4, max_size=8))
    ids = data.draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, num - 1)))
    w = data.draw(arrays((num, dim)))
    out, (g,) = check(lambda t: F.embedding(t, ids), lambda y: y[ids], [w])
    flat = ids.reshape(-1)
    v = _projection(out.shape).reshape(flat.size, dim)
    expected = np.stack([v[flat == r].sum(axis=0) for r in range(num)]) if dim else np.zeros((num, 0))
    np.testing.assert_allclose(g, expected, atol=1e-12)          # repeated ids add up


if RP is not None:
    @covers(RP.Rope)
    @SOME
    @given(data=st.data())
    def test_rope(data):
        lead = data.draw(shapes(max_dims=2, max_side=2, max_size=4))
        t, half = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
        d = 2 * half
        x = data.draw(arrays(lead + (t, d)))
        cos, sin = RP.rope_tables(t, d, dtype=np.float64)

        def ref(y):
            rot = np.concatenate([-y[..., half:], y[..., :half]], axis=-1)
            return y * cos + rot * sin

        out, _ = check(lambda z: RP.rope(z, cos, sin), ref, [x], tol32=1e-5)
        # a rotation keeps every pair's norm
        o = out.numpy()
        np.testing.assert_allclose(o[..., :half] ** 2 + o[..., half:] ** 2,
                                   x[..., :half] ** 2 + x[..., half:] ** 2, atol=1e-12)


@covers(AT.Attention)
@SOME
@given(data=st.data())
def test_attention(data):
    b, hkv, rep = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    t, start, d = data.draw(st.integers(1, 3)), data.draw(st.integers(0, 2)), data.draw(st.integers(1, 3))
    s = start + t
    q = data.draw(arrays((b, hkv * rep, t, d)))
    k, v = data.draw(arrays((b, hkv, s, d))), data.draw(arrays((b, hkv, s, d)))
    keep = np.asarray(data.draw(hnp.arrays(np.bool_, (b, s))))          # padding: False = a pad key
    masked = (np.arange(s)[None, :] > start + np.arange(t)[:, None])[None, None] | ~keep[:, None, None, :]
    lowest = np.finfo(np.float64).min

    def ref(q_, k_, v_):
        kk, vv = np.repeat(k_, rep, axis=1), np.repeat(v_, rep, axis=1)
        scores = np.where(masked, lowest, q_ @ kk.swapaxes(-1, -2) / math.sqrt(d))
        w = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return (w / w.sum(axis=-1, keepdims=True)) @ vv

    out, grads = check(lambda *z: F.attention(*z, masked), ref, [q, k, v], tol32=1e-4)
    # a query whose keys are all masked gets the uniform average of v, and no gradient to q
    dead = masked.all(axis=-1)[:, 0]                                      # (B, T)
    for bi, ti in zip(*np.nonzero(dead)):
        np.testing.assert_allclose(grads[0][bi, :, ti], 0.0, atol=1e-12)


@covers(AT.BiasedAttention)
@SOME
@given(data=st.data())
def test_attention_with_bias(data):
    """attention with an additive bias on the scores, drawn (B or 1, H or 1, T, S) like the mask (B or
    1, 1, T, S): the formula's values, and gradcheck over q, k, v and the bias. A masked score gives the
    bias no gradient; a query whose keys are all masked gets uniform weights and gives none."""
    b, hkv, rep = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    t, start, d = data.draw(st.integers(1, 3)), data.draw(st.integers(0, 2)), data.draw(st.integers(1, 3))
    s, h = start + t, hkv * rep
    q = data.draw(arrays((b, h, t, d)))
    k, v = data.draw(arrays((b, hkv, s, d))), data.draw(arrays((b, hkv, s, d)))
    bias = data.draw(arrays((data.draw(st.sampled_from([1, b])), data.draw(st.sampled_from([1, h])), t, s)))
    keep = np.asarray(data.draw(hnp.arrays(np.bool_, (b, s))))
    masked = (np.arange(s)[None, :] > start + np.arange(t)[:, None])[None, None] | ~keep[:, None, None, :]
    lowest = np.finfo(np.float64).min

    def ref(q_, k_, v_, bias_):
        kk, vv = np.repeat(k_, rep, axis=1), np.repeat(v_, rep, axis=1)
        scores = np.where(masked, lowest, q_ @ kk.swapaxes(-1, -2) / math.sqrt(d) + bias_)
        w = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return (w / w.sum(axis=-1, keepdims=True)) @ vv

    _, grads = check(lambda *z: F.attention(*z[:3], masked, bias=z[3]), ref, [q, k, v, bias], tol32=1e-4)
    if bias.shape[:2] == (b, h):
        np.testing.assert_array_equal(grads[3][np.broadcast_to(masked, bias.shape)], 0.0)
    dead = masked.all(axis=-1)[:, 0]                                      # (B, T)
    for bi, ti in zip(*np.nonzero(dead)):
        np.testing.assert_allclose(grads[0][bi, :, ti], 0.0, atol=1e-12)


@covers(AT.PackedAttention)
@SOME
@given(data=st.data())
def test_packed_attention(data):
    """packed_attention equals the written-out formula on the heads split from (B, T, 3 H D), with
    causal and padding masks, through whole and row-block scores (ROW_BLOCK drawn small)."""
    b, h, t, d = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)), data.draw(st.integers(1, 5)),
                  data.draw(st.integers(1, 3)))
    scale = data.draw(st.sampled_from([None, 1.0]))
    qkv = data.draw(arrays((b, t, 3 * h * d)))
    keep = np.asarray(data.draw(hnp.arrays(np.bool_, (b, t))))
    masked = (np.arange(t)[None, :] > np.arange(t)[:, None])[None, None] | ~keep[:, None, None, :]
    lowest = np.finfo(np.float64).min
    factor = 1.0 / math.sqrt(d) if scale is None else scale

    def ref(z):
        q, k, v = (z[..., i * h * d:(i + 1) * h * d].reshape(b, t, h, d).swapaxes(1, 2) for i in range(3))
        scores = np.where(masked, lowest, q @ k.swapaxes(-1, -2) * factor)
        w = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return ((w / w.sum(axis=-1, keepdims=True)) @ v).swapaxes(1, 2).reshape(b, t, h * d)

    saved = attention_kernel.ROW_BLOCK
    attention_kernel.ROW_BLOCK = data.draw(st.sampled_from([1, 2, 128]))
    try:
        check(lambda z: F.packed_attention(z, h, masked, scale=scale), ref, [qkv], tol32=1e-4)
    finally:
        attention_kernel.ROW_BLOCK = saved


# ================================================================ the strategies reach the edge cases
_FIND = settings(max_examples=2000, database=None, derandomize=True)


def test_strategies_reach_edge_cases():
    """Guard against a strategy silently losing the edge cases the suite is meant to cover."""
    some_array = shapes().flatmap(lambda s: arrays(s))
    assert not find(some_array, lambda a: not a.flags.c_contiguous and a.size > 1, settings=_FIND).flags.c_contiguous
    assert find(some_array, lambda a: any(s < 0 for s in a.strides) and a.size > 1, settings=_FIND).size > 1
    assert find(shapes(), lambda s: len(s) == 0, settings=_FIND) == ()
    assert 0 in find(shapes(), lambda s: 0 in s and len(s) >= 2, settings=_FIND)
    assert 1 in find(shapes(), lambda s: 1 in s and len(s) >= 2, settings=_FIND)
    pair = find(broadcast_pairs(), lambda b: len(b.input_shapes[0]) != len(b.input_shapes[1])
                and 1 in b.input_shapes[0] + b.input_shapes[1], settings=_FIND)
    assert pair.input_shapes[0] != pair.input_shapes[1]
    ax = find(reduce_axes(3), lambda a: isinstance(a, tuple) and len(a) >= 2 and min(a) < 0, settings=_FIND)
    assert min(ax) < 0
    idx = find(int_array_index(4), lambda i: i.ndim == 2, settings=_FIND)
    assert len(np.unique(idx % 4)) < idx.size
    mm = find(matmul_shapes(), lambda p: len(p[0]) == 1 and len(p[1]) > 2, settings=_FIND)
    assert len(mm[1]) > 2


# ================================================================ every op is covered
def _function_classes():
    found, stack = set(), list(Function.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("tinygrad_reason.ops") and not cls.__name__.startswith("_"):
            found.add(cls)
    return found


REQUIRED_COMPOSITES = {"mean", "var", "squeeze", "unsqueeze", "stack", "split", "embedding", "masked_fill",
                       "transpose"}


def test_every_op_has_a_hypothesis_test():
    declared, composites = set(), set()
    for name, obj in list(globals().items()):
        if name.startswith("test_") and hasattr(obj, "_covers"):
            declared |= obj._covers
            composites |= obj._composites
            if obj._covers_param is not None:
                for fns in obj._covers_param[1].values():
                    declared |= set(fns)
    expected = {f for f in _function_classes() if f.__name__ != "ToDevice"}
    missing = sorted(f.__name__ for f in expected - declared)
    assert not missing, f"ops without a hypothesis test in this file: {missing}"
    assert declared <= expected, sorted(f.__name__ for f in declared - expected)
    assert REQUIRED_COMPOSITES <= composites, sorted(REQUIRED_COMPOSITES - composites)
