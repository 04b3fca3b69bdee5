"""Causal multi-head self-attention with grouped-query heads and a preallocated KV cache.

Projections to q, k, v heads, RoPE / QK-norm when configured, then the fused attention op
(ops/attention.py: scores = q k^T / sqrt(d), causal and padding mask, softmax, weighted sum of
v, forward and backward written out side by side), then the output projection. With
n_kv_heads < n_heads, each key/value head serves n_heads / n_kv_heads query heads.

The classic GPT (no RoPE, no QK-norm, one key/value head per query head) without a cache takes
a shorter road: q, k and v come from one product with the concatenated weights, and
packed_attention reads the heads where they lie and writes the layout o_proj reads. In the
small GPT's training step that saved 3-4% (A/B in one process: 2382 -> 2280 ms on 2 threads,
3131 -> 3030 ms on 1). The parameters stay q_proj / k_proj / v_proj, as in checkpoints and HF.

Step attention (nn/step_attention.py, off by default): the transformer passes each layer the
relations of its queries to its keys. "mask" hides the keys of relation OTHER (a boolean mask, so
every path above stays as it is); "bias" adds relation_bias[head, relation] to the scores, a
(n_heads, 4) Parameter initialised to zero, through the biased attention op (the q, k, v path).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import functional as F
from ..tensor import Tensor
from .layers import Dropout, Linear, RMSNorm
from .module import Module, Parameter
from .step_attention import MODES as STEP_MODES, N_RELATIONS


class KVCache:
    """Keys and values of every layer, preallocated for `max_len` positions of `batch` rows.

    After share_prefix, positions [0, prefix_len) are not stored per row: each row continues one
    of a few shared prefixes (prefix_k / prefix_v, group[row] its prefix), and its own slots hold
    positions [prefix_len, max_len). The N samples of one prompt then keep one copy of its keys,
    and a decode step reads them once for the N rows (ops/attention.prefix_attention)."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
                 dtype=np.float32, device: str = "cpu"):
        xp = backend.xp_for(device)
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.k = [xp.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.v = [xp.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.max_len, self.batch = max_len, batch
        self.prefix_len, self.prefix_k, self.prefix_v, self.group = 0, None, None, None
        # what a model keeps per position beside the keys (nn.step_attention.StepStructure), or None;
        # select_rows and share_prefix take its rows with theirs
        self.structure = None

    def update(self, layer: int, k: Tensor, v: Tensor, start: int):
        """Write positions [start, start + T) and return the keys/values of positions [prefix_len, start + T)
        (views): all of them when no prefix is shared."""
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KVCache: positions up to {end} exceed the cache length {self.max_len}")
        if start < self.prefix_len:
            raise ValueError(f"KVCache: position {start} lies in the shared prefix (positions [0, {self.prefix_len}))")
        if k.shape[0] != self.batch:
            raise ValueError(f"KVCache: batch {k.shape[0]} differs from the cache's batch {self.batch}")
        self.k[layer][:, :, start:end] = k.data
        self.v[layer][:, :, start:end] = v.data
        p = self.prefix_len
        return Tensor._wrap(self.k[layer][:, :, p:end]), Tensor._wrap(self.v[layer][:, :, p:end])

    def prefix(self, layer: int):
        """(keys, values, group) of the shared prefix at `layer`: (G, Hkv, P, D) twice and (batch,)
        indices into G; None without one."""
        return None if not self.prefix_len else (self.prefix_k[layer], self.prefix_v[layer], self.group)

    def _checked_rows(self, rows, filled: int, method: str):
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.batch)):
            raise ValueError(f"KVCache.{method}: rows must be 1-d indices into the batch of {self.batch}, got {rows}")
        if not self.prefix_len <= filled <= self.max_len:
            raise ValueError(f"KVCache.{method}: filled {filled} is outside [{self.prefix_len}, {self.max_len}]")
        return rows

    def select_rows(self, rows, filled: int) -> None:
        """The batch becomes rows `rows` of the current one (indices, in their new order; a row may be
        dropped or repeated): the sequences still being decoded, or one prompt's cache copied to each
        of its samples. Positions [0, filled) are copied (a shared prefix is not: the rows keep theirs);
        later slots are left unwritten, for update."""
        rows = self._checked_rows(rows, filled, "select_rows")
        p = self.prefix_len
        for cache in (self.k, self.v):
            for layer, old in enumerate(cache):
                xp = backend.get_array_module(old)
                new = xp.empty((rows.size,) + old.shape[1:], dtype=old.dtype)
                new[:, :, p:filled] = old[xp.asarray(rows), :, p:filled]
                cache[layer] = new
        self.batch = rows.size
        if self.structure is not None:
            self.structure.select_rows(rows)
        if p:                                   # keep only the prefixes some row still continues
            used, self.group = np.unique(self.group[rows], return_inverse=True)
            if used.size < self.prefix_k[0].shape[0]:
                self.prefix_k = [a[used] for a in self.prefix_k]
                self.prefix_v = [a[used] for a in self.prefix_v]

    def share_prefix(self, rows, filled: int) -> None:
        """The same sequences as select_rows(rows, filled), without copying positions [0, filled): they
        become prefixes shared by the rows that continue them, and each row writes its own keys from
        slot `filled` on. NumPy only (the decode-step attention that reads a shared prefix is written
        for NumPy); on other arrays, and once a prefix is shared, it is select_rows."""
        rows = self._checked_rows(rows, filled, "share_prefix")
        if self.prefix_len or backend.get_array_module(self.k[0]) is not np or filled == 0:
            return self.select_rows(rows, filled)
        used, group = np.unique(rows, return_inverse=True)
        self.prefix_k = [np.ascontiguousarray(a[used, :, :filled]) for a in self.k]
        self.prefix_v = [np.ascontiguousarray(a[used, :, :filled]) for a in self.v]
        # every row's own slots; [0, filled) is never written or read (np.empty leaves those pages untouched)
        self.k = [np.empty((rows.size,) + a.shape[1:], dtype=a.dtype) for a in self.k]
        self.v = [np.empty((rows.size,) + a.shape[1:], dtype=a.dtype) for a in self.v]
        self.group, self.prefix_len, self.batch = group, filled, rows.size
        if self.structure is not None:          # a few numbers per position: each row keeps its own copy
            self.structure.select_rows(rows)


