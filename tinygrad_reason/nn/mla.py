"""Multi-head latent attention (DeepSeek-V2 / V3), and its cache of compressed latents.

For each token x (d features), with H heads, kv rank r, rope width dr, nope width dn, value width dv:

    q      = x Wq                       or  RMSNorm(x Wqa) Wqb   (q compression, rank rq)   (H, dn + dr)
    q      = [qn | qr],  qr <- RoPE(qr)                           per head: dn "no-position" + dr rotary features
    [c|kr] = x Wkva                                               (r + dr): the latent and one shared rope key
    c      = RMSNorm(c),  kr <- RoPE(kr)
    [kn_h | v_h] = c [Wuk_h; Wuv_h]^T                             per head: (dn) key part, (dv) value; Wuk_h
                                                                  (dn, r), Wuv_h (dv, r): head h's rows of kv_b_proj
    k_h    = [kn_h | kr]                                          the rope key is the same for every head
    out_h  = softmax(q_h . k_h / sqrt(dn + dr), causal) v_h
    y      = [out_1 .. out_H] Wo

Two ways to compute it, equal up to rounding:
- expanded (no cache: training, HF's computation): every key and value expanded per head, then the
  fused attention op (ops/attention.py). It needs one width for q, k and v, so the narrower side is
  padded with zeros: zero features of q and k add nothing to a score, zero columns of v give zero
  columns of the output, which are cut off.
- absorbed (with a cache; forward(absorbed=True) forces it): qn_h . (c Wuk_h^T) = (qn_h Wuk_h) . c,
  so a query head becomes q'_h = [qn_h Wuk_h | qr_h] (r + dr) and every head reads the same key
  k' = [c | kr]: multi-query attention with one key "head" of width r + dr. The values are c too:
  softmax(...) [c | kr] keeps its first r columns, P c, and out_h = (P c) Wuv_h^T. The cache
  therefore holds k' and nothing else.

RoPE: the tables are those of ops/rope.py (rotate half, cat(freqs, freqs)) on dr features, base
rope_base. interleave=True (DeepSeek's checkpoints; transformers' rope_interleave, its default)
rotates the pairs (x0, x1), (x2, x3), ...: transformers' apply_rotary_pos_emb_interleave returns
[x_even cos - x_odd sin | x_odd cos + x_even sin], which is the rotate-half RoPE of the features
reordered evens first, then odds; that is what is computed here (two slices, then F.rope). q and k
are reordered alike, so the scores are those of the pairwise rotation. The latent norms have eps
1e-6 whatever the model's norm_eps (transformers' DeepseekV3RMSNorm(kv_lora_rank) default).
Biases: `qkv_bias` puts them on the projections from x that DeepSeek's attention_bias covers
(q_a_proj, kv_a_proj_with_mqa); q_proj, q_b_proj and kv_b_proj have none, as in transformers.

Cache per token per layer, in numbers (bytes: times 4 in float32, 2 in bfloat16):
    MLA  r + dr                      the latent and the shared rope key (LatentCache)
    MHA  H (dn + dr + dv)            every head's key and value (nn/attention.py's KVCache, one width
                                     hd for keys and values: 2 H hd)
    GQA  Hkv (dn + dr + dv)          (KVCache: 2 Hkv hd)
DeepSeek-V3's sizes (H = 128, dn = 128, dr = 64, dv = 128, r = 512): MLA 576 numbers (2,304 B in
float32, 1,152 B in bfloat16); MHA 40,960 (163,840 B), 71x more; GQA with 8 groups 2,560 (10,240 B),
4.4x more. The small config of tests/test_mla.py (H = 4, dn = 8, dr = 4, dv = 6, r = 16; hd = 12):
MLA 20 numbers (80 B in float32); KVCache with head_dim 12: MHA 96 (384 B), GQA with 2 key/value
heads 48 (192 B).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import functional as F
from ..tensor import Tensor
from .attention import CausalSelfAttention, KVCache
from .layers import Dropout, Linear, RMSNorm
from .module import Module

LATENT_NORM_EPS = 1e-6      # transformers' DeepseekV3RMSNorm default, used for q_a_layernorm and kv_a_layernorm


class LatentCache(KVCache):
    """MLA's cache: per layer one (batch, 1, max_len, r + dr) array, the normalized latent c and the
    rotated rope key kr of each position, side by side (the key k' of the absorbed attention; the
    values are its first r columns). Rows are selected as KVCache's; share_prefix copies (select_rows):
    the shared-prefix attention op reads keys and values of one width."""

    def __init__(self, n_layers: int, batch: int, max_len: int, width: int, dtype=np.float32, device: str = "cpu"):
        xp = backend.xp_for(device)
        self.k = [xp.zeros((batch, 1, max_len, width), dtype=dtype) for _ in range(n_layers)]
        self.v = []                              # no values: they are the latents in k
        self.max_len, self.batch, self.width = max_len, batch, width
        self.prefix_len, self.prefix_k, self.prefix_v, self.group = 0, None, None, None
        self.structure = None

    def update(self, layer: int, latent: Tensor, start: int) -> Tensor:
        """Write latent (B, 1, T, r + dr) at positions [start, start + T); return positions [0, start + T)."""
        end = start + latent.shape[2]
        if end > self.max_len:
            raise ValueError(f"LatentCache: positions up to {end} exceed the cache length {self.max_len}")
        if latent.shape[0] != self.batch or latent.shape[-1] != self.width:
            raise ValueError(f"LatentCache: latent of shape {latent.shape} does not fit the cache's batch "
                             f"{self.batch} and width {self.width}")
        self.k[layer][:, :, start:end] = latent.data
        return Tensor._wrap(self.k[layer][:, :, :end])

    def prefix(self, layer: int):
        return None

    def share_prefix(self, rows, filled: int) -> None:
        return self.select_rows(rows, filled)

    def bytes_per_token(self) -> int:
        """Bytes one position takes in all layers together."""
        return len(self.k) * self.width * self.k[0].dtype.itemsize


def _padded(a: Tensor, width: int) -> Tensor:
    """a with zero features appended on the last axis up to `width`."""
    if a.shape[-1] == width:
        return a
    return F.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])])


class MultiHeadLatentAttention(Module):
    """MLA (the module docstring). Parameters named as transformers' DeepseekV3Attention: q_proj, or
    q_a_proj / q_a_layernorm / q_b_proj; kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj."""

    def __init__(self, d_model: int, n_heads: int, kv_rank: int, rope_dim: int, nope_dim: int, v_dim: int,
                 q_rank: int | None = None, qkv_bias: bool = False, o_bias: bool = False, dropout: float = 0.0,
                 interleave: bool = True, dtype=np.float32):
        if rope_dim % 2:
            raise ValueError(f"MultiHeadLatentAttention: rope_dim must be even, got {rope_dim}")
        self.n_heads, self.kv_rank, self.q_rank = n_heads, kv_rank, q_rank
        self.rope_dim, self.nope_dim, self.v_dim, self.interleave = rope_dim, nope_dim, v_dim, interleave
        qk = nope_dim + rope_dim
        if q_rank is None:
            self.q_proj = Linear(d_model, n_heads * qk, False, dtype)
        else:
            self.q_a_proj = Linear(d_model, q_rank, qkv_bias, dtype)
            self.q_a_layernorm = RMSNorm(q_rank, LATENT_NORM_EPS, dtype)
            self.q_b_proj = Linear(q_rank, n_heads * qk, False, dtype)
        self.kv_a_proj_with_mqa = Linear(d_model, kv_rank + rope_dim, qkv_bias, dtype)
        self.kv_a_layernorm = RMSNorm(kv_rank, LATENT_NORM_EPS, dtype)
        self.kv_b_proj = Linear(kv_rank, n_heads * (nope_dim + v_dim), False, dtype)
        self.o_proj = Linear(n_heads * v_dim, d_model, o_bias, dtype)
        self.attn_dropout = Dropout(dropout)
        self.resid_dropout = Dropout(dropout)

    def _rope(self, a: Tensor, rope_tables) -> Tensor:
        if self.interleave:          # evens first, then odds: the interleaved pairs laid out for rotate-half
            a = F.concatenate([a[..., 0::2], a[..., 1::2]], axis=-1)
        return F.rope(a, *rope_tables)

    def latent(self, x: Tensor, rope_tables) -> Tensor:
        """[c | kr] (B, 1, T, r + dr): the normalized latent and the rotated shared rope key."""
        b, t, _ = x.shape
        ckv = self.kv_a_proj_with_mqa(x).reshape(b, 1, t, self.kv_rank + self.rope_dim)
        c = self.kv_a_layernorm(ckv[..., :self.kv_rank])
        kr = self._rope(ckv[..., self.kv_rank:], rope_tables)
        return F.concatenate([c, kr], axis=-1)

    def queries(self, x: Tensor, rope_tables) -> tuple:
        """qn (B, H, T, dn) and the rotated qr (B, H, T, dr)."""
        b, t, _ = x.shape
        q = self.q_proj(x) if self.q_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.reshape(b, t, self.n_heads, self.nope_dim + self.rope_dim).transpose(1, 2)
        return q[..., :self.nope_dim], self._rope(q[..., self.nope_dim:], rope_tables)

    def _kv_b(self):
        """Wuk (H, dn, r) and Wuv (H, dv, r): kv_b_proj's weight by head."""
        w = self.kv_b_proj.weight.reshape(self.n_heads, self.nope_dim + self.v_dim, self.kv_rank)
        return w[:, :self.nope_dim], w[:, self.nope_dim:]

    def forward(self, x, rope_tables=None, pad_mask=None, cache: LatentCache | None = None, layer: int = 0,
                start: int = 0, step=None, absorbed: bool | None = None):
        """x (B, T, d); rope_tables (cos, sin) for positions [start, start + T) on dr features; pad_mask
        (B, S) True for real tokens over the S = start + T keys. absorbed: None = absorbed with a cache,
        expanded without; True / False force one (a cache needs absorbed)."""
        if rope_tables is None:
            raise ValueError("MultiHeadLatentAttention: needs RoPE tables (positions='rope')")
        if step is not None:
            raise ValueError("MultiHeadLatentAttention: step attention is not supported")
        if absorbed is None:
            absorbed = cache is not None
        if cache is not None and not absorbed:
            raise ValueError("MultiHeadLatentAttention: the latent cache is read by the absorbed attention")
        b, t, _ = x.shape
        h, r, dn, dv = self.n_heads, self.kv_rank, self.nope_dim, self.v_dim
        scale = 1.0 / math.sqrt(dn + self.rope_dim)
        p = self.attn_dropout.p if self.training else 0.0
        qn, qr = self.queries(x, rope_tables)
        latent = self.latent(x, rope_tables)                                     # (B, 1, T, r + dr)
        if cache is not None:
            latent = cache.update(layer, latent, start)                          # (B, 1, S, r + dr)
        masked = CausalSelfAttention._mask(x, t, latent.shape[2], start, pad_mask)   # (1 or B, 1, T, S)
        w_uk, w_uv = self._kv_b()
        if absorbed:
            q = F.concatenate([qn @ w_uk, qr], axis=-1)                          # (B, H, T, r + dr)
            pc = F.attention(q, latent, latent, masked, scale, p)[..., :r]       # P c: (B, H, T, r)
            out = pc @ w_uv.transpose(1, 2)                                      # (B, H, T, dv)
        else:
            s = latent.shape[2]
            c, kr = latent[..., :r], latent[..., r:]
            kv = self.kv_b_proj(c).reshape(b, s, h, dn + dv).transpose(1, 2)     # (B, H, S, dn + dv)
            k = F.concatenate([kv[..., :dn], kr.expand(b, h, s, self.rope_dim)], axis=-1)
            q = F.concatenate([qn, qr], axis=-1)
            width = max(dn + self.rope_dim, dv)
            out = F.attention(_padded(q, width), _padded(k, width), _padded(kv[..., dn:], width), masked,
                              scale, p)[..., :dv]                                # (B, H, T, dv)
        out = out.transpose(1, 2).reshape(b, t, h * dv)
        return self.resid_dropout(self.o_proj(out))

    def extra_repr(self) -> str:
        return (f"heads={self.n_heads}, kv_rank={self.kv_rank}, q_rank={self.q_rank}, rope={self.rope_dim}, "
                f"nope={self.nope_dim}, v={self.v_dim}, interleave={self.interleave}")

