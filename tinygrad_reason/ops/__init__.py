"""Every differentiable op, by kind; this file also gives Tensor its methods and operators."""
from __future__ import annotations

import operator

from .. import backend
from ..tensor import Tensor
from . import attention, elementwise, matmul, movement, nn, reduce, rope
from .elementwise import const

_E, _M, _R = elementwise, movement, reduce


def _reflected(fn):
    return lambda self, other: fn(const(other, self), self)


def _compare(name):
    """Comparisons give boolean tensors outside the graph (not differentiable)."""
    compare = getattr(operator, name.strip("_"))

    def method(self, other):
        return Tensor._wrap(compare(self.data, other.data if isinstance(other, Tensor) else other))
    method.__name__ = name
    return method


_methods = {
    # arithmetic and operators
    "__add__": _E.add, "__radd__": _reflected(_E.add),
    "__sub__": _E.sub, "__rsub__": _reflected(_E.sub),
    "__mul__": _E.mul, "__rmul__": _reflected(_E.mul),
    "__truediv__": _E.div, "__rtruediv__": _reflected(_E.div),
    "__pow__": _E.pow, "__rpow__": _reflected(_E.pow),
    "__neg__": _E.neg, "__abs__": _E.abs,
    "__matmul__": matmul.matmul, "__rmatmul__": _reflected(matmul.matmul),
    "__getitem__": _M.getitem,
    "add": _E.add, "sub": _E.sub, "mul": _E.mul, "div": _E.div, "neg": _E.neg, "pow": _E.pow,
    "exp": _E.exp, "log": _E.log, "sqrt": _E.sqrt, "tanh": _E.tanh, "sigmoid": _E.sigmoid,
    "erf": _E.erf, "relu": _E.relu, "gelu": _E.gelu, "silu": _E.silu, "abs": _E.abs,
    "maximum": _E.maximum, "minimum": _E.minimum, "clip": _E.clip, "masked_fill": _E.masked_fill,
    "astype": _E.astype, "matmul": matmul.matmul,
    # reductions
    "sum": _R.sum, "mean": _R.mean, "var": _R.var, "max": _R.max, "min": _R.min,
    "logsumexp": _R.logsumexp,
    # movement
    "reshape": _M.reshape, "view": _M.reshape, "permute": _M.permute, "transpose": _M.transpose,
    "expand": _M.expand, "broadcast_to": _M.broadcast_to, "squeeze": _M.squeeze,
    "unsqueeze": _M.unsqueeze, "flatten": _M.flatten, "split": _M.split, "pad": _M.pad,
    # nn
    "softmax": nn.softmax, "log_softmax": nn.log_softmax,
}
def _to(self, device: str) -> Tensor:
    """This tensor on `device` ("cpu" or "cuda"); differentiable (the grad moves back)."""
    backend.check_device(device)
    return self if device == self.device else _M.ToDevice.apply(self, device=device)


_methods["to"] = _to
_methods["cpu"] = lambda self: _to(self, "cpu")
_methods["cuda"] = lambda self: _to(self, "cuda")
for _name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    _methods[_name] = _compare(_name)

for _name, _fn in _methods.items():
    setattr(Tensor, _name, _fn)
Tensor.__hash__ = object.__hash__      # __eq__ is elementwise, identity stays the hash
Tensor.T = property(lambda self: _M.permute(self, tuple(reversed(range(self.ndim)))))
