"""The Tensor / engine contract: accumulation, retained graphs, freeing, higher order, grad(), the walk."""
import gc
import sys
import time
import weakref

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason import Tensor, functional as F
from tinygrad_reason.tensor import Step, backward_steps


def leaf(shape=(3,), seed=0, dtype=np.float64):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype), requires_grad=True)


# ---------------------------------------------------------------- accumulation and zeroing
def test_leaf_grads_accumulate_across_backward_calls():
    x = leaf()
    (x * x).sum().backward()
    first = x.grad.numpy().copy()
    np.testing.assert_allclose(first, 2 * x.numpy())
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * x.numpy())
    (3.0 * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * x.numpy() + 3.0)


@pytest.mark.parametrize("reset", ["assign_none", "zero_grad"])
def test_zeroing_grad_restarts_accumulation(reset):
    x = leaf()
    (x * x).sum().backward()
    if reset == "assign_none":
        x.grad = None
    else:
        x.zero_grad()
    assert x.grad is None
    (5.0 * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 5.0))


def test_intermediates_have_no_grad_unless_retained():
    x = leaf()
    h = x * 2.0
    k = h.exp().retain_grad()
    assert k is not None and k.requires_grad
    y = (k * h).sum()
    y.backward()
    assert h.grad is None
    assert y.grad is None
    # k retained: d(sum(k * h))/dk = h
    np.testing.assert_allclose(k.grad.numpy(), h.numpy())
    assert x.grad is not None
    assert x.is_leaf and not h.is_leaf and h.op == "Mul"


def test_retained_intermediate_grad_accumulates_with_retain_graph():
    x = leaf()
    h = (x * 3.0).retain_grad()
    y = (h * h).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * 2 * h.numpy())


# ---------------------------------------------------------------- retain_graph
def test_second_backward_without_retain_graph_is_a_clear_error():
    x = leaf()
    y = (x.tanh() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph") as e:
        y.backward()
    assert "second time" in str(e.value)


def test_retain_graph_allows_second_backward_and_grads_double():
    x = leaf()
    y = (x.tanh() * x).sum()
    y.backward(retain_graph=True)
    once = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * once)
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()  # the second call did not retain


# ---------------------------------------------------------------- freeing
def test_contexts_are_released_after_backward():
    x = leaf((4,))
    h = x.relu()
    y = (h * h).sum()
    ctxs = [y._ctx, y._ctx.parents[0]._ctx, h._ctx]
    mask_ref = weakref.ref(h._ctx.mask)
    assert all(not c.released for c in ctxs)
    y.backward()
    for c in ctxs:
        assert c.released
        assert c.parents is None
        assert not c.__dict__  # saved arrays gone
    gc.collect()
    assert mask_ref() is None, "relu's saved mask is still alive after backward"


def test_retain_graph_keeps_saved_arrays():
    x = leaf((4,))
    h = x.relu()
    y = (h * h).sum()
    y.backward(retain_graph=True)
    assert not h._ctx.released
    assert h._ctx.mask is not None
    assert y._ctx.parents is not None


def _build(retain_graph):
    x = leaf((64,))
    h = x.tanh()          # the intermediate activation we watch
    ref = weakref.ref(h)
    y = (h * h).sum()
    del h
    y.backward(retain_graph=retain_graph)
    return x, y, ref


def test_intermediate_activation_is_freed_by_backward():
    x, y, ref = _build(retain_graph=False)
    gc.collect()
    # the output y is still alive, but backward cut it from the graph: h must be gone already
    assert ref() is None, "backward kept the intermediate activation alive"
    assert y.requires_grad and x.grad is not None


def test_intermediate_activation_freed_once_output_dropped_even_with_retained_graph():
    # control: with retain_graph the graph (hence h) lives as long as y, which shows the test above can fail
    x, y, ref = _build(retain_graph=True)
    gc.collect()
    assert ref() is not None
    del y
    gc.collect()  # no reference cycle should be needed for this, but collect to be sure
    assert ref() is None


