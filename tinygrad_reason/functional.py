"""The op set as functions (`import tinygrad_reason.functional as F`), for code that reads like torch.nn.functional.

linear, layer_norm, rms_norm, cross_entropy, attention, packed_attention and prefix_attention run
the fused ops (ops/matmul.py, ops/nn.py, ops/attention.py) unless the reference ops are switched on
(use_reference_ops(True), or `with reference_ops():`): then they run ops/reference.py, each op
written as its formula in Tensor ops with autograd's backward. The nn modules call these, so the
switch moves a whole model; AdamW's update follows it too (optim.adamw_reference_update).
"""
from __future__ import annotations

import contextlib
import functools

from .ops import attention as fused_attention, matmul as fused_matmul, nn as fused_nn, reference
from .ops.elementwise import (abs, add, astype, clip, div, erf, exp, gelu, log, masked_fill, maximum,  # noqa: F401,A004
                              minimum, mul, neg, pow, relu, sigmoid, silu, sqrt, sub, tanh, where)
from .ops.matmul import matmul  # noqa: F401
from .ops.rope import rope, rope_tables  # noqa: F401
from .ops.movement import (broadcast_to, concatenate, expand, flatten, getitem, pad, permute,  # noqa: F401
                           reshape, split, squeeze, stack, transpose, unsqueeze)
from .ops.nn import binary_cross_entropy_with_logits, dropout, embedding, log_softmax, softmax  # noqa: F401
from .ops.reduce import logsumexp, max, mean, min, sum, var  # noqa: F401,A004

# One flag for the whole process, not one per thread: data_parallel_backward runs each shard's
# forward and backward on a worker thread, which a flag local to the caller's thread would not reach.
_use_reference = False


def use_reference_ops(enabled: bool = True) -> None:
    """Run the reference ops (ops/reference.py, and AdamW's reference update) instead of the fused
    ones from now on, in every thread; use_reference_ops(False) goes back to the fused ops."""
    global _use_reference
    _use_reference = bool(enabled)


def reference_ops_enabled() -> bool:
    return _use_reference


@contextlib.contextmanager
def reference_ops(enabled: bool = True):
    """use_reference_ops(enabled) inside the block; the previous setting comes back when it ends,
    by an exception too."""
    previous = _use_reference
    use_reference_ops(enabled)
    try:
        yield
    finally:
        use_reference_ops(previous)


def _switchable(fused, formula):
    """`fused`, or `formula` while the reference ops are on: the default path pays one global read."""
    @functools.wraps(fused)
    def op(*args, **kwargs):
        return formula(*args, **kwargs) if _use_reference else fused(*args, **kwargs)
    return op


linear = _switchable(fused_matmul.linear, reference.linear)
layer_norm = _switchable(fused_nn.layer_norm, reference.layer_norm)
rms_norm = _switchable(fused_nn.rms_norm, reference.rms_norm)
cross_entropy = _switchable(fused_nn.cross_entropy, reference.cross_entropy)
attention = _switchable(fused_attention.attention, reference.attention)
packed_attention = _switchable(fused_attention.packed_attention, reference.packed_attention)
prefix_attention = _switchable(fused_attention.prefix_attention, reference.prefix_attention)
