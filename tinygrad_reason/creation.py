"""Making tensors: from data, filled, ranges and seeded random draws on either device."""
from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor


def _dtype(dtype):
    return np.dtype(backend.default_dtype if dtype is None else dtype)


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def tensor(data, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def zeros(*shape, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    return Tensor(backend.xp_for(device).zeros(_shape(shape), dtype=_dtype(dtype)), requires_grad=requires_grad)


def ones(*shape, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    return Tensor(backend.xp_for(device).ones(_shape(shape), dtype=_dtype(dtype)), requires_grad=requires_grad)


def full(shape, value, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    return Tensor(backend.xp_for(device).full(_shape((shape,)), value, dtype=_dtype(dtype)),
                  requires_grad=requires_grad)


def zeros_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(t.xp.zeros_like(t.data), requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(t.xp.ones_like(t.data), requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device: str = "cpu") -> Tensor:
    xp = backend.xp_for(device)
    arr = xp.arange(start, stop, step) if stop is not None else xp.arange(start)
    return Tensor(arr if dtype is None else arr.astype(dtype))


def randn(*shape, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """Standard normal draws from the device's seeded generator (see manual_seed)."""
    gen, dt = backend.generator(device), _dtype(dtype)
    arr = gen.standard_normal(_shape(shape), dtype=dt)
    return Tensor(arr, requires_grad=requires_grad)


def rand(*shape, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """Uniform draws in [0, 1) from the device's seeded generator."""
    gen, dt = backend.generator(device), _dtype(dtype)
    arr = gen.random(_shape(shape), dtype=dt) if device == "cpu" else gen.random_sample(_shape(shape), dtype=dt)
    return Tensor(arr, requires_grad=requires_grad)