def test_graph_freed_without_gc_when_output_dropped():
    # the graph holds no reference cycles (Function.output is a weakref): refcounting alone frees it
    x = leaf((8,))
    h = x.exp()
    ref = weakref.ref(h)
    y = (h * 2.0).sum()
    del h
    gc.disable()
    try:
        del y
        assert ref() is None
    finally:
        gc.enable()


# ---------------------------------------------------------------- higher order
def test_create_graph_second_derivative_of_cube():
    x = Tensor(np.array([-1.5, 0.5, 2.0]), requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    g = x.grad
    assert g.requires_grad
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2)
    x.grad = None
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.numpy())


def test_grad_create_graph_third_derivative():
    x = Tensor(np.array([0.3, -1.2]), requires_grad=True)
    y = (x ** 4).sum()
    (g1,) = tg.grad(y, [x], create_graph=True)
    (g2,) = tg.grad(g1.sum(), [x], create_graph=True)
    (g3,) = tg.grad(g2.sum(), [x])
    np.testing.assert_allclose(g1.numpy(), 4 * x.numpy() ** 3)
    np.testing.assert_allclose(g2.numpy(), 12 * x.numpy() ** 2)
    np.testing.assert_allclose(g3.numpy(), 24 * x.numpy())
    assert g1.requires_grad and g2.requires_grad
    assert not g3.requires_grad


def test_without_create_graph_grad_does_not_require_grad():
    x = leaf()
    (x ** 3).sum().backward()
    assert not x.grad.requires_grad
    assert x.grad.is_leaf


# ---------------------------------------------------------------- tg.grad
def test_grad_returns_grads_without_touching_dot_grad():
    x, w = leaf((3,), 1), leaf((3,), 2)
    w.grad = Tensor(np.full(3, 7.0))
    gx, gw = tg.grad((x * w).sum(), [x, w])
    np.testing.assert_allclose(gx.numpy(), w.numpy())
    np.testing.assert_allclose(gw.numpy(), x.numpy())
    assert x.grad is None
    np.testing.assert_allclose(w.grad.numpy(), np.full(3, 7.0))


def test_grad_single_input_returns_tensor_not_tuple():
    x = leaf()
    g = tg.grad((x * x).sum(), x)
    assert isinstance(g, Tensor)
    np.testing.assert_allclose(g.numpy(), 2 * x.numpy())


def test_grad_allow_unused():
    x, unused = leaf((3,), 1), leaf((2,), 2)
    with pytest.raises(RuntimeError, match="allow_unused") as e:
        tg.grad((x * x).sum(), [x, unused])
    assert "input 1" in str(e.value)
    gx, gu = tg.grad((x * x).sum(), [x, unused], allow_unused=True)
    assert gu is None
    np.testing.assert_allclose(gx.numpy(), 2 * x.numpy())


def test_grad_of_intermediate_and_grad_outputs():
    x = leaf((2, 2))
    h = x * 3.0
    y = h.exp()
    v = np.array([[1.0, 2.0], [3.0, 4.0]])
    gh, gx = tg.grad(y, [h, x], grad_outputs=Tensor(v))
    np.testing.assert_allclose(gh.numpy(), v * np.exp(h.numpy()))
    np.testing.assert_allclose(gx.numpy(), 3 * v * np.exp(h.numpy()))


def test_grad_multiple_outputs_sum():
    x = leaf()
    g = tg.grad([(x * x).sum(), (2.0 * x).sum()], [x])[0]
    np.testing.assert_allclose(g.numpy(), 2 * x.numpy() + 2)


# ---------------------------------------------------------------- deep graphs
def test_100k_deep_chain_backward_no_recursion():
    limit = sys.getrecursionlimit()
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x
    n = 100_000
    for _ in range(n):
        y = y * 1.0          # 100,000 ops in one chain
    assert sys.getrecursionlimit() == limit
    t0 = time.perf_counter()
    y.sum().backward()
    elapsed = time.perf_counter() - t0
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])
    assert elapsed < 60, f"backward over {n} ops took {elapsed:.1f}s"
    del y   # dropping a freed chain must not recurse either
    gc.collect()


