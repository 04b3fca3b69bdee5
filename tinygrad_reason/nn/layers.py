"""Layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout, GELU, SiLU and the two feed-forward blocks."""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import functional as F
from .module import Module, Parameter


def _uniform(shape, bound: float, dtype) -> Parameter:
    gen = backend.generator("cpu")
    return Parameter(gen.uniform(-bound, bound, size=shape).astype(dtype))


def normal_(p: Parameter, std: float) -> Parameter:
    """Refill a parameter in place with N(0, std^2) draws from the seeded generator."""
    draw = backend.generator("cpu").standard_normal(p.shape).astype(p.dtype) * std
    p.data[...] = p.xp.asarray(draw)
    return p


def zeros_(p: Parameter) -> Parameter:
    p.data[...] = 0
    return p


class Linear(Module):
    """y = x W^T + b, weight (out, in) like torch; init U(-1/sqrt(in), 1/sqrt(in)) like torch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32):
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear: sizes must be positive, got in={in_features}, out={out_features}")
        bound = 1.0 / math.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _uniform((out_features, in_features), bound, dtype)
        self.bias = _uniform((out_features,), bound, dtype) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of vectors looked up by integer ids; init N(0, 1) like torch."""

    def __init__(self, num_embeddings: int, dim: int, dtype=np.float32):
        if num_embeddings <= 0 or dim <= 0:
            raise ValueError(f"Embedding: sizes must be positive, got {num_embeddings}, {dim}")
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = normal_(Parameter(np.zeros((num_embeddings, dim), dtype=dtype)), 1.0)

    def forward(self, ids):
        return F.embedding(self.weight, ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}"


class LayerNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, dtype=np.float32):
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-6, dtype=np.float32):
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))

    def forward(self, x):
        return F.rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    def __init__(self, p: float = 0.1):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    def forward(self, x):
        return F.silu(x)


class MLP(Module):
    """The GPT feed-forward block: Linear(d, hidden) -> GELU -> Linear(hidden, d) -> dropout."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, dropout: float = 0.0, dtype=np.float32,
                 approximate: str = "none"):
        self.fc = Linear(dim, hidden, bias, dtype)
        self.act = GELU(approximate)
        self.proj = Linear(hidden, dim, bias, dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(self.act(self.fc(x))))


class SwiGLU(Module):
    """The Llama feed-forward block: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, bias: bool = False, dropout: float = 0.0, dtype=np.float32):
        self.gate = Linear(dim, hidden, bias, dtype)
        self.up = Linear(dim, hidden, bias, dtype)
        self.down = Linear(hidden, dim, bias, dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.down(F.silu(self.gate(x)) * self.up(x)))
