"""Rotary position embedding (RoPE) as one op, in the "rotate half" layout of Llama / Qwen / HF.

Each head vector x of size d is split into halves (x1, x2) and every pair (x1[i], x2[i]) is
rotated by the angle pos * base^(-2i/d):  y = x * cos + rotate_half(x) * sin,
rotate_half(x) = (-x2, x1). A rotation's transpose is the rotation by the opposite angle, so the
backward is this same op with -sin (and so differentiable again).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Function, Tensor


def rope_tables(n_positions: int, head_dim: int, base: float = 10000.0, dtype=np.float32, device: str = "cpu"):
    """cos and sin tables of shape (n_positions, head_dim), frequencies repeated for both halves."""
    if head_dim % 2:
        raise ValueError(f"rope: head_dim must be even, got {head_dim}")
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(n_positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=1)
    xp = backend.xp_for(device)
    return xp.asarray(np.cos(angles).astype(dtype)), xp.asarray(np.sin(angles).astype(dtype))


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half] -= x[..., half:] * sin[..., :half]
    out[..., half:] += x[..., :half] * sin[..., half:]
    return out


class Rope(Function):
    """x (..., T, d) rotated by per-position tables cos, sin of shape (T, d), or any shape that
    broadcasts to x's (e.g. (B, 1, T, d) for per-row positions); the tables are not differentiated."""
    def forward(self, x, cos, sin):
        try:
            fits = sin.shape == cos.shape and np.broadcast_shapes(cos.shape, x.shape) == x.shape
        except ValueError:
            fits = False
        if not fits or cos.shape[-1] != x.shape[-1]:
            raise ValueError(f"rope: tables of shape {cos.shape} / {sin.shape} do not broadcast to input "
                             f"shape {x.shape}")
        self.cos, self.sin = cos, sin
        return _rotate(x, cos, sin)

    def backward(self, g):
        return Rope.apply(g, cos=self.cos, sin=-self.sin)


def rope(x, cos, sin):
    """Apply rotary embeddings; cos / sin are arrays or Tensors of shape (T, head_dim)."""
    cos = cos.data if isinstance(cos, Tensor) else cos
    sin = sin.data if isinstance(sin, Tensor) else sin
    return Rope.apply(x, cos=cos.astype(x.dtype, copy=False), sin=sin.astype(x.dtype, copy=False))