def test_deep_chain_with_real_derivative():
    # d/dx of x * 1.0001^n along a 20k chain
    x = Tensor(np.array(0.7), requires_grad=True)
    y = x
    for _ in range(20_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 1.0001 ** 20_000, rtol=1e-9)


# ---------------------------------------------------------------- graph shapes
def test_diamond_shared_subexpression_sums_grads():
    x = Tensor(np.array([0.5, -2.0, 3.0]), requires_grad=True)
    a = x * 2.0
    b = x * 3.0
    y = (a * b).sum()          # 6 x^2
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 12 * x.numpy())


def test_same_tensor_used_many_times():
    x = Tensor(np.array([1.5, -0.5]), requires_grad=True)
    h = x.tanh()
    y = (h * h + h + h * 2.0).sum()    # h^2 + 3h
    y.backward()
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), (2 * t + 3) * (1 - t * t))


def test_x_times_x_and_x_plus_x():
    x = Tensor(np.array([2.0, 3.0]), requires_grad=True)
    (x * x + x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 2)


def test_unused_branch_gets_no_grad():
    x, z = leaf((3,), 1), leaf((3,), 2)
    _ = z * 2.0          # in no path to y
    y = (x * 2.0).sum()
    y.backward()
    assert z.grad is None


# ---------------------------------------------------------------- broadcasting
@pytest.mark.parametrize("sa, sb", [
    ((3, 1), (4,)),            # size-1 dim and leading dim
    ((2, 3), (5, 2, 3)),       # leading dims only
    ((5, 1, 3), (5, 4, 3)),    # size-1 in the middle
    ((1, 1), (2, 3)),          # all size-1
    ((), (2, 3)),              # 0-d
    ((4, 1, 1), (1, 3, 2)),    # both broadcast
])
def test_broadcast_grads_are_summed_to_shape(sa, sb):
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal(sa), rng.standard_normal(sb)
    a, b = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == sa and b.grad.shape == sb
    full = np.broadcast_shapes(sa, sb)
    bb, ba = np.broadcast_to(b_np, full), np.broadcast_to(a_np, full)

    def sum_to(arr, shape):
        lead = arr.ndim - len(shape)
        arr = arr.sum(axis=tuple(range(lead)))
        return arr.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)
    np.testing.assert_allclose(a.grad.numpy(), sum_to(bb, sa))
    np.testing.assert_allclose(b.grad.numpy(), sum_to(ba, sb))


def test_broadcast_add_counts_repeats():
    a = Tensor(np.zeros((3, 1)), requires_grad=True)
    b = Tensor(np.zeros(4), requires_grad=True)
    (a + b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.full((3, 1), 4.0))
    np.testing.assert_allclose(b.grad.numpy(), np.full(4, 3.0))


def test_broadcast_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a_np, b_np = rng.standard_normal((2, 1, 3)), rng.standard_normal((4, 1))
    a, b = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    ((a - b) / (b * b + 1.0)).sum().backward()
    ta, tb = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    ((ta - tb) / (tb * tb + 1.0)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-12)


# ---------------------------------------------------------------- dtypes
def test_float32_float64_mixing_promotes_and_keeps_input_grad_dtype():
    f = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    d = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    y = f * d
    assert y.dtype == np.float64 == np.result_type(np.float32, np.float64)
    y.sum().backward()
    assert f.grad.dtype == np.float32
    assert d.grad.dtype == np.float64
    np.testing.assert_allclose(f.grad.numpy(), [3.0, 4.0])


def test_python_scalars_keep_float32():
    f = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    for out in (f * 2.5, 2.5 * f, f + 1, 2 - f, 2 / f, 2 ** f, f ** 2, -f, f / 3.0, f * np.float64(2.0)):
        assert out.dtype == np.float32, out
    (f * 2.5).sum().backward()
    assert f.grad.dtype == np.float32


def test_float32_mixing_matches_torch_promotion():
    torch = pytest.importorskip("torch")
    ours = (Tensor(np.ones(2, np.float32)) * Tensor(np.ones(2, np.float64))).dtype
    theirs = (torch.ones(2, dtype=torch.float32) * torch.ones(2, dtype=torch.float64)).dtype
    assert str(theirs) == "torch." + str(ours)


