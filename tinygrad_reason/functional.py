"""The op set as functions (`import tinygrad_reason.functional as F`), for code that reads like torch.nn.functional."""
from .ops.elementwise import (abs, add, astype, clip, div, erf, exp, gelu, log, masked_fill, maximum,  # noqa: F401,A004
                              minimum, mul, neg, pow, relu, sigmoid, silu, sqrt, sub, tanh, where)
from .ops.attention import attention, packed_attention, prefix_attention  # noqa: F401
from .ops.matmul import linear, matmul  # noqa: F401
from .ops.rope import rope, rope_tables  # noqa: F401
from .ops.movement import (broadcast_to, concatenate, expand, flatten, getitem, pad, permute,  # noqa: F401
                           reshape, split, squeeze, stack, transpose, unsqueeze)
from .ops.nn import cross_entropy, dropout, embedding, layer_norm, log_softmax, rms_norm, softmax  # noqa: F401
from .ops.reduce import logsumexp, max, mean, min, sum, var  # noqa: F401,A004
