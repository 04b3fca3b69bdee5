"""tinygrad_reason: a reasoning-LLM stack on an autograd engine of its own (NumPy / CuPy)."""
from . import allocator
allocator.apply_default()   # glibc malloc keeps freed memory for the next step (allocator.py)
from . import functional  # noqa: F401
from .backend import cuda_available, manual_seed, set_num_threads  # noqa: F401
from .blas import mkl_enabled, use_mkl, use_numpy_blas  # noqa: F401
from .creation import arange, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like  # noqa: F401
from .gradcheck import GradcheckError, gradcheck, gradgradcheck  # noqa: F401
from .ops.movement import concatenate, stack  # noqa: F401
from .ops.elementwise import where  # noqa: F401
from .parallel import data_parallel_backward  # noqa: F401
from .tensor import Function, Tensor, enable_grad, grad, is_grad_enabled, no_grad  # noqa: F401

__version__ = "0.1.0"