def test_tensor_from_python_lists():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor([[1.5]]).dtype == np.float32
    assert Tensor(2.5).dtype == np.float32
    assert Tensor([1, 2, 3]).dtype == np.int64
    assert Tensor(7).dtype == np.int64
    assert Tensor([1, 2.5]).dtype == np.float32
    assert Tensor([True, False]).dtype == np.bool_
    assert Tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert Tensor(np.array([1.0])).dtype == np.float64    # arrays keep their dtype
    assert Tensor([1.0, 2.0]).shape == (2,)


# ---------------------------------------------------------------- grad mode
def test_no_grad_records_no_graph():
    x = leaf()
    with tg.no_grad():
        assert not tg.is_grad_enabled()
        y = (x * 2.0).exp().sum()
    assert tg.is_grad_enabled()
    assert not y.requires_grad
    assert y.is_leaf and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_as_decorator_and_nesting():
    x = leaf()

    @tg.no_grad()
    def f(t):
        assert not tg.is_grad_enabled()
        with tg.enable_grad():
            inner = t * 2.0
        return t * 3.0, inner

    for _ in range(2):   # the decorator must work on every call
        out, inner = f(x)
        assert not out.requires_grad
        assert inner.requires_grad
        assert tg.is_grad_enabled()


def test_no_grad_restores_mode_after_exception():
    with pytest.raises(ZeroDivisionError):
        with tg.no_grad():
            1 / 0
    assert tg.is_grad_enabled()


def test_backward_inside_no_grad_still_works():
    x = leaf()
    y = (x * x).sum()
    with tg.no_grad():
        y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy())
    assert not x.grad.requires_grad


def test_detach():
    x = leaf()
    h = x * 2.0
    d = h.detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.data, h.data)
    y = (d * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), d.numpy())   # no gradient flowed through d


def test_requires_grad_off_only_on_leaves():
    x = leaf()
    x.requires_grad = False
    assert not (x * 2.0).requires_grad
    y = leaf() * 2.0
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad = False


# ---------------------------------------------------------------- conversions
def test_numpy_item_tolist():
    x = Tensor(np.array([[1.0, 2.0]]))
    a = x.numpy()
    assert isinstance(a, np.ndarray) and a.shape == (1, 2)
    assert x.tolist() == [[1.0, 2.0]]
    assert Tensor(np.array(3.5)).item() == 3.5
    assert isinstance(Tensor(np.array(3.5)).item(), float)
    assert Tensor([[4]]).item() == 4 and isinstance(Tensor([[4]]).item(), int)
    with pytest.raises(ValueError, match=r"item.*\(1, 2\)"):
        x.item()


def test_to_cpu_is_a_noop():
    x = leaf()
    assert x.to("cpu") is x
    assert x.cpu() is x
    assert x.device == "cpu"


# ---------------------------------------------------------------- seeding
def test_manual_seed_makes_random_reproducible():
    def draw():
        x = tg.randn(3, 4)
        u = tg.rand(5)
        d = F.dropout(tg.ones(100), p=0.5)
        return x.numpy(), u.numpy(), d.numpy()

    tg.manual_seed(123)
    a = draw()
    tg.manual_seed(123)
    b = draw()
    tg.manual_seed(124)
    c = draw()
    for p, q, r in zip(a, b, c):
        np.testing.assert_array_equal(p, q)
        assert not np.array_equal(p, r)
    assert a[0].dtype == np.float32
    assert set(np.unique(a[2])) <= {0.0, 2.0}
    assert 0 < (a[2] == 0).sum() < 100


def test_draws_advance_between_calls():
    tg.manual_seed(5)
    assert not np.array_equal(tg.randn(4).numpy(), tg.randn(4).numpy())