def causal_mask(t_q: int, t_k: int, start: int, xp=np):
    """True where query i (at absolute position start + i) may NOT look at key j (j > start + i)."""
    return xp.arange(t_k)[None, :] > (start + xp.arange(t_q))[:, None]


class CausalSelfAttention(Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int, qkv_bias: bool = False,
                 o_bias: bool = False, qk_norm: bool = False, dropout: float = 0.0, norm_eps: float = 1e-6,
                 dtype=np.float32, step_attention: str = "none"):
        """qkv_bias: biases on the q, k and v projections; o_bias: on the output projection (Qwen2 has
        the first without the second). step_attention: "none", "mask" or "bias" (the module docstring)."""
        if step_attention not in STEP_MODES:
            raise ValueError(f"CausalSelfAttention: step_attention must be one of {STEP_MODES}, got {step_attention!r}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.step_attention = step_attention
        self.q_proj = Linear(d_model, n_heads * head_dim, qkv_bias, dtype)
        self.k_proj = Linear(d_model, n_kv_heads * head_dim, qkv_bias, dtype)
        self.v_proj = Linear(d_model, n_kv_heads * head_dim, qkv_bias, dtype)
        self.o_proj = Linear(n_heads * head_dim, d_model, o_bias, dtype)
        self.q_norm = RMSNorm(head_dim, norm_eps, dtype) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, norm_eps, dtype) if qk_norm else None
        self.attn_dropout = Dropout(dropout)
        self.resid_dropout = Dropout(dropout)
        # one learned scalar per head and step relation (QUESTION, SAME, RESULT, OTHER), added to the
        # scores; zero, so the model starts as plain causal attention
        self.relation_bias = Parameter(np.zeros((n_heads, N_RELATIONS), dtype=dtype)) \
            if step_attention == "bias" else None

    def forward(self, x, rope_tables=None, pad_mask=None, cache: KVCache | None = None, layer: int = 0,
                start: int = 0, step=None):
        """x (B, T, d). rope_tables: (cos, sin) for positions [start, start+T) or None.
        pad_mask: (B, S) boolean, True for real tokens, over all key positions S = start + T.
        step: None, or nn.step_attention.StepInputs for these queries and keys (step attention on)."""
        b, t, _ = x.shape
        h, hkv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        scale = 1.0 / math.sqrt(hd)
        p = self.attn_dropout.p if self.training else 0.0
        bias = None
        if step is not None and self.relation_bias is not None:
            bias = F.linear(step.onehot, self.relation_bias).permute(0, 3, 1, 2)      # (B, H, T, S)
        if self.q_norm is None and rope_tables is None and cache is None and h == hkv and bias is None:
            # the classic GPT's path: one GEMM for q, k and v, whose heads packed_attention reads in
            # place and whose output is already the layout o_proj reads (no head transposes or copies)
            masked = self._with_step(self._mask(x, t, t, 0, pad_mask), step)
            out = F.packed_attention(self._qkv(x, scale), h, masked, 1.0, p)
            return self.resid_dropout(self.o_proj(out))
        q = self.q_proj(x).reshape(b, t, h, hd).transpose(1, 2)       # (B, H, T, hd)
        k = self.k_proj(x).reshape(b, t, hkv, hd).transpose(1, 2)     # (B, Hkv, T, hd)
        v = self.v_proj(x).reshape(b, t, hkv, hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope_tables is not None:
            cos, sin = rope_tables
            q, k = F.rope(q, cos, sin), F.rope(k, cos, sin)
        prefix = None
        if cache is not None:
            k, v = cache.update(layer, k, v, start)
            prefix = cache.prefix(layer)                 # rows continuing shared prefixes (KVCache.share_prefix)
        masked = self._mask(x, t, k.shape[2] + (cache.prefix_len if cache is not None else 0), start, pad_mask)
        masked = self._with_step(masked, step)
        if prefix is None:
            out = F.attention(q, k, v, masked, scale, p, bias)                        # (B, H, T, hd)
        else:
            out = F.prefix_attention(q, k, v, prefix, masked, scale, p, bias)
        out = out.transpose(1, 2).reshape(b, t, h * hd)
        return self.resid_dropout(self.o_proj(out))

    def _qkv(self, x, scale: float):
        """x @ [scale Wq; Wk; Wv]^T (+ the biases, q's scaled too): q, k and v in one product, the
        scale riding on q's weights (a d x d multiply instead of one over every q). The weights are
        concatenated on each call (a copy of 3 d^2 numbers, small beside the product's T d^2)."""
        weight = F.concatenate([self.q_proj.weight * scale, self.k_proj.weight, self.v_proj.weight], axis=0)
        bias = None
        if self.q_proj.bias is not None:          # q, k and v have biases together or not at all
            bias = F.concatenate([self.q_proj.bias * scale, self.k_proj.bias, self.v_proj.bias], axis=0)
        return F.linear(x, weight, bias)

    @staticmethod
    def _with_step(masked, step):
        """The causal / padding mask with the keys step attention hides added (B, 1, T, S)."""
        if step is None:
            return masked
        return step.masked if masked is None else masked | step.masked

    @staticmethod
    def _mask(x, t: int, s: int, start: int, pad_mask):
        if pad_mask is None and t == 1:
            return None          # one query at the newest position sees every key: no mask to apply
        masked = causal_mask(t, s, start, x.xp)[None, None]              # (1, 1, T, S)
        if pad_mask is not None:
            keep = pad_mask.data if isinstance(pad_mask, Tensor) else x.xp.asarray(pad_mask)
            masked = masked | ~keep.astype(bool)[:, None, None, :]
        return masked
