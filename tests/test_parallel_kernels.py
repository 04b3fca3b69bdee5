"""The chunked, threaded paths of the fused ops (fast/threads.py parallel_units).

The registry's small shapes run as one chunk on the calling thread. Here the chunk size and the
parallel threshold are shrunk so that the same ops run in many chunks over two threads, and the
results must be (a) bit-identical to one thread — chunk boundaries do not depend on the thread
count, so the run-to-run determinism that resume relies on holds with threads — and (b) equal to
torch in float64 and float32.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_reason as tg
from tinygrad_reason.fast import threads
from tinygrad_reason import Tensor, functional as F
from tinygrad_reason.fast import kernels
from tinygrad_reason.fast import adamw as fast_adamw, attention as attention_kernel, norms

torch = pytest.importorskip("torch")


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(threads, "PARALLEL_MIN", 0)
    monkeypatch.setattr(attention_kernel, "CHUNK_ELEMENTS", 40)   # a few units per chunk
    monkeypatch.setattr(norms, "ROW_CHUNK_ELEMENTS", 24)       # a few rows per chunk
    before = threads.num_threads()
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
    monkeypatch.setattr(fast_adamw, "UPDATE_CHUNK", 1000)          # many chunks, split over the threads
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


# ---------------------------------------------------------------- attention's row blocks
# With a causal mask, ops/attention.py computes only the key range each block of query positions can
# see. ROW_BLOCK is shrunk so that short sequences take that path, with masks that make blocks skip
# keys, carry the bias on part of their keys only, and hold rows with every key masked.

def _causal_masked(t, s, pad_left=(), pad_right=()):
    """Causal for queries at positions s - t .. s - 1 (a KV prefix when s > t), plus padding."""
    masked = np.arange(s)[None, :] > (s - t + np.arange(t))[:, None]
    rows = max(len(pad_left), len(pad_right), 1)
    m = np.broadcast_to(masked, (rows, t, s)).copy()
    for b, n in enumerate(pad_left):
        m[b, :, :n] = True
    for b, n in enumerate(pad_right):
        if n:
            m[b, :, s - n:] = True
    return m[:, None]


BLOCK_MASKS = {
    "causal": ((2, 4, 9, 4), (2, 4, 9, 4), _causal_masked(9, 9)),
    "causal_kv_prefix": ((2, 2, 7, 4), (2, 2, 10, 4), _causal_masked(7, 10)),
    "causal_gqa_padding": ((3, 4, 9, 4), (3, 2, 9, 4), _causal_masked(9, 9, pad_left=(0, 3, 0), pad_right=(0, 0, 4))),
}


@pytest.fixture
def row_blocks(monkeypatch, tiny_chunks):
    monkeypatch.setattr(attention_kernel, "ROW_BLOCK", 2)


@pytest.mark.parametrize("name", sorted(BLOCK_MASKS))
def test_row_blocks_skip_keys_and_bias_only_where_masked(name, row_blocks):
    q_shape, k_shape, masked = BLOCK_MASKS[name]
    rep, t, s = q_shape[1] // k_shape[1], q_shape[2], k_shape[2]
    segs = attention_kernel.segments(masked, t, s, rep, np)
    assert len(segs) > 1 and min(n_keys for *_, n_keys in segs) < s           # keys are skipped
    if name != "causal_gqa_padding":           # left padding masks the first keys of every block
        assert any(first > 0 for *_, first, _ in segs)                        # bias on part of the keys
    rows = np.concatenate([np.arange(r0, r1) for r0, r1, *_ in segs])
    np.testing.assert_array_equal(np.sort(rows), np.arange(rep * t))        # every query row exactly once
    for r0, r1, p0, p1, copies, first, n_keys in segs:
        block = masked[:, 0, p0:p1]
        assert block[:, :, n_keys:].all()                                     # skipped keys: masked for all
        assert not block[:, :, :first].any()                                  # before first: masked for none


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BLOCK_MASKS))
def test_row_blocks_match_torch(name, dtype, threads, row_blocks):
    q_shape, k_shape, masked = BLOCK_MASKS[name]
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(s).astype(dtype) for s in (q_shape, k_shape, k_shape)]
    upstream = rng.standard_normal(q_shape).astype(dtype)
    got = _run(lambda q, k, v: F.attention(q, k, v, masked), arrays, upstream, threads)
    tin = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = _torch_attention(*tin, masked)
    out.backward(torch.from_numpy(upstream))
    want = [out.detach().numpy()] + [t.grad.numpy() for t in tin]
    tol = 1e-10 if dtype == np.float64 else 2e-5
    for what, a, b in zip(["output", "dq", "dk", "dv"], got, want):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{name} {what}")


@pytest.mark.parametrize("name", sorted(BLOCK_MASKS))
def test_row_blocks_bit_identical_with_threads(name, row_blocks):
    q_shape, k_shape, masked = BLOCK_MASKS[name]
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in (q_shape, k_shape, k_shape)]
    upstream = rng.standard_normal(q_shape).astype(np.float32)
    fn = lambda q, k, v: F.attention(q, k, v, masked, dropout_p=0.2)  # noqa: E731
    for a, b in zip(_run(fn, arrays, upstream, 1), _run(fn, arrays, upstream, 2)):
        np.testing.assert_array_equal(a, b)


def test_row_blocks_dropout_matches_torch_with_the_same_keep_mask(row_blocks):
    """Dropout's keep mask lives in the blocks' keys-by-queries layout; rebuilt as (B, H, T, S), torch
    with that mask must give the same output and gradients."""
    q_shape, k_shape, masked = BLOCK_MASKS["causal_gqa_padding"]
    b, h, t, d = q_shape
    hkv, s = k_shape[1], k_shape[2]
    rep = h // hkv
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal(sh) for sh in (q_shape, k_shape, k_shape)]
    upstream = rng.standard_normal(q_shape)
    ins = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = F.attention(*ins, masked, dropout_p=0.3)
    blocks = out._ctx.blocks                               # the kernel's plan: its score blocks and keep masks
    keep = np.ones((b * hkv, rep * t, s))                   # keys no block computes have weight 0 anyway
    for (r0, r1, *_, n_keys), blk in zip(blocks.segs, blocks.keeps):
        keep[:, r0:r1, :n_keys] = blk.swapaxes(-1, -2)
    keep = torch.from_numpy(keep.reshape(b, h, t, s))
    out.backward(Tensor(upstream))
    tin = [torch.tensor(a, requires_grad=True) for a in arrays]
    q, k, v = tin
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = ((q @ k.transpose(-1, -2)) / d ** 0.5).masked_fill(torch.from_numpy(masked), torch.finfo(q.dtype).min)
    ref = (scores.softmax(-1) * keep) @ v
    ref.backward(torch.from_numpy(upstream))
    for what, a, bb in zip(["output", "dq", "dk", "dv"], [out] + ins, [ref] + tin):
        theirs = bb.detach().numpy() if what == "output" else bb.grad.numpy()
        ours = a.numpy() if what == "output" else a.grad.numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10, err_msg=what)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("masks", ["causal", "causal_padding"])
def test_packed_attention_row_blocks_match_torch(masks, threads, row_blocks):
    """packed_attention reads the heads in place from (B, T, 3 H D): in chunks that cross batch rows,
    over row blocks, on two threads, it must equal torch on the split heads in float64."""
    b, h, t, d = 3, 2, 9, 4
    masked = _causal_masked(t, t) if masks == "causal" else _causal_masked(t, t, pad_left=(0, 3, 0), pad_right=(0, 0, 4))
    rng = np.random.default_rng(10)
    qkv = rng.standard_normal((b, t, 3 * h * d))
    upstream = rng.standard_normal((b, t, h * d))
    got = _run(lambda z: F.packed_attention(z, h, masked), [qkv], upstream, threads)
    z = torch.tensor(qkv, requires_grad=True)
    q, k, v = (z[..., i * h * d:(i + 1) * h * d].reshape(b, t, h, d).transpose(1, 2) for i in range(3))
    out = _torch_attention(q, k, v, masked).transpose(1, 2).reshape(b, t, h * d)
    out.backward(torch.from_numpy(upstream))
    np.testing.assert_allclose(got[0], out.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got[1], z.grad.numpy(), rtol=1e-10, atol=1e-10)


def _op_names(t):
    seen, stack, names = set(), [t], set()
    while stack:
        node = stack.pop()
        if id(node) in seen or node._ctx is None:
            continue
        seen.add(id(node))
        names.add(type(node._ctx).__name__)
        stack.extend(node._ctx.parents)
    return names


def test_the_gpt_config_takes_the_packed_path_and_llama_does_not():
    from tinygrad_reason.nn import Transformer, TransformerConfig
    ids = np.arange(12).reshape(2, 6) % 11
    gpt = Transformer(TransformerConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2,
                                        positions="learned", norm="layernorm", mlp="gelu", bias=True))
    llama = Transformer(TransformerConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=4,
                                          n_kv_heads=2, positions="rope", norm="rmsnorm", mlp="swiglu"))
    gpt_ops, llama_ops = _op_names(gpt.loss(ids, ids)), _op_names(llama.loss(ids, ids))
    assert "PackedAttention" in gpt_ops and "Attention" not in gpt_ops
    assert "Attention" in llama_ops and "PackedAttention" not in llama_ops


@contextlib.contextmanager
def _counting_calls(name: str):
    """fast.attention.<name> wrapped to record each call; yields the list of calls."""
    called, real = [], getattr(attention_kernel, name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention_kernel, name, lambda *a: called.append(1) or real(*a))
        yield called


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("mask", ["none", "padding", "a row sees nothing", "one mask for all rows"])
def test_one_query_without_a_graph_equals_the_blocked_path_and_torch(dtype, heads, kv_heads, mask):
    # a decode step under no_grad takes fast.attention.one_query (queries-by-keys scores); the same
    # inputs with a graph take the blocked path; both equal torch's written-out attention
    rng = np.random.default_rng(0)
    b, s, d = 3, 7, 8
    q = rng.standard_normal((b, heads, 1, d)).astype(dtype)
    cache_k = rng.standard_normal((b, kv_heads, 10, d)).astype(dtype)   # a cache longer than S: views
    cache_v = rng.standard_normal((b, kv_heads, 10, d)).astype(dtype)
    k, v = cache_k[:, :, :s], cache_v[:, :, :s]
    masked = {"none": None,
              "padding": np.arange(s)[None, None, None, :] < np.array([0, 2, 5])[:, None, None, None],
              "a row sees nothing": np.arange(s)[None, None, None, :] < np.array([0, s, 1])[:, None, None, None],
              "one mask for all rows": (np.arange(s) % 3 == 1)[None, None, None, :]}[mask]
    with _counting_calls("one_query") as called, tg.no_grad():
        fast = F.attention(Tensor(q), Tensor._wrap(k), Tensor._wrap(v), masked).numpy()
    blocked = F.attention(Tensor(q, requires_grad=True), Tensor._wrap(k), Tensor._wrap(v), masked).numpy()
    assert called == [1]
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(fast, blocked, **tol)
    full = np.zeros((b, 1, 1, s), dtype=bool) if masked is None else np.broadcast_to(masked, (b, 1, 1, s))
    expect = _torch_attention(*map(torch.from_numpy, (q, np.ascontiguousarray(k), np.ascontiguousarray(v))),
                              np.array(full)).numpy()           # a row that sees nothing: uniform weights
    np.testing.assert_allclose(fast, expect, **tol)


def _prefix_case(dtype, heads, kv_heads, group, p=5, s=3, d=8, seed=0):
    """q (B, H, 1, D), the rows' own keys k, v (B, Hkv, S, D) as views of a longer cache, the
    prefixes pk, pv (G, Hkv, P, D), and every row's full keys [pk[group[i]]; k[i]]."""
    rng = np.random.default_rng(seed)
    b, g = len(group), max(group) + 2                        # one prefix that no row continues
    q = rng.standard_normal((b, heads, 1, d)).astype(dtype)
    cache_k = rng.standard_normal((b, kv_heads, s + 4, d)).astype(dtype)
    cache_v = rng.standard_normal((b, kv_heads, s + 4, d)).astype(dtype)
    pk = rng.standard_normal((g, kv_heads, p, d)).astype(dtype)
    pv = rng.standard_normal((g, kv_heads, p, d)).astype(dtype)
    group = np.array(group)
    k, v = cache_k[:, :, 2:2 + s], cache_v[:, :, 2:2 + s]
    full_k = np.concatenate([pk[group], k], axis=2)
    full_v = np.concatenate([pv[group], v], axis=2)
    return q, k, v, (pk, pv, group), full_k, full_v


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("mask", ["none", "padding", "a row sees nothing", "one mask for all rows"])
@pytest.mark.parametrize("group", [[0, 0, 0, 0], [2, 0, 2, 1, 2], [1]])
def test_prefix_attention_equals_attention_on_each_rows_keys_and_torch(dtype, heads, kv_heads, mask, group):
    # rows continuing shared prefixes (KVCache.share_prefix): the decode step reads each prefix once for its
    # rows (prefix_one_query); the same inputs with a graph gather every row's keys and take attention()
    q, k, v, prefix, full_k, full_v = _prefix_case(dtype, heads, kv_heads, group)
    b, total = len(group), full_k.shape[2]
    cut = np.array([0, 2, 6, 1, 7])[:b]                      # padding: keys before `cut` masked, in the prefix and after
    masked = {"none": None,
              "padding": np.arange(total)[None, None, None, :] < cut[:, None, None, None],
              "a row sees nothing": (np.arange(total)[None, None, None, :]
                                     < np.array([0, total, 1, 0, 3])[:b, None, None, None]),
              "one mask for all rows": (np.arange(total) % 3 == 1)[None, None, None, :]}[mask]
    with _counting_calls("prefix_one_query") as called, tg.no_grad():
        fast = F.prefix_attention(Tensor(q), Tensor._wrap(k), Tensor._wrap(v), prefix, masked).numpy()
    qt, kt, vt = (Tensor(a.copy(), requires_grad=True) for a in (q, k, v))
    gathered = F.prefix_attention(qt, kt, vt, prefix, masked)
    assert called == [1]
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(fast, gathered.numpy(), **tol)
    np.testing.assert_allclose(fast, F.attention(Tensor(q), Tensor(full_k), Tensor(full_v), masked).numpy(), **tol)
    full = np.zeros((b, 1, 1, total), dtype=bool) if masked is None else np.broadcast_to(masked, (b, 1, 1, total))
    expect = _torch_attention(*map(torch.from_numpy, (q, full_k, full_v)), np.array(full)).numpy()
    np.testing.assert_allclose(fast, expect, **tol)
    # with a graph the gradients reach q and the rows' own keys and values, as attention on the full keys
    upstream = np.random.default_rng(1).standard_normal(q.shape)
    gathered.backward(Tensor(upstream))
    fq, fk, fv = (Tensor(a.copy(), requires_grad=True) for a in (q, full_k, full_v))
    F.attention(fq, fk, fv, masked).backward(Tensor(upstream))
    p = prefix[0].shape[2]
    for ours, ref in ((qt, fq.grad.numpy()), (kt, fk.grad.numpy()[:, :, p:]), (vt, fv.grad.numpy()[:, :, p:])):
        np.testing.assert_allclose(ours.grad.numpy(), ref, **tol)


