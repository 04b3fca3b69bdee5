"""tinygrad_reason: a reasoning-LLM stack on an autograd engine of its own (NumPy / CuPy).

Importing the package changes nothing outside it: malloc tuning and the TINYGRAD_REASON_BLAS switch
are applied by the command line and the benchmarks (fast.configure_from_env), or by you.
"""
from . import ops  # noqa: F401  (attaches the operators and op methods to Tensor)
from . import functional  # noqa: F401
from .functional import reference_ops, reference_ops_enabled, use_reference_ops  # noqa: F401
from .backend import cuda_available, manual_seed  # noqa: F401
from .creation import arange, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like  # noqa: F401
from .fast.blas import mkl_enabled, use_mkl, use_numpy_blas  # noqa: F401
from .fast.threads import set_num_threads  # noqa: F401
from .gradcheck import GradcheckError, gradcheck, gradgradcheck  # noqa: F401
from .ops.elementwise import where  # noqa: F401
from .ops.movement import concatenate, stack  # noqa: F401
from .parallel import data_parallel_backward  # noqa: F401
from .tensor import Function, Tensor, enable_grad, grad, is_grad_enabled, no_grad  # noqa: F401

__version__ = "0.1.0"
