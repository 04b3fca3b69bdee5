"""The chunked, threaded paths of the fused ops (ops/kernels.py parallel_units).

The registry's small shapes run as one chunk on the calling thread. Here the chunk size and the
parallel threshold are shrunk so that the same ops run in many chunks over two threads, and the
results must be (a) bit-identical to one thread — chunk boundaries do not depend on the thread
count, so the run-to-run determinism that resume relies on holds with threads — and (b) equal to
torch in float64 and float32.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason import Tensor, backend, functional as F
from tinygrad_reason.ops import attention as attention_op, kernels, nn as nn_ops

torch = pytest.importorskip("torch")


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(kernels, "PARALLEL_MIN", 0)
    monkeypatch.setattr(attention_op, "CHUNK_ELEMENTS", 40)   # a few units per chunk
    monkeypatch.setattr(nn_ops, "ROW_CHUNK_ELEMENTS", 24)     # a few rows per chunk
    before = backend.num_threads()
    yield
    tg.set_num_threads(before)


def _run(fn, arrays, upstream, threads):
    tg.set_num_threads(threads)
    tg.manual_seed(3)
    ins = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*ins)
    out.backward(Tensor(upstream))
    return [out.numpy()] + [t.grad.numpy() for t in ins]


def _masked(b, t, s):
    causal = np.arange(s)[None, :] > np.arange(t)[:, None]
    pad = np.ones((b, s), dtype=bool)
    pad[0, :2] = False                 # row 0: two pad keys, so its query 0 and 1 see nothing at all
    return causal[None, None] | ~pad[:, None, None, :]


def _torch_attention(q, k, v, masked, p=0.0):
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(torch.from_numpy(masked), torch.finfo(q.dtype).min)
    return scores.softmax(-1) @ v


CASES = {
    "attention_gqa_padding": (
        lambda q, k, v: F.attention(q, k, v, _masked(3, 5, 5)),
        lambda q, k, v: _torch_attention(q, k, v, _masked(3, 5, 5)),
        [(3, 4, 5, 8), (3, 2, 5, 8), (3, 2, 5, 8)]),
    "layer_norm": (
        lambda x, w, b: F.layer_norm(x, w, b), lambda x, w, b: torch.nn.functional.layer_norm(x, (6,), w, b),
        [(4, 7, 6), (6,), (6,)]),
    "rms_norm": (
        lambda x, w: F.rms_norm(x, w), lambda x, w: torch.nn.functional.rms_norm(x, (6,), w, eps=1e-6),
        [(4, 7, 6), (6,)]),
    "cross_entropy": (
        lambda x: F.cross_entropy(x, np.arange(28).reshape(4, 7) % 5),
        lambda x: torch.nn.functional.cross_entropy(x.reshape(28, 5), torch.arange(28) % 5),
        [(4, 7, 5)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_threads_bit_identical_to_one(name, tiny_chunks):
    ours, _, shapes = CASES[name]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    probe = ours(*[Tensor(a) for a in arrays])
    upstream = rng.standard_normal(probe.shape).astype(np.float32)
    one = _run(ours, arrays, upstream, threads=1)
    two = _run(ours, arrays, upstream, threads=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_threaded_matches_torch(name, dtype, tiny_chunks):
    ours, theirs, shapes = CASES[name]
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    probe = ours(*[Tensor(a) for a in arrays])
    upstream = rng.standard_normal(probe.shape).astype(dtype)
    got = _run(ours, arrays, upstream, threads=2)
    tin = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = theirs(*tin)
    out.backward(torch.from_numpy(upstream).reshape(out.shape))
    want = [out.detach().numpy().reshape(got[0].shape)] + [t.grad.numpy() for t in tin]
    tol = 1e-10 if dtype == np.float64 else 2e-5
    for what, a, b in zip(["output"] + [f"grad {i}" for i in range(len(tin))], got, want):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{name} {what}")


def test_attention_dropout_same_with_threads(tiny_chunks):
    """The dropout draw is made before the chunks are split, so threads do not change it."""
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((2, 2, 6, 4)).astype(np.float32) for _ in range(3)]
    fn = lambda q, k, v: F.attention(q, k, v, _masked(2, 6, 6)[:1], dropout_p=0.3)  # noqa: E731
    upstream = rng.standard_normal((2, 2, 6, 4)).astype(np.float32)
    for a, b in zip(_run(fn, arrays, upstream, 1), _run(fn, arrays, upstream, 2)):
        np.testing.assert_array_equal(a, b)


def test_worker_exception_reaches_the_caller(tiny_chunks):
    tg.set_num_threads(2)
    calls = []

    def work(lo, hi, scratch):
        calls.append(lo)
        if lo == 6:                      # the worker thread's last chunk
            raise ValueError(f"boom in chunk {lo}")

    with pytest.raises(ValueError, match="boom in chunk"):
        kernels.parallel_units(8, 1, 2, work, np, np.float32)
    assert sorted(calls) == [0, 2, 4, 6]


def _adamw_reference(p, grads, lr, betas, eps, wd):
    """torch.optim.AdamW's update written out on whole arrays."""
    import math
    b1, b2 = betas
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        p *= 1.0 - lr * wd
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * g * g
        denom = np.sqrt(v)
        denom /= math.sqrt(1.0 - b2 ** t)
        denom += eps
        p -= lr / (1.0 - b1 ** t) * (m / denom)
    return p


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("transposed", [False, True])
def test_adamw_chunked_update_equals_whole_array_formula(threads, transposed, tiny_chunks, monkeypatch):
    from tinygrad_reason import optim
    monkeypatch.setattr(optim, "UPDATE_CHUNK", 1000)          # many chunks, split over the threads
    tg.set_num_threads(threads)
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal((40, 70)).astype(np.float32)
    grads = [rng.standard_normal((40, 70)).astype(np.float32) for _ in range(3)]
    data = p0.T.copy().T if transposed else p0.copy()           # a non-contiguous parameter is written back
    p = Tensor(data, requires_grad=True)
    opt = optim.AdamW([p], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for g in grads:
        p.grad = Tensor(g.copy())
        opt.step()
    np.testing.assert_allclose(p.numpy(), _adamw_reference(p0, grads, 1e-2, (0.9, 0.95), 1e-8, 0.1),
                               rtol=1e-6, atol=1e-7)


def test_attention_backward_does_not_read_a_cache_written_after_forward():
    """Keys/values read from a KV cache are views; with a graph recorded, the op keeps its own
    copies, so writing the cache again (a new sequence) before backward changes no gradient."""
    rng = np.random.default_rng(5)
    q0 = rng.standard_normal((2, 2, 4, 8))
    cache_k, cache_v = rng.standard_normal((2, 2, 4, 8)), rng.standard_normal((2, 2, 4, 8))

    def grad_q(overwrite):
        k_arr, v_arr = cache_k.copy(), cache_v.copy()
        q = Tensor(q0.copy(), requires_grad=True)
        out = F.attention(q, Tensor(k_arr), Tensor(v_arr), _masked(2, 4, 4))
        if overwrite:
            k_arr[...] = 0.0
            v_arr[...] = 0.0
        out.backward(Tensor(np.ones(out.shape)))
        return q.grad.numpy()

    np.testing.assert_array_equal(grad_q(True), grad_q(False))


def test_adamw_non_contiguous_moments_are_written_back():
    """A parameter whose moments were created non-contiguous (zeros_like of a transposed array) and
    whose data is contiguous now: the update must still land in the optimizer's state."""
    from tinygrad_reason import optim
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal((5, 7)).astype(np.float32)
    grads = [rng.standard_normal((5, 7)).astype(np.float32) for _ in range(3)]
    p = Tensor(np.asfortranarray(p0), requires_grad=True)
    opt = optim.AdamW([p], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    p.grad = Tensor(grads[0].copy())
    opt.step()
    p.data = np.ascontiguousarray(p.data)                 # e.g. weights reloaded
    assert not opt.state[0]["exp_avg"].flags.c_contiguous
    for g in grads[1:]:                                   # the third step reads the second's moments
        p.grad = Tensor(g.copy())
        opt.step()
    np.testing.assert_allclose(p.numpy(), _adamw_reference(p0, grads, 1e-2, (0.9, 0.95), 1e-8, 0.1),
                               rtol=1e-6, atol=1e-7)
