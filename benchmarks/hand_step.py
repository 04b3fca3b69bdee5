"""The bench_train.py model's training step written by hand in plain NumPy: no autograd, no Tensor,
nothing from tinygrad_reason. The reference our engine's overhead is measured against (bench_train.py
--hand): what the same step costs when every forward and backward line is written out and every
buffer is chosen by hand, as the issue's "NumPy step written entirely by hand" was.

The same model as bench_train.py (learned token + position embeddings, pre-norm LayerNorm with bias,
causal attention written out, exact-erf GELU MLP, untied head without bias, cross-entropy) and the same
AdamW (decoupled decay on the matrices, torch's bias correction). Written for speed the way a careful
NumPy user would, and no further:
- every parameter and every gradient is a view into one flat float32 buffer, matrices first, so AdamW
  is a few in-place passes over two slices;
- q, k and v of a layer are one (3d, d) matrix (their rows lie next to each other in the buffer), so one
  GEMM makes them, and the heads are read from its output in place;
- LayerNorm and GELU run over blocks of rows small enough to stay in cache, attention one sequence at
  a time (its full T x T scores, as torch's written-out attention computes them), and row or column sums
  are matrix-vector products with a vector of ones;
- GELU keeps its derivative from the forward (one multiply in the backward); erf is Abramowitz and
  Stegun 7.1.26 (absolute error under 1.5e-7; NumPy has no erf);
- the token-embedding gradient sums rows grouped by a sort (np.add.at is ~12x slower).
It is single-threaded apart from OpenBLAS's own threads inside the GEMMs.

`HandGPT(state, ...)` copies a state dict (the names bench_train.py's models use); `step(ids, targets)`
runs zero-grad, forward, cross-entropy, backward and AdamW, and returns the loss
(`loss_and_grads` stops before AdamW, the gradients left in `g`). `times` accumulates
seconds per part of the step (linear GEMMs, attention, LayerNorm, GELU, ...).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np

ROWS_PER_BLOCK = 256          # rows of an elementwise block: 256 x 1536 float32 is 1.5 MiB, inside L2

_ERF_P = 0.3275911           # Abramowitz & Stegun 7.1.26
_ERF_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


class HandGPT:
    def __init__(self, state: dict, n_heads: int, lr: float = 3e-4, betas=(0.9, 0.95), weight_decay: float = 0.1,
                 eps: float = 1e-8, norm_eps: float = 1e-5):
        self.n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        self.n_heads, self.norm_eps = n_heads, norm_eps
        self.lr, self.betas, self.weight_decay, self.eps = lr, betas, weight_decay, eps
        self.times: dict[str, float] = {}
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
        # matrices (decayed) first, then vectors; within a layer q, k, v next to each other
        order = [k for k in arrays if arrays[k].ndim >= 2] + [k for k in arrays if arrays[k].ndim < 2]
        sizes = [arrays[k].size for k in order]
        self.n_decay = sum(arrays[k].size for k in order if arrays[k].ndim >= 2)
        total = sum(sizes)
        self.flat, self.grad_flat = np.empty(total, np.float32), np.zeros(total, np.float32)
        self.m, self.v = np.zeros(total, np.float32), np.zeros(total, np.float32)
        self.p, self.g, self._span = {}, {}, {}
        start = 0
        for k, size in zip(order, sizes):
            shape = arrays[k].shape
            self.p[k] = self.flat[start:start + size].reshape(shape)
            self.p[k][...] = arrays[k]
            self.g[k] = self.grad_flat[start:start + size].reshape(shape)
            self._span[k] = (start, start + size)
            start += size
        for i in range(self.n_layers):                  # q, k, v must make one matrix: check it now
            self._qkv(self.p, i, "weight"), self._qkv(self.p, i, "bias")
        self.step_count = 0

    def _qkv(self, store: dict, i: int, kind: str) -> np.ndarray:
        """The (3d, d) weight or (3d,) bias of layer i's q, k and v: one view of the flat buffer."""
        names = [f"blocks.{i}.attn.{n}_proj.{kind}" for n in "qkv"]
        (lo, a), (b, c), (d, hi) = (self._span[n] for n in names)
        if a != b or c != d:
            raise ValueError(f"HandGPT: the state dict must list {', '.join(names)} one after another")
        base = self.flat if store is self.p else self.grad_flat
        shape = (3 * store[names[0]].shape[0],) + store[names[0]].shape[1:]
        return base[lo:hi].reshape(shape)

    @contextmanager
    def _timed(self, part: str):
        t0 = time.perf_counter()
        yield
        self.times[part] = self.times.get(part, 0.0) + time.perf_counter() - t0

    # --- LayerNorm: y = (x - mean) * rstd * w + b, by blocks of rows --------------------------------------
    def _layer_norm(self, x, w, b):
        n, d = x.shape
        y, xhat, rstd = np.empty_like(x), np.empty_like(x), np.empty(n, np.float32)
        ones = np.full(d, 1.0 / d, np.float32)
        for lo in range(0, n, ROWS_PER_BLOCK):
            s = slice(lo, lo + ROWS_PER_BLOCK)
            xc = np.subtract(x[s], (x[s] @ ones)[:, None], out=xhat[s])
            r = 1.0 / np.sqrt(np.square(xc, out=y[s]) @ ones + self.norm_eps)
            rstd[s] = r
            xc *= r[:, None]
            np.multiply(xc, w, out=y[s])
            y[s] += b
        return y, (xhat, rstd)

    def _layer_norm_back(self, dy, saved, w, dw, db, dx_acc):
        """Adds the input gradient into dx_acc; writes dw, db."""
        xhat, rstd = saved
        n, d = dy.shape
        ones_rows = np.ones(n, np.float32)
        db[...] = ones_rows @ dy
        ones = np.full(d, 1.0 / d, np.float32)
        dxhat = np.empty((min(n, ROWS_PER_BLOCK), d), np.float32)
        prod = np.empty_like(dxhat)
        dw_acc = np.zeros(d, np.float32)
        for lo in range(0, n, ROWS_PER_BLOCK):
            s = slice(lo, lo + ROWS_PER_BLOCK)
            rows = dy[s].shape[0]
            g, p = np.multiply(dy[s], w, out=dxhat[:rows]), prod[:rows]
            np.multiply(dy[s], xhat[s], out=p)
            dw_acc += ones_rows[:rows] @ p
            np.multiply(g, xhat[s], out=p)
            mean_g, mean_gx = g @ ones, p @ ones
            g -= mean_g[:, None]
            np.multiply(xhat[s], mean_gx[:, None], out=p)
            g -= p
            g *= rstd[s][:, None]
            dx_acc[s] += g
        dw[...] = dw_acc

    # --- GELU, exact erf, with its derivative kept for the backward ----------------------------------------
    @staticmethod
    def _gelu(u):
        """gelu(u) = u Phi(u) and gelu'(u) = Phi(u) + u phi(u), by blocks of rows, in preallocated scratch."""
        out, deriv = np.empty_like(u), np.empty_like(u)
        rows = min(u.shape[0], ROWS_PER_BLOCK)
        e, t = np.empty((rows, u.shape[1]), np.float32), np.empty((rows, u.shape[1]), np.float32)
        for lo in range(0, u.shape[0], ROWS_PER_BLOCK):
            s = slice(lo, lo + ROWS_PER_BLOCK)
            x, phi, n = u[s], deriv[s], u[s].shape[0]
            e_, t_ = e[:n], t[:n]
            np.abs(x, out=t_)
            t_ *= _ERF_P / math.sqrt(2.0)
            t_ += 1.0
            np.reciprocal(t_, out=t_)                      # t = 1 / (1 + p |u| / sqrt 2)
            np.multiply(t_, 0.5 * _ERF_A[0], out=phi)      # Horner, the 0.5 of Phi folded in
            for a in _ERF_A[1:]:
                phi += 0.5 * a
                phi *= t_
            np.square(x, out=e_)
            e_ *= -0.5
            np.exp(e_, out=e_)                             # exp(-u^2 / 2)
            phi *= e_                                      # q = Phi(-|u|)
            np.subtract(0.5, phi, out=phi)
            np.copysign(phi, x, out=phi)
            phi += 0.5                                     # Phi(u) = 0.5 + sign(u) (0.5 - q)
            np.multiply(x, phi, out=out[s])
            e_ *= x
            e_ *= 1.0 / math.sqrt(2.0 * math.pi)           # u phi(u)
            phi += e_
        return out, deriv

    # --- the step ---------------------------------------------------------------------------------------------
    def step(self, ids: np.ndarray, targets: np.ndarray) -> float:
        """zero-grad, forward, cross-entropy, backward, AdamW; the loss."""
        loss = self.loss_and_grads(ids, targets)
        with self._timed("adamw"):
            self._adamw()
        return loss

    def loss_and_grads(self, ids: np.ndarray, targets: np.ndarray) -> float:
        """The mean cross-entropy; every parameter's gradient left in self.g (views of grad_flat)."""
        p, g, timed = self.p, self.g, self._timed
        B, T = ids.shape
        N, H = B * T, self.n_heads
        d = p["tok_emb.weight"].shape[1]
        hd = d // H
        scale = np.float32(1.0 / math.sqrt(hd))
        g["tok_emb.weight"][...] = 0.0                  # every other gradient is written whole below
        g["pos_emb.weight"][T:] = 0.0
        flat_ids = ids.reshape(-1)

        with timed("embedding"):
            x = p["tok_emb.weight"][flat_ids]
            x.reshape(B, T, d)[...] += p["pos_emb.weight"][:T]
        with timed("attention"):
            mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
        saved = []
        for i in range(self.n_layers):
            pre = f"blocks.{i}."
            with timed("layernorm"):
                h, ln1 = self._layer_norm(x, p[pre + "attn_norm.weight"], p[pre + "attn_norm.bias"])
            with timed("linear"):
                qkv = h @ self._qkv(p, i, "weight").T
                qkv += self._qkv(p, i, "bias")
            with timed("attention"):
                heads = qkv.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)      # (3, B, H, T, hd), a view
                heads[0] *= scale                                                 # q / sqrt(hd), in place
                att = np.empty((B, H, T, T), np.float32)
                y = np.empty((B, T, H, hd), np.float32)
                for b in range(B):                                                # one sequence's heads stay in cache
                    s = np.matmul(heads[0, b], heads[1, b].transpose(0, 2, 1), out=att[b])
                    s += mask
                    s -= s.max(axis=-1, keepdims=True)
                    np.exp(s, out=s)
                    s /= s.sum(axis=-1, keepdims=True)
                    y[b] = (s @ heads[2, b]).transpose(1, 0, 2)
                y = y.reshape(N, d)
            with timed("linear"):
                a = y @ p[pre + "attn.o_proj.weight"].T
                a += p[pre + "attn.o_proj.bias"]
            x = x + a
            with timed("layernorm"):
                h2, ln2 = self._layer_norm(x, p[pre + "mlp_norm.weight"], p[pre + "mlp_norm.bias"])
            with timed("linear"):
                u = h2 @ p[pre + "mlp.fc.weight"].T
                u += p[pre + "mlp.fc.bias"]
            with timed("gelu"):
                act, dact = self._gelu(u)
                del u
            with timed("linear"):
                m = act @ p[pre + "mlp.proj.weight"].T
                m += p[pre + "mlp.proj.bias"]
            x += m
            saved.append((h, ln1, qkv, heads, att, y, h2, ln2, act, dact))
        with timed("layernorm"):
            xf, lnf = self._layer_norm(x, p["norm.weight"], p["norm.bias"])
        with timed("linear"):
            logits = xf @ p["lm_head.weight"].T
        with timed("cross_entropy"):
            flat_targets = targets.reshape(-1)
            logits -= logits.max(axis=1, keepdims=True)
            picked = logits[np.arange(N), flat_targets]
            np.exp(logits, out=logits)
            sums = logits.sum(axis=1)
            loss = float(np.mean(np.log(sums) - picked))
            logits /= (sums * N)[:, None]                                         # softmax / N
            logits[np.arange(N), flat_targets] -= 1.0 / N
            dlogits = logits

        ones_rows = np.ones(N, np.float32)
        with timed("linear"):
            np.matmul(dlogits.T, xf, out=g["lm_head.weight"])
            dxf = dlogits @ p["lm_head.weight"]
        dx = np.zeros((N, d), np.float32)
        with timed("layernorm"):
            self._layer_norm_back(dxf, lnf, p["norm.weight"], g["norm.weight"], g["norm.bias"], dx)
        for i in reversed(range(self.n_layers)):
            pre = f"blocks.{i}."
            h, ln1, qkv, heads, att, y, h2, ln2, act, dact = saved.pop()
            with timed("linear"):
                np.matmul(dx.T, act, out=g[pre + "mlp.proj.weight"])
                g[pre + "mlp.proj.bias"][...] = ones_rows @ dx
                dact_in = dx @ p[pre + "mlp.proj.weight"]
            with timed("gelu"):
                dact_in *= dact
            with timed("linear"):
                np.matmul(dact_in.T, h2, out=g[pre + "mlp.fc.weight"])
                g[pre + "mlp.fc.bias"][...] = ones_rows @ dact_in
                dh2 = dact_in @ p[pre + "mlp.fc.weight"]
            with timed("layernorm"):
                self._layer_norm_back(dh2, ln2, p[pre + "mlp_norm.weight"], g[pre + "mlp_norm.weight"],
                                      g[pre + "mlp_norm.bias"], dx)
            with timed("linear"):
                np.matmul(dx.T, y, out=g[pre + "attn.o_proj.weight"])
                g[pre + "attn.o_proj.bias"][...] = ones_rows @ dx
                dy = dx @ p[pre + "attn.o_proj.weight"]
            with timed("attention"):
                dqkv = np.empty((B, T, 3, H, hd), np.float32)
                dheads = dqkv.transpose(2, 0, 3, 1, 4)
                dy = dy.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
                for b in range(B):
                    probs = att[b]
                    np.matmul(probs.transpose(0, 2, 1), dy[b], out=dheads[2, b])         # dv
                    ds = dy[b] @ heads[2, b].transpose(0, 2, 1)                         # d probs
                    ds -= (ds * probs).sum(axis=-1, keepdims=True)
                    ds *= probs                                                        # d scores
                    np.matmul(ds, heads[1, b], out=dheads[0, b])                        # d (q / sqrt hd)
                    np.matmul(ds.transpose(0, 2, 1), heads[0, b], out=dheads[1, b])     # dk
                dheads[0] *= scale
                dqkv = dqkv.reshape(N, 3 * d)
            with timed("linear"):
                np.matmul(dqkv.T, h, out=self._qkv(g, i, "weight"))
                self._qkv(g, i, "bias")[...] = ones_rows @ dqkv
                dh = dqkv @ self._qkv(p, i, "weight")
            with timed("layernorm"):
                self._layer_norm_back(dh, ln1, p[pre + "attn_norm.weight"], g[pre + "attn_norm.weight"],
                                      g[pre + "attn_norm.bias"], dx)
        with timed("embedding"):
            g["pos_emb.weight"][:T] = dx.reshape(B, T, d).sum(axis=0)
            order = np.argsort(flat_ids, kind="stable")
            sorted_ids = flat_ids[order]
            starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
            g["tok_emb.weight"][sorted_ids[starts]] = np.add.reduceat(dx[order], starts, axis=0)
        return loss

    def _adamw(self):
        """torch.optim.AdamW over the flat buffers, in place: decay on the matrices (the first n_decay)."""
        self.step_count += 1
        b1, b2 = self.betas
        lr, t = self.lr, self.step_count
        g, m, v, w = self.grad_flat, self.m, self.v, self.flat
        w[:self.n_decay] *= 1.0 - lr * self.weight_decay
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        g *= g                                            # the next step writes every gradient anew
        g *= 1.0 - b2
        v += g
        denom = np.sqrt(v, out=g)
        denom *= 1.0 / math.sqrt(1.0 - b2 ** t)
        denom += self.eps
        np.divide(m, denom, out=denom)
        denom *= lr / (1.0 - b1 ** t)
        w -= denom