@settings(max_examples=40, deadline=None)
@given(group=st.lists(st.integers(0, 3), min_size=1, max_size=9), p=st.integers(1, 6), s=st.integers(1, 4),
       heads=st.sampled_from([(2, 2), (4, 2), (3, 1)]), seed=st.integers(0, 2 ** 16))
def test_prefix_one_query_equals_attention_on_each_rows_keys_for_any_grouping(group, p, s, heads, seed):
    q, k, v, prefix, full_k, full_v = _prefix_case(np.float64, *heads, group, p=p, s=s, seed=seed)
    masked = np.random.default_rng(seed).random((len(group), 1, 1, p + s)) < 0.3
    with tg.no_grad():
        fast = F.prefix_attention(Tensor(q), Tensor._wrap(k), Tensor._wrap(v), prefix, masked).numpy()
        expect = F.attention(Tensor(q), Tensor(full_k), Tensor(full_v), masked).numpy()
    np.testing.assert_allclose(fast, expect, rtol=1e-12, atol=1e-12)


def test_prefix_attention_with_several_queries_gathers_the_keys_and_checks_shapes():
    q, k, v, prefix, full_k, full_v = _prefix_case(np.float64, 4, 2, [1, 0, 1])
    q3 = np.random.default_rng(2).standard_normal((3, 4, 3, 8))
    masked = np.broadcast_to(np.arange(full_k.shape[2])[None, None, None, :] > np.arange(5, 8)[None, None, :, None],
                             (1, 1, 3, full_k.shape[2]))
    with tg.no_grad():
        out = F.prefix_attention(Tensor(q3), Tensor._wrap(k), Tensor._wrap(v), prefix, masked).numpy()
        expect = F.attention(Tensor(q3), Tensor(full_k), Tensor(full_v), masked).numpy()
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)
    pk, pv, group = prefix
    for bad, what in (((pk, pv, np.array([0, 3, 1])), "group"), ((pk[:, :1], pv[:, :1], group), "prefix keys"),
                      ((pk, pv[:, :, :2], group), "prefix keys"), ((pk, pv, group[:2]), "group")):
        with pytest.raises(ValueError, match=f"prefix_attention: .*{what}"):
            F.prefix_attention(Tensor(q), Tensor._wrap(k), Tensor._wrap(v), bad)
    with tg.no_grad(), pytest.raises(ValueError, match=r"mask shape \(3, 1, 1, 4\) must be"):
        F.prefix_attention(Tensor(q), Tensor._wrap(k), Tensor._wrap(v), prefix, np.zeros((3, 1, 1, 4), bool))