# ---------------------------------------------------------------- operators
def test_operator_overloads_values_and_grads():
    xv = np.array([0.5, 1.5, 2.0])
    x = Tensor(xv, requires_grad=True)
    cases = [
        (lambda t: 2 - t, 2 - xv, -np.ones(3)),
        (lambda t: 2 / t, 2 / xv, -2 / xv ** 2),
        (lambda t: 2 ** t, 2 ** xv, np.log(2) * 2 ** xv),
        (lambda t: -t, -xv, -np.ones(3)),
        (lambda t: 3 * t + 1, 3 * xv + 1, 3 * np.ones(3)),
        (lambda t: t - 1, xv - 1, np.ones(3)),
        (lambda t: 1 + t, 1 + xv, np.ones(3)),
        (lambda t: t ** 2, xv ** 2, 2 * xv),
        (lambda t: t ** 0.5, xv ** 0.5, 0.5 / np.sqrt(xv)),
        (lambda t: abs(-t), xv, np.ones(3)),
        (lambda t: t / t, np.ones(3), np.zeros(3)),
    ]
    for f, val, der in cases:
        x.grad = None
        y = f(x)
        np.testing.assert_allclose(y.numpy(), val, rtol=1e-12)
        y.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), der, rtol=1e-12, atol=1e-15)


def test_matmul_operator():
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    a, b = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    y = a @ b
    np.testing.assert_allclose(y.numpy(), a_np @ b_np)
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.ones((2, 4)) @ b_np.T)
    np.testing.assert_allclose(b.grad.numpy(), a_np.T @ np.ones((2, 4)))
    v = Tensor(rng.standard_normal(3))
    np.testing.assert_allclose((a @ v).numpy(), a_np @ v.numpy())
    assert (v @ v).shape == ()


def test_comparisons_give_bool_tensors_outside_graph():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = Tensor(np.array([3.0, 2.0, 1.0]), requires_grad=True)
    for out, want in [(x < y, [1, 0, 0]), (x <= y, [1, 1, 0]), (x > y, [0, 0, 1]),
                      (x >= y, [0, 1, 1]), (x == y, [0, 1, 0]), (x != y, [1, 0, 1]),
                      (x > 1.5, [0, 1, 1]), (2.0 < x, [0, 0, 1])]:
        assert out.dtype == np.bool_
        assert not out.requires_grad and out.is_leaf
        np.testing.assert_array_equal(out.numpy(), np.array(want, dtype=bool))
    # __eq__ is elementwise but tensors stay hashable by identity
    assert len({x, y, x}) == 2


# ---------------------------------------------------------------- grad buffers
def _assert_independent(a, b):
    assert a.grad.data.flags.writeable and b.grad.data.flags.writeable
    assert not np.shares_memory(a.grad.data, b.grad.data)
    before = b.grad.numpy().copy()
    a.grad.data[...] += 100.0        # in-place, like an optimizer or grad clipping would
    np.testing.assert_array_equal(b.grad.numpy(), before)


def test_leaf_grads_not_aliased_through_add():
    a, b = leaf((3,), 1), leaf((3,), 2)
    (a + b).sum().backward()
    _assert_independent(a, b)


def test_leaf_grads_not_aliased_through_views():
    a, b = leaf((3,), 1), leaf((3, 1), 2)
    (a.reshape(3, 1) + b.expand(3, 1)).sum().backward()
    _assert_independent(a, b)
    c, d = leaf((1, 3), 3), leaf((2, 3), 4)
    (c.expand(2, 3) * 1.0 + d).sum().backward()
    _assert_independent(c, d)


def test_leaf_grad_writable_after_sum_broadcast():
    x = leaf((2, 3))
    x.sum().backward()            # sum's backward is a read-only broadcast view
    assert x.grad.data.flags.writeable
    x.grad.data[0, 0] = 5.0
    assert x.grad.numpy()[0, 0] == 5.0 and x.grad.numpy()[1, 1] == 1.0


def test_leaf_grads_not_aliased_with_create_graph():
    a, b = leaf((3,), 1), leaf((3,), 2)
    (a + b).sum().backward(create_graph=True)
    assert a.grad is not b.grad
    _assert_independent(a, b)
    x = leaf((2, 3))
    x.sum().backward(create_graph=True)
    assert x.grad.data.flags.writeable


