"""Matrix product with batch dimensions and broadcasting (numpy.matmul semantics)."""
from __future__ import annotations

import math

from .. import backend
from ..fast.blas import matmul2d
from ..fast.packing import SKINNY_ROWS, skinny_matmul
from ..tensor import Function, Tensor, is_grad_enabled


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
    k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if a.shape[-1] != k_b:   # checked here too so that 1-d operands are reported with their own shapes
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({a.shape[-1]} != {k_b})")
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


def check_linear(x_shape, weight_shape, bias_shape=None) -> None:
    """A clear error unless x (..., in), weight (out, in) and bias (out,) fit. Shared with ops/reference.py."""
    if len(weight_shape) != 2 or len(x_shape) < 1 or x_shape[-1] != weight_shape[1]:
        raise ValueError(f"linear: input shape {tuple(x_shape)} does not fit weight shape {tuple(weight_shape)} "
                         "(expects (..., in) and (out, in))")
    if bias_shape is not None and tuple(bias_shape) != (weight_shape[0],):
        raise ValueError(f"linear: bias shape {tuple(bias_shape)} must be ({weight_shape[0]},)")


class Linear(Function):
    """x @ weight.T (+ bias) with weight stored (out, in) like torch; batch dims are folded into rows.
    The three products go through fast.blas.matmul2d (MKL when switched on, else NumPy).

    d/dx = g @ W,  d/dW = g^T @ x (summed over every row),  d/db = sum of g over rows.
    """
    def forward(self, x, weight, *bias, version=0):
        check_linear(x.shape, weight.shape, bias[0].shape if bias else None)
        rows = math.prod(x.shape[:-1])
        x2 = x.reshape(rows, x.shape[-1])
        if 1 < rows <= SKINNY_ROWS:
            # a few rows (batched decoding): MKL's packed copy of the weight (fast/packing.py: with MKL
            # on, one thread, the weight's second such product at its version); otherwise W x^T with the weight as the row-major operand, which runs
            # ~1.1x faster in OpenBLAS than x W^T on the transposed weight (the small GPT decoding 16 rows:
            # 13.8 vs 15.3 ms per step on 2 threads; its 37 products alone, one thread, 12.2 vs 13.3 ms)
            y = skinny_matmul(x2, weight, version)
            if y is None:
                y = backend.get_array_module(x).ascontiguousarray(matmul2d(weight, x2.T).T)
        else:                                   # many rows, or one (a matrix-vector product either way)
            y = matmul2d(x2, weight.T)
        if bias:
            y += bias[0]
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, g):
        x, w = self.parents[:2]
        has_bias = len(self.parents) == 3
        if is_grad_enabled():   # create_graph: Tensor ops, so the gradient is differentiable again
            g2 = g.reshape(math.prod(g.shape[:-1]), g.shape[-1])
            gx = g @ w if x.requires_grad else None
            gw = g2.transpose(0, 1) @ x.reshape(g2.shape[0], x.shape[-1]) if w.requires_grad else None
            gb = g2.sum(axis=0) if has_bias and self.parents[2].requires_grad else None
            return (gx, gw, gb) if has_bias else (gx, gw)
        # the same three products on arrays, without recording a graph
        g2 = g.data.reshape(math.prod(g.shape[:-1]), g.shape[-1])
        x2 = x.data.reshape(g2.shape[0], x.shape[-1])
        gx = Tensor._wrap(matmul2d(g2, w.data).reshape(x.shape)) if x.requires_grad else None
        gw = Tensor._wrap(matmul2d(g2.T, x2)) if w.requires_grad else None
        gb = None
        if has_bias and self.parents[2].requires_grad:
            # a matrix-vector product with ones runs on BLAS threads; sum(axis=0) does not
            gb = Tensor._wrap(g.xp.ones(g2.shape[0], dtype=g2.dtype) @ g2)
        return (gx, gw, gb) if has_bias else (gx, gw)


def linear(x, weight, bias=None):
    version = weight.version      # a packed copy of the weight knows it is stale once this changes
    return Linear.apply(x, weight, bias, version=version) if bias is not None else Linear.apply(x, weight, version=version)
