"""Rotary position embedding (RoPE) as one op, in the "rotate half" layout of Llama / Qwen / HF.

Each head vector x of size d is split into halves (x1, x2) and every pair (x1[i], x2[i]) is
rotated by the angle pos * base^(-2i/d):  y = x * cos + rotate_half(x) * sin,
rotate_half(x) = (-x2, x1). A rotation's transpose is the rotation by the opposite angle, so the
backward is this same op with -sin (and so differentiable again). The tables may stretch the
frequencies for contexts longer than the training one (linear or Llama 3.1 scaling); the op is the same.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Function, Tensor


ROPE_SCALINGS = ("none", "linear", "llama3")


def rope_inverse_frequencies(head_dim: int, base: float = 10000.0, *, scaling: str = "none", factor: float = 1.0,
                             low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
                             original_context: int = 8192) -> np.ndarray:
    """The head_dim / 2 rotation speeds base^(-2i/d), float64, optionally stretched for a longer context.

    "linear" (position interpolation): every frequency divided by `factor`, i.e. positions scaled by
    1/factor. "llama3" (Llama 3.1): wavelengths longer than original_context / low_freq_factor are
    stretched by `factor`, those shorter than original_context / high_freq_factor are kept, and the
    band between blends the two linearly in original_context / wavelength. Both as in HF transformers'
    _compute_linear_scaling_rope_parameters and _compute_llama3_parameters."""
    if head_dim % 2:
        raise ValueError(f"rope: head_dim must be even, got {head_dim}")
    if scaling not in ROPE_SCALINGS:
        raise ValueError(f"rope: scaling must be one of {ROPE_SCALINGS}, got {scaling!r}")
    if not factor > 0:
        raise ValueError(f"rope: the scaling factor must be positive, got {factor}")
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if scaling == "linear":
        return inv_freq / factor
    if scaling == "llama3":
        if not 0 < low_freq_factor < high_freq_factor:
            raise ValueError(f"rope: llama3 scaling needs 0 < low_freq_factor < high_freq_factor, got "
                             f"{low_freq_factor} and {high_freq_factor}")
        wavelen = 2 * np.pi / inv_freq
        smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        # the blend is 1/factor at the long edge and 1 at the short one, so the bands meet continuously
        return np.where(wavelen > original_context / low_freq_factor, inv_freq / factor,
                        np.where(wavelen < original_context / high_freq_factor, inv_freq, blended))
    return inv_freq


def rope_tables(n_positions: int, head_dim: int, base: float = 10000.0, dtype=np.float32, device: str = "cpu", *,
                scaling: str = "none", factor: float = 1.0, low_freq_factor: float = 1.0,
                high_freq_factor: float = 4.0, original_context: int = 8192):
    """cos and sin tables of shape (n_positions, head_dim), frequencies repeated for both halves;
    the scaling keywords are rope_inverse_frequencies' (no scaling by default)."""
    inv_freq = rope_inverse_frequencies(head_dim, base, scaling=scaling, factor=factor,
                                        low_freq_factor=low_freq_factor, high_freq_factor=high_freq_factor,
                                        original_context=original_context)
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