def test_leaf_grad_not_aliased_with_callers_grad_argument():
    a, b = leaf((3,), 1), leaf((3,), 2)
    g = np.ones(3)
    (a + b).backward(g)
    assert not np.shares_memory(a.grad.data, g) and not np.shares_memory(b.grad.data, g)
    _assert_independent(a, b)
    x = leaf((3,))
    gt = Tensor(np.full(3, 2.0))
    x.backward(gt)                # backward on the leaf itself
    np.testing.assert_array_equal(x.grad.numpy(), gt.numpy())
    x.grad.data[...] = 0.0
    np.testing.assert_array_equal(gt.numpy(), np.full(3, 2.0))


def test_grad_argument_accepts_tensor_list_and_array():
    x = leaf((2,))
    (x * 3.0).backward([1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 6.0])
    assert x.grad.dtype == np.float64


# ---------------------------------------------------------------- the walk
def _graph():
    x = Tensor(np.array([0.2, -0.7, 1.1]), requires_grad=True)
    w = Tensor(np.array([1.5, 0.5, -2.0]), requires_grad=True)
    h = (x * w).tanh()
    y = (h * h + h).sum()
    return x, w, h, y


def test_backward_steps_fully_consumed_equals_backward():
    x1, w1, _, y1 = _graph()
    y1.backward()
    x2, w2, h2, y2 = _graph()
    steps = list(backward_steps(y2))
    assert all(isinstance(s, Step) for s in steps)
    np.testing.assert_array_equal(x2.grad.numpy(), x1.grad.numpy())
    np.testing.assert_array_equal(w2.grad.numpy(), w1.grad.numpy())
    # one step per node: y (Sum), Add, Mul(h*h), h (Tanh), Mul(x*w), x, w
    assert len(steps) == 7
    assert steps[0].tensor is y2 and steps[0].op == "Sum"
    np.testing.assert_array_equal(steps[0].grad.numpy(), 1.0)
    by_tensor = {id(s.tensor): s for s in steps}
    assert by_tensor[id(x2)].op == "leaf" and by_tensor[id(x2)].passed == []
    hs = by_tensor[id(h2)]
    t = np.tanh(x2.numpy() * w2.numpy())
    np.testing.assert_allclose(hs.grad.numpy(), 2 * t + 1)     # d(h^2 + h)/dh, summed over both uses
    (parent, pg), = hs.passed
    assert parent.op == "Mul"
    np.testing.assert_allclose(pg.numpy(), (2 * t + 1) * (1 - t * t))
    assert "Tanh" in repr(hs)


def test_backward_steps_order_is_topological():
    _, _, _, y = _graph()
    seen = set()
    for s in backward_steps(y):
        # a node is visited only after every node it passes a gradient to... is still unvisited
        for parent, _ in s.passed:
            assert id(parent) not in seen, "a parent was visited before its child"
        seen.add(id(s.tensor))


def test_backward_steps_lazy_until_consumed():
    x, w, _, y = _graph()
    walk = backward_steps(y)
    first = next(walk)
    assert first.tensor is y
    assert x.grad is None and w.grad is None     # leaves not reached yet
    for _ in walk:
        pass
    assert x.grad is not None and w.grad is not None


@pytest.mark.parametrize("table, ids", [
    ((50, 16), np.random.default_rng(0).integers(0, 50, size=(8, 64))),           # an embedding's backward
    ((7, 3, 2), np.array([[-1, 0, 6], [6, -7, 3]])),                                # negative ids, 3-d table
    ((5, 4), np.array([4, 4, 4, 0], dtype=np.uint8)),                             # unsigned ids
    ((5, 4), np.zeros((0,), dtype=np.int64)),                                     # no ids
])
def test_row_scatter_add_is_np_add_at_bit_for_bit(table, ids):
    # getitem's backward with one integer array on axis 0 flattens to np.add.at's 1-d fast path:
    # the same float32 additions in the same order as np.add.at on the table
    g = np.random.default_rng(1).standard_normal(ids.shape + table[1:]).astype(np.float32) * 1e3
    x = Tensor(np.zeros(table, dtype=np.float32), requires_grad=True)
    x[ids].backward(Tensor(g))
    expected = np.zeros(table, dtype=np.float32)
    np.add.at(expected, ids, g)
    assert x.grad.numpy().tobytes() == expected.tobytes()
