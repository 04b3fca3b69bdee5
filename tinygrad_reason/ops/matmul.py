"""Matrix product with batch dimensions and broadcasting (numpy.matmul semantics)."""
from __future__ import annotations

import math

from .. import backend
from ..tensor import Function


class MatMul(Function):
    """a @ b for a.ndim >= 2 and b.ndim >= 2; batch dims broadcast, the engine sums them back.

    d(a@b)/da = g @ b^T,  d(a@b)/db = a^T @ g.
    """
    def forward(self, a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                             f"({a.shape[-1]} != {b.shape[-2]})")
        if b.ndim == 2 and a.ndim > 2:
            # (..., n) @ (n, m): one large GEMM instead of a loop of small ones
            return (a.reshape(math.prod(a.shape[:-1]), a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))
        try:
            return backend.get_array_module(a).matmul(a, b)
        except ValueError:
            raise ValueError(f"matmul: batch dims of {a.shape} and {b.shape} cannot be broadcast") from None

    def backward(self, g):
        a, b = self.parents
        ga = g @ b.transpose(-1, -2) if a.requires_grad else None
        gb = None
        if b.requires_grad:
            if b.ndim == 2 and a.ndim > 2:   # fold the batch into one GEMM rather than summing copies
                rows = math.prod(a.shape[:-1])
                gb = a.reshape(rows, a.shape[-1]).transpose(-1, -2) @ g.reshape(rows, g.shape[-1])
            else:
                gb = a.transpose(-1, -2) @ g
        return ga, gb


def matmul(a, b):
    """numpy.matmul semantics, including 1-d operands (a vector is promoted, then squeezed)."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dim, got shapes {a.shape} and {b.shape}")
    squeeze = []
    if a.ndim == 1:
        a = a.reshape(1, a.shape[0])
        squeeze.append(-2)
    if b.ndim == 1:
        b = b.reshape(b.shape[0], 1)
        squeeze.append(-1)
    out = MatMul.apply(a, b)
    if squeeze:
        out = out.reshape(out.shape[:out.ndim - len(squeeze)] if squeeze == [-2, -1]
                          else (out.shape[:-2] + out.shape[-1:] if squeeze == [-2] else out.shape[:-1]))
    return out
