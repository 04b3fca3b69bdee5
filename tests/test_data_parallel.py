"""parallel.data_parallel_backward: the batch split over threads gives the whole batch's gradient.

In float64 the shard sum equals one backward of the whole batch to rounding (1e-12); a step
repeats bit for bit; dropout draws repeat with the seed; grad mode is per thread, so a shard's
backward (which records nothing) cannot switch off recording in another shard's forward.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason.fast import threads
from tinygrad_reason import Tensor, backend
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.parallel import data_parallel_backward


def _model(dropout: float = 0.0, seed: int = 0):
    tg.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=23, context_length=12, d_model=16, n_layers=2, n_heads=2,
                            positions="learned", norm="layernorm", mlp="gelu", dropout=dropout)
    return Transformer(cfg).astype(np.float64)


def _batch(rows: int = 5, t: int = 9, ignore_from: int | None = None, seed: int = 1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 23, size=(rows, t + 1))
    targets = ids[:, 1:].copy()
    if ignore_from is not None:            # a different number of scored tokens per row
        for r in range(rows):
            targets[r, max(1, ignore_from - r):] = -100
    return ids[:, :-1], targets


def _whole_batch_grads(model, ids, targets):
    model.zero_grad()
    loss = model.loss(ids, targets)
    loss.backward()
    return loss.item(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def _parallel_grads(model, ids, targets, threads, **kw):
    model.zero_grad()
    loss = data_parallel_backward(model.loss, (ids, targets), model.parameters(), threads=threads, **kw)
    return loss, {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_equals_whole_batch_backward(threads):
    model = _model()
    ids, targets = _batch(rows=5)
    want_loss, want = _whole_batch_grads(model, ids, targets)
    loss, got = _parallel_grads(model, ids, targets, threads)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-13, err_msg=name)


def test_token_weighted_shards_equal_the_token_mean():
    # rows with different numbers of scored tokens: weighting shards by rows would be wrong, by tokens exact
    model = _model()
    ids, targets = _batch(rows=4, ignore_from=8)
    want_loss, want = _whole_batch_grads(model, ids, targets)
    loss, got = _parallel_grads(model, ids, targets, 2, shard_weight=lambda i, t: int((t != -100).sum()))
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-13, err_msg=name)
    by_rows, _ = _parallel_grads(model, ids, targets, 2)
    assert abs(by_rows - want_loss) > 1e-6     # the default (rows) is not the token mean here


def test_repeats_bit_for_bit_and_accumulates():
    model = _model()
    ids, targets = _batch(rows=6)
    _, first = _parallel_grads(model, ids, targets, 2)
    _, again = _parallel_grads(model, ids, targets, 2)
    for name in first:
        assert np.array_equal(first[name], again[name]), name
    # without zero_grad the second call adds to .grad, like backward()
    data_parallel_backward(model.loss, (ids, targets), model.parameters(), threads=2)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), 2 * first[name], rtol=1e-12, atol=1e-15, err_msg=name)


def test_dropout_repeats_with_the_seed_and_shards_draw_apart():
    ids, targets = _batch(rows=4)
    runs = []
    for _ in range(2):
        model = _model(dropout=0.3)
        model.train()
        tg.manual_seed(7)
        runs.append(_parallel_grads(model, ids, targets, 2))
    assert runs[0][0] == runs[1][0]
    for name in runs[0][1]:
        assert np.array_equal(runs[0][1][name], runs[1][1][name]), name
    # two identical shards (same rows) still get different dropout masks: one stream per shard
    same = np.concatenate([ids[:2], ids[:2]]), np.concatenate([targets[:2], targets[:2]])
    model = _model(dropout=0.3)
    model.train()
    losses = []
    data_parallel_backward(lambda i, t: _record(losses, model.loss(i, t)), same, model.parameters(), threads=2)
    assert len(losses) == 2 and losses[0] != losses[1]


def _record(store, loss):
    store.append(loss.item())
    return loss


def test_frozen_and_unused_parameters_get_no_gradient():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    frozen = Tensor(np.array([3.0]), requires_grad=False)
    unused = Tensor(np.array([5.0]), requires_grad=True)
    x = np.arange(8.0).reshape(4, 2)
    loss = data_parallel_backward(lambda a: ((Tensor(a) * w).sum(axis=1) * frozen).mean(), (x,),
                                  [w, frozen, unused], threads=2)
    assert loss == pytest.approx(float(((x * [1.0, 2.0]).sum(1) * 3).mean()))
    np.testing.assert_allclose(w.grad.numpy(), 3 * x.mean(axis=0))
    assert frozen.grad is None and unused.grad is None


def test_clear_errors():
    w = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match=r"batch\[1\] has 3 rows, batch\[0\] has 4"):
        data_parallel_backward(lambda a, b: (Tensor(a) * w).sum(), (np.ones((4, 2)), np.ones((3, 2))), [w])
    with pytest.raises(ValueError, match="scalar Tensor.*shape \\(2, 2\\)"):
        data_parallel_backward(lambda a: Tensor(a) * w, (np.ones((4, 2)),), [w], threads=2)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        data_parallel_backward(lambda a: (Tensor(a) * w).sum(), (np.ones((4, 2)),), [w], threads=0)
    with pytest.raises(ValueError, match="batch is empty"):
        data_parallel_backward(lambda: None, (), [w])

    def boom(a):
        if a[0, 0] > 0:
            raise KeyError("shard failed")
        return (Tensor(a) * w).sum()
    with pytest.raises(KeyError, match="shard failed"):   # a worker's exception reaches the caller
        data_parallel_backward(boom, (np.array([[0.0, 0], [1, 1]]),), [w], threads=2)


def test_grad_mode_is_per_thread():
    w = Tensor(np.ones(3), requires_grad=True)
    entered, release = threading.Event(), threading.Event()

    def other():
        with tg.no_grad():
            entered.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    entered.wait(5)
    try:
        assert tg.is_grad_enabled()
        assert (w * 2).requires_grad           # recorded here while the other thread is in no_grad
    finally:
        release.set()
        t.join()


def test_kernel_threads_and_generators_are_per_thread():
    seen = {}

    def other():
        seen["threads"] = threads.num_threads()
        seen["gen"] = backend.generator("cpu")

    gen = np.random.default_rng(0)
    with threads.kernel_threads(1), backend.use_generator(gen):
        assert threads.num_threads() == 1 and backend.generator("cpu") is gen
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen["gen"] is not gen and seen["threads"] == threads.num_threads()


def test_shards_run_single_threaded_only_when_they_run_at_once():
    w = Tensor(np.ones(2), requires_grad=True)
    seen = []

    def loss_fn(a):
        seen.append(threads.num_threads())
        return (Tensor(a) * w).sum()

    before = threads.num_threads()
    tg.set_num_threads(2)
    try:
        data_parallel_backward(loss_fn, (np.ones((2, 2)),), [w], threads=2)
        assert seen == [1, 1]                  # two shards at once: one kernel thread each
        seen.clear()
        data_parallel_backward(loss_fn, (np.ones((1, 2)),), [w], threads=2)
        assert seen == [2]                     # a single shard keeps the op-parallel kernels
    finally:
        tg.set_num_threads(before)
