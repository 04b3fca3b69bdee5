"""Blocked scaled dot-product attention on raw arrays: the kernel under ops/attention.py.

    scores = q k^T * scale;  scores[masked] = very negative;  att = softmax(scores);  [att = dropout(att)]
    out = att v

(ops/reference.py writes that formula in Tensor ops; this file computes the same numbers fast.)
Grouped-query heads: the H query heads form Hkv groups of rep = H / Hkv; the rep*T query rows of
a group are stacked into one matrix, so each key/value head takes part in one matmul (no copy of
k or v per query head), and dk, dv come out summed over the group automatically.

The work is a loop over "units" (one batch row and key/value head each) in chunks small enough
that a chunk's scores stay in L2 between the matmul, the softmax passes and the second matmul; on
NumPy the chunks are split over threads.num_threads() threads (NumPy releases the GIL, and BLAS
runs single-threaded inside each), so the softmax passes use every core too. Small problems are
one chunk: one batched matmul per product. A decode step without a graph (one query per row, NumPy)
skips the blocks: `one_query` lays its scores out queries by keys. Rows that continue shared
prefixes (a prompt's N samples, nn.KVCache.share_prefix) go through `prefix_one_query`, which
stacks the queries of a prefix's rows into one product with its keys. An additive bias on the
scores (B or 1, H or 1, T, S), with its gradient, takes `biased_forward` / `biased_backward`: one
unblocked score array per call (the bias is dense, so no block can be skipped), or the decode
steps above with the bias added before the softmax; without a bias none of the paths changes.

How it is laid out, each choice measured on NumPy (2-core benchmark machine):
- Scores are kept transposed, keys by queries (S, T) per unit: the softmax's max over keys is then
  a max across rows, which NumPy vectorizes (~2.5x faster than a max along 256-long rows), and
  the sums over keys are a vector-matrix product with ones (~4x faster than .sum).
- Only the blocks a mask leaves live are computed: with a causal mask, query block i (ROW_BLOCK
  positions) needs keys up to its end only, about (1 + 1/blocks) / 2 of the scores and of
  their matmuls (llm.c loops t2 <= t the same way). The bias is added only where a block
  has masked keys (its diagonal part).
- The scores are not normalized: exp(s - max) is kept with r = 1 / its column sums, and r scales
  the (T x D) output instead of the (S x T) weights; the backward folds r into dO the same way.
- q is scaled once (T x D) instead of the scores; the mask is added as a large negative bias (a
  select costs ~30x an add), half the dtype's lowest value so that a row with every key masked
  gets uniform weights instead of NaNs; and the softmax backward's sums sum_j att_ij dA_ij are the
  dot products dO_i . O_i (FlashAttention's D_i).
- exp, not exp2: NumPy's float32 exp2 leaves its vector loop for every result that underflows
  (a masked score: ~5x slower than exp over a causal block; ~140x for denormal results); exp
  only for denormal results.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .threads import parallel_units

CHUNK_ELEMENTS = 128 * 1024   # scores per chunk: 512 KiB of float32 stays in L2 with its operands
ROW_BLOCK = 128               # query positions per block when the mask leaves keys unused (causal)


def segments(masked, t: int, s: int, rep: int, xp):
    """The score blocks worth computing: (r0, r1, p0, p1, copies, first_masked, n_keys) each.

    Stacked query rows r0:r1 hold `copies` copies (one per query head of the group) of positions
    p0:p1. They need keys [0, n_keys) only: every later key is masked for all of them, so its
    weight is an exact 0. Keys from first_masked on are masked for some of them (the bias goes
    there); before it, for none. A row with every key masked keeps all S (uniform weights).
    Without savings (no mask, padding only, a decode step, CuPy: one batched call is better
    there) it is one block of all rows and keys.
    """
    if masked is None:
        return [(0, rep * t, 0, t, rep, s, s)]
    m = masked[:, 0]                                                       # (Bm, T, S)
    if xp is not np or t < 2 * ROW_BLOCK:
        return [(0, rep * t, 0, t, rep, 0, s)]
    # keys needed by position p: its last unmasked key + 1, over the mask's batch rows (argmax of the
    # reversed row finds it; a row with every key masked gives argmax 0, so all S); the first masked
    # key is the argmax of the row itself, S where none is masked
    live = s - xp.argmax(~m[:, :, ::-1], axis=-1).min(axis=0)              # (T,)
    first = xp.where(m.any(axis=-1), xp.argmax(m, axis=-1), s).min(axis=0)  # (T,)
    blocks = []
    for p0 in range(0, t, ROW_BLOCK):
        p1 = min(p0 + ROW_BLOCK, t)
        n_keys = int(live[p0:p1].max())
        blocks.append((p0, p1, min(int(first[p0:p1].min()), n_keys), n_keys))
    if all(n_keys == s for _, _, _, n_keys in blocks):
        return [(0, rep * t, 0, t, rep, min(c for _, _, c, _ in blocks), s)]
    return [(j * t + p0, j * t + p1, p0, p1, 1, c, n_keys) for j in range(rep) for p0, p1, c, n_keys in blocks]


def units(a, n_units: int, own: bool = False):
    """(B, Hx, R, D) -> (B * Hx, R', D) with the head groups' rows stacked: a view when the strides
    allow (a KV cache's [:, :, :end] slice is one, and is not copied each decode step), else a copy.
    own=True always copies: arrays saved for backward must not alias a cache that is written later."""
    if own or a.strides[-1] != a.itemsize:
        a = backend.get_array_module(a).array(a, order="C")
    return a.reshape(n_units, -1, a.shape[-1])


def live_scores(segs) -> int:
    """Scores computed per unit: chunks are sized by the work done, not the full T x S."""
    return sum((r1 - r0) * n_keys for r0, r1, _, _, _, _, n_keys in segs)


class Blocks:
    """One attention call's plan and what its forward leaves for its backward: the score blocks
    worth computing (segments), the mask's bias, the unnormalized exps and 1 / their sums, the
    dropout keep masks; `saved` holds the forward's operands and output."""

    def __init__(self, like, masked, b, h, hkv, t, s, d, dropout_p):
        """The mask's bias and dead rows, the score blocks, and the arrays the units fill (dtype and
        device of `like`)."""
        xp, dtype = backend.get_array_module(like), like.dtype
        self.bias_t = self.dead = None
        masked = checked_mask(masked, b, t, s, xp)
        if masked is not None:
            # the bias, keys by queries like the scores: (Bm, S, T)
            self.bias_t = masked[:, 0].swapaxes(-1, -2) * xp.asarray(xp.finfo(dtype).min / 2, dtype=dtype)
            # masked scores are constants: att = 0 drops their gradient, except in a row with every
            # key masked (uniform weights), so those rows are remembered and zeroed in backward
            dead = masked[:, 0].all(axis=-1)                                          # (Bm, T)
            self.dead = dead if bool(dead.any()) else None
        rep, n = h // hkv, b * hkv
        self.segs = segments(masked, t, s, rep, xp)
        self.exps = [xp.empty((n, n_keys, r1 - r0), dtype=dtype) for r0, r1, _, _, _, _, n_keys in self.segs]
        self.inv_sums = xp.empty((n, rep * t), dtype=dtype)
        self.ones = xp.ones(max(s, d), dtype=dtype)
        self.keeps = None
        if dropout_p > 0.0:
            gen = backend.generator(backend.device_of(like))
            draw = (lambda shape: gen.random(shape, dtype=dtype)) if xp is np else \
                (lambda shape: gen.random_sample(shape, dtype=dtype))
            self.keeps = [(draw(e.shape) >= dropout_p).astype(dtype) * (1.0 / (1.0 - dropout_p)) for e in self.exps]
        self.shape = (b, h, t, d, hkv, s)

    def forward_units(self, lo, hi, q, k, v, out, scratch):
        """Units [lo, hi): q (u, rep*T, D) already scaled, k and v (u, S, D), out (u, rep*T, D); any strides
        with unit steps along D."""
        xp = backend.get_array_module(q)
        for i, (r0, r1, p0, p1, copies, first, n_keys) in enumerate(self.segs):
            e = self.exps[i][lo:hi]                                        # (u, L, P): keys by queries
            if not e.size:
                continue                                                   # no queries (T = 0): nothing to write
            xp.matmul(k[:, :n_keys], q[:, r0:r1].swapaxes(-1, -2), out=e)
            if first < n_keys:
                self.add_bias(e[:, first:], lo, hi, p0, p1, copies, first, n_keys)
            e -= e.max(axis=1, keepdims=True)
            xp.exp(e, out=e)
            inv = self.inv_sums[lo:hi, r0:r1]
            xp.matmul(self.ones[:n_keys], e, out=inv)                       # sums over keys
            xp.reciprocal(inv, out=inv)
            used = e if self.keeps is None else xp.multiply(e, self.keeps[i][lo:hi], out=scratch(e.shape))
            o = out[:, r0:r1]
            xp.matmul(used.swapaxes(-1, -2), v[:, :n_keys], out=o)
            o *= inv[..., None]

    def backward_units(self, lo, hi, q, k, v, out, g, dq, dk, dv, scratch):
        """Gradients of units [lo, hi) into dq, dk, dv (views like q, k, v; None when not wanted)."""
        xp = backend.get_array_module(g)
        d = q.shape[-1]
        one_block = len(self.segs) == 1

        def into(dst, n_keys, a, b_):                            # dst[:, :n_keys] (+)= a @ b_
            if one_block:
                xp.matmul(a, b_, out=dst)
            else:
                dst[:, :n_keys] += xp.matmul(a, b_, out=scratch((hi - lo, n_keys, d), 3))

        for i, (r0, r1, p0, p1, copies, first, n_keys) in enumerate(self.segs):
            e = self.exps[i][lo:hi]                                        # (u, L, P) unnormalized
            keep = None if self.keeps is None else self.keeps[i][lo:hi]
            # r folded into dO: gr = r dO, and r (dO . O) = gr . O
            gr = xp.multiply(g[:, r0:r1], self.inv_sums[lo:hi, r0:r1, None], out=scratch((hi - lo, r1 - r0, d), 1))
            prod = xp.multiply(gr, out[:, r0:r1], out=scratch(gr.shape, 2))
            rowdot = xp.matmul(prod, self.ones[:d])                        # (u, P)
            ds = xp.matmul(v[:, :n_keys], gr.swapaxes(-1, -2), out=scratch(e.shape))   # r dA^T
            if dv is not None:
                into(dv, n_keys, e if keep is None else xp.multiply(e, keep, out=scratch(e.shape, 4)), gr)
            if keep is not None:
                ds *= keep
            ds -= rowdot[:, None, :]
            ds *= e                                                        # d scores, keys by queries
            if self.dead is not None:
                dead = self.per_unit(self.dead, lo, hi, slice(p0, p1))    # (., P)
                ds.reshape(*ds.shape[:2], copies, p1 - p0)[...] *= ~dead[:, None, None, :]
            if dq is not None:
                xp.matmul(ds.swapaxes(-1, -2), k[:, :n_keys], out=dq[:, r0:r1])
            if dk is not None:
                into(dk, n_keys, ds, q[:, r0:r1])

    def per_unit(self, a, lo, hi, *index):
        """A mask-shaped array (Bm, ...) indexed for units [lo, hi): Bm = 1 broadcasts to every unit."""
        if a.shape[0] == 1:
            return a[(slice(None), *index)]
        xp = backend.get_array_module(a)
        return a[(xp.arange(lo, hi) // self.shape[4], *index)]

    def add_bias(self, e, lo, hi, p0, p1, copies, first, n_keys):
        """e (u, keys first:n_keys, copies * P) += the mask bias of the units' batch rows."""
        bias = self.per_unit(self.bias_t, lo, hi, slice(first, n_keys), slice(p0, p1))   # (., L', P)
        if copies == 1:
            e += bias
        else:              # e's last axis is contiguous: splitting it into (copies, P) is a view
            e.reshape(*e.shape[:2], copies, p1 - p0)[...] += bias[:, :, None]


def check_qkv(op: str, q_shape, k_shape, v_shape) -> None:
    """A clear error unless q is (B, H, T, D) and k, v are (B, Hkv, S, D) with Hkv dividing H."""
    b, h, _, d = q_shape
    if len(k_shape) != 4 or k_shape != v_shape or k_shape[0] != b or k_shape[3] != d or h % k_shape[1]:
        raise ValueError(f"{op}: q {q_shape}, k {k_shape}, v {v_shape} do not fit "
                         "(B, H, T, D) and (B, Hkv, S, D) with Hkv dividing H")


def checked_mask(masked, b: int, t: int, s: int, xp):
    """The boolean mask as an array of xp, or a clear error when its shape is not (B or 1, 1, T, S)."""
    if s == 0 and t > 0:
        raise ValueError(f"attention: {t} queries but no keys (S = 0) to attend to")
    if masked is None:
        return None
    masked = xp.asarray(masked)
    if masked.ndim != 4 or masked.shape[1] != 1 or masked.shape[0] not in (1, b) or masked.shape[-2:] != (t, s):
        raise ValueError(f"attention: mask shape {masked.shape} must be (B or 1, 1, {t}, {s})")
    return masked


def one_query(q, k, v, masked, scale, bias=None):
    """A decode step without a graph: one query per row, q (B, H, 1, D), k and v (B, Hkv, S, D).

    The scores are laid out queries by keys, (B Hkv, rep, S), so the softmax's max and sum run along
    contiguous rows and each unit is two matrix-vector products. The keys-by-queries layout of the
    blocked path, good for many queries, takes a third product per unit for its sums here. One
    thread (scripts outside the repo): 16 rows x 6 heads x 64 keys (D 64) 200-245 vs 265-280 us
    hot, 326 vs 380 us a call inside the small GPT's 16-row decode step; 64 x 4 x 150 (D 32) 705 vs
    730-760 us. Keys and values read from memory bound both layouts (a long cache over many rows).
    bias: None, or an additive bias on the scores, (B or 1, H or 1, 1, S).
    """
    b, h, _, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    rep = h // hkv
    qs = (q * np.asarray(scale, dtype=q.dtype)).reshape(b * hkv, rep, d)
    scores = np.matmul(qs, units(k, b * hkv).swapaxes(-1, -2))              # (B Hkv, rep, S)
    exp_scores(scores.reshape(b, h, s), masked, bias)
    out = np.matmul(scores, units(v, b * hkv))                               # (B Hkv, rep, D)
    out /= scores.sum(axis=-1, keepdims=True)
    return out.reshape(b, h, 1, d)


def exp_scores(scores, masked, bias=None) -> None:
    """A decode step's scores (B, H, S), one query per head, in place: the additive bias (B or 1,
    H or 1, 1, S) when given, the mask's bias (the blocked path's: a row with every key masked gets
    uniform weights), then exp(s - row max)."""
    if bias is not None:
        scores += bias[:, :, 0]
    if masked is not None:
        scores += masked[:, 0] * np.asarray(np.finfo(scores.dtype).min / 2, dtype=scores.dtype)   # (Bm, 1, S)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)


def prefix_one_query(q, k, v, pk, pv, group, masked, scale, bias=None):
    """_one_query for rows that continue shared prefixes: q (B, H, 1, D); k, v (B, Hkv, S, D) the rows'
    own keys; pk, pv (G, Hkv, P, D) the prefixes' keys, group (B,) each row's prefix; masked over the
    P + S keys. The queries of a prefix's rows are stacked, so each prefix head takes part in one
    product per step however many rows continue it, instead of one per row (memory read once).
    bias: None, or an additive bias on the scores over the P + S keys, (B or 1, H or 1, 1, P + S)."""
    b, h, _, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    g, p = pk.shape[0], pk.shape[2]
    rep = h // hkv
    # a row's slot among the rows of its prefix: row i is query slot[i] of prefix group[i]
    counts = np.bincount(group, minlength=g)
    order = np.argsort(group, kind="stable")
    slot = np.empty(b, dtype=np.intp)
    slot[order] = np.arange(b) - np.repeat(np.cumsum(counts) - counts, counts)
    n = int(counts.max())
    qs = (q * np.asarray(scale, dtype=q.dtype)).reshape(b, hkv, rep, d)
    stacked = np.zeros((g, hkv, n, rep, d), dtype=q.dtype)              # unused slots stay 0
    stacked[group, :, slot] = qs
    scores = np.empty((b, hkv, rep, p + s), dtype=q.dtype)
    on_prefix = np.matmul(stacked.reshape(g * hkv, n * rep, d), pk.reshape(g * hkv, p, d).swapaxes(-1, -2))
    scores[..., :p] = on_prefix.reshape(g, hkv, n, rep, p)[group, :, slot]
    on_rows = np.matmul(qs.reshape(b * hkv, rep, d), units(k, b * hkv).swapaxes(-1, -2))
    scores[..., p:] = on_rows.reshape(b, hkv, rep, s)
    exp_scores(scores.reshape(b, h, p + s), masked, bias)
    weights = np.zeros((g, hkv, n, rep, p), dtype=q.dtype)
    weights[group, :, slot] = scores[..., :p]
    out = np.matmul(weights.reshape(g * hkv, n * rep, p), pv.reshape(g * hkv, p, d))
    out = out.reshape(g, hkv, n, rep, d)[group, :, slot]                     # (B, Hkv, rep, D)
    out += np.matmul(scores[..., p:].reshape(b * hkv, rep, s), units(v, b * hkv)).reshape(b, hkv, rep, d)
    out /= scores.sum(axis=-1, keepdims=True)
    return out.reshape(b, h, 1, d)


def pieces(lo: int, hi: int, per_row: int):
    """Units [lo, hi) cut at batch-row boundaries: (lo, hi, row, first head, end head) each."""
    while lo < hi:
        row = lo // per_row
        end = min(hi, (row + 1) * per_row)
        yield lo, end, row, lo - row * per_row, end - row * per_row
        lo = end


def forward(q, k, v, masked, scale, dropout_p, keep_inputs: bool):
    """Attention of q (B, H, T, D) over k, v (B, Hkv, S, D): (out (B, H, T, D), Blocks for backward).
    keep_inputs: copy k and v for backward (a KV cache's slice would be written over later)."""
    xp = backend.get_array_module(q)
    b, h, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    n = b * hkv
    blocks = Blocks(q, masked, b, h, hkv, t, s, d, dropout_p)
    qs = units(q * xp.asarray(scale, dtype=q.dtype), n)                 # (N, rep*T, D)
    kc, vc = units(k, n, keep_inputs), units(v, n, keep_inputs)          # (N, S, D)
    out = xp.empty((n, h // hkv * t, d), dtype=q.dtype)

    def work(lo, hi, scratch):
        blocks.forward_units(lo, hi, qs[lo:hi], kc[lo:hi], vc[lo:hi], out[lo:hi], scratch)

    parallel_units(n, live_scores(blocks.segs), CHUNK_ELEMENTS, work, xp, q.dtype)
    blocks.saved = (qs, kc, vc, out, scale)
    return out.reshape(b, h, t, d), blocks


def backward(blocks, g, want_q: bool, want_k: bool, want_v: bool):
    """(dq, dk, dv) of forward's call for the output gradient g (B, H, T, D); None where not wanted."""
    xp = backend.get_array_module(g)
    qs, kc, vc, out, scale = blocks.saved
    b, h, t, d, hkv, s = blocks.shape
    n = b * hkv
    gg = units(g, n)                                                     # (N, rep*T, D)
    # with several blocks, dk and dv sum one product per block (keys no block uses stay 0)
    alloc = xp.empty_like if len(blocks.segs) == 1 else xp.zeros_like
    dq = xp.empty_like(qs) if want_q else None
    dk = alloc(kc) if want_k else None
    dv = alloc(vc) if want_v else None
    part = lambda a, lo, hi: None if a is None else a[lo:hi]  # noqa: E731

    def work(lo, hi, scratch):
        blocks.backward_units(lo, hi, qs[lo:hi], kc[lo:hi], vc[lo:hi], out[lo:hi], gg[lo:hi],
                              part(dq, lo, hi), part(dk, lo, hi), part(dv, lo, hi), scratch)

    parallel_units(n, live_scores(blocks.segs), CHUNK_ELEMENTS, work, xp, gg.dtype)
    if dq is not None:
        dq *= xp.asarray(scale, dtype=dq.dtype)
    shape = lambda a, like: None if a is None else a.reshape(like)  # noqa: E731
    return shape(dq, (b, h, t, d)), shape(dk, (b, hkv, s, d)), shape(dv, (b, hkv, s, d))


def packed_forward(qkv, masked, n_heads: int, scale: float, dropout_p: float):
    """Attention on the packed projection of all heads: qkv (B, T, 3 H D) holds q | k | v, each
    (B, T, H, D) in torch's head layout, and the output is (B, T, H D), the layout the output
    projection reads. Per head, q, k, v and the output are strided views of those arrays (each
    row D contiguous numbers), so no head transpose or copy is made in either direction.
    One key/value head per query head. q is multiplied by `scale` first unless it is 1."""
    xp = backend.get_array_module(qkv)
    b, t, width = qkv.shape
    h, d = n_heads, width // (3 * n_heads)
    blocks = Blocks(qkv, masked, b, h, h, t, t, d, dropout_p)
    q, k, v = heads(qkv, h, d)
    if scale != 1.0:
        q = q * xp.asarray(scale, dtype=qkv.dtype)
    out = xp.empty((b, t, h, d), dtype=qkv.dtype)
    o = out.transpose(0, 2, 1, 3)                                        # (B, H, T, D) view

    def work(lo, hi, scratch):
        for a, z, row, h0, h1 in pieces(lo, hi, h):
            blocks.forward_units(a, z, q[row, h0:h1], k[row, h0:h1], v[row, h0:h1], o[row, h0:h1], scratch)

    parallel_units(b * h, live_scores(blocks.segs), CHUNK_ELEMENTS, work, xp, qkv.dtype)
    blocks.saved = (q, k, v, o, scale)
    return out.reshape(b, t, h * d), blocks


def packed_backward(blocks, g):
    """d qkv (B, T, 3 H D) of packed_forward's call for the output gradient g (B, T, H D): one array."""
    xp = backend.get_array_module(g)
    q, k, v, o, scale = blocks.saved
    b, h, t, d, _, _ = blocks.shape
    gh = g.reshape(b, t, h, d).transpose(0, 2, 1, 3)
    dqkv = xp.empty((b, t, 3 * h * d), dtype=g.dtype)
    if len(blocks.segs) > 1:
        dqkv[..., h * d:] = 0.0                 # dk, dv sum one product per block
    dq, dk, dv = heads(dqkv, h, d)

    def work(lo, hi, scratch):
        for a, z, row, h0, h1 in pieces(lo, hi, h):
            blocks.backward_units(a, z, q[row, h0:h1], k[row, h0:h1], v[row, h0:h1], o[row, h0:h1],
                                  gh[row, h0:h1], dq[row, h0:h1], dk[row, h0:h1], dv[row, h0:h1], scratch)

    parallel_units(b * h, live_scores(blocks.segs), CHUNK_ELEMENTS, work, xp, g.dtype)
    if scale != 1.0:
        dq *= xp.asarray(scale, dtype=dq.dtype)
    return dqkv


def heads(qkv, h: int, d: int):
    """q, k, v of a packed (B, T, 3 H D) array as (B, H, T, D) views."""
    b, t, _ = qkv.shape
    return [qkv[..., i * h * d:(i + 1) * h * d].reshape(b, t, h, d).transpose(0, 2, 1, 3) for i in range(3)]


# ---------------------------------------------------------------- an additive bias on the scores
def check_bias(bias_shape, b: int, h: int, t: int, s: int) -> None:
    """A clear error unless the bias is (B or 1, H or 1, T, S)."""
    shape = tuple(bias_shape)
    if len(shape) != 4 or shape[0] not in (1, b) or shape[1] not in (1, h) or shape[2:] != (t, s):
        raise ValueError(f"attention: bias shape {shape} must be (B or 1, H or 1, T, S) = "
                         f"({b} or 1, {h} or 1, {t}, {s})")


class Biased:
    """What biased_forward leaves for biased_backward: the scaled queries and the keys and values as
    units, the normalized weights, the dropout factors, the output, and the mask."""

    def __init__(self, qs, kc, vc, probs, keep, out, masked, scale, bias_shape, shape):
        self.qs, self.kc, self.vc, self.probs, self.keep, self.out = qs, kc, vc, probs, keep, out
        self.masked, self.scale, self.bias_shape, self.shape = masked, scale, bias_shape, shape


def biased_forward(q, k, v, bias, masked, scale, dropout_p, keep_inputs: bool):
    """softmax(q k^T * scale + bias, masked keys excluded) v for q (B, H, T, D), k, v (B, Hkv, S, D),
    bias (B or 1, H or 1, T, S) in q's dtype, masked as in forward: (out (B, H, T, D), Biased).

    One score array per call, (B Hkv, rep T, S) queries by keys (each query head group's rows stacked
    as in the blocked path), normalized in place and kept for backward: no blocks, since a dense bias
    leaves no block of keys to skip, and the memory is the scores' (B H T S numbers, 32 MiB of float32
    for 32 rows of 4 heads at T = S = 256; the per-position relations that feed it cost about the same).
    The mask is added as the blocked path's large negative bias, so a row with every key masked gets
    uniform weights and, in backward, no gradient; masked scores give the bias no gradient either.
    Dropout draws its uniforms in the blocked path's order (keys by query rows, per unit): one seed
    drops the same weights on either path and in ops/reference.py."""
    xp = backend.get_array_module(q)
    b, h, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    rep, n = h // hkv, b * hkv
    dtype = q.dtype
    masked = checked_mask(masked, b, t, s, xp)
    qs = units(q * xp.asarray(scale, dtype=dtype), n)                         # (N, rep*T, D)
    kc, vc = units(k, n, keep_inputs), units(v, n, keep_inputs)              # (N, S, D)
    probs = xp.matmul(qs, kc.swapaxes(-1, -2))                               # (N, rep*T, S)
    scores = probs.reshape(b, h, t, s)                                       # a view of the same numbers
    scores += bias
    if masked is not None:
        scores += masked * xp.asarray(xp.finfo(dtype).min / 2, dtype=dtype)  # (Bm, 1, T, S) over the heads
    probs -= probs.max(axis=-1, keepdims=True)
    xp.exp(probs, out=probs)
    probs /= probs.sum(axis=-1, keepdims=True)
    keep = None
    if dropout_p > 0.0:
        gen = backend.generator(backend.device_of(q))
        shape = (n, s, rep * t)
        draws = gen.random(shape, dtype=dtype) if xp is np else gen.random_sample(shape, dtype=dtype)
        keep = ((draws >= dropout_p).astype(dtype) * (1.0 / (1.0 - dropout_p))).swapaxes(-1, -2)
    out = xp.matmul(probs if keep is None else probs * keep, vc)            # (N, rep*T, D)
    saved = Biased(qs, kc, vc, probs, keep, out, masked, scale, tuple(bias.shape), (b, h, t, d, hkv, s))
    return out.reshape(b, h, t, d), saved


def biased_backward(saved: Biased, g, want_q: bool, want_k: bool, want_v: bool, want_bias: bool):
    """(dq, dk, dv, dbias) of biased_forward's call for the output gradient g (B, H, T, D); None
    where not wanted. dS = P * (dP - rowsum(dO * O)) is the gradient of the scores, hence the bias's
    (summed over the axes the bias broadcasts along)."""
    xp = backend.get_array_module(g)
    b, h, t, d, hkv, s = saved.shape
    n = b * hkv
    gg = units(g, n)                                                         # (N, rep*T, D)
    probs, keep = saved.probs, saved.keep
    dv = None
    if want_v:
        used = probs if keep is None else probs * keep
        dv = xp.matmul(used.swapaxes(-1, -2), gg).reshape(b, hkv, s, d)
    ds = xp.matmul(gg, saved.vc.swapaxes(-1, -2))                            # dP (after dropout's factor)
    if keep is not None:
        ds *= keep
    ds -= xp.matmul(gg * saved.out, xp.ones(d, dtype=gg.dtype))[..., None]  # rowsum(dO * O) = rowsum(P dP)
    ds *= probs                                                              # d scores
    if saved.masked is not None:
        ds.reshape(b, h, t, s)[...] *= ~saved.masked                        # masked scores are constants
    dq = dk = dbias = None
    if want_q:
        dq = xp.matmul(ds, saved.kc).reshape(b, h, t, d)
        dq *= xp.asarray(saved.scale, dtype=dq.dtype)
    if want_k:
        dk = xp.matmul(ds.swapaxes(-1, -2), saved.qs).reshape(b, hkv, s, d)   # qs carries the scale
    if want_bias:
        dbias = ds.reshape(b, h, t, s)
        axes = tuple(i for i in (0, 1) if saved.bias_shape[i] == 1 and dbias.shape[i] != 1)
        dbias = dbias.sum(axis=axes, keepdims=True) if axes else dbias
    return dq, dk, dv, dbias
