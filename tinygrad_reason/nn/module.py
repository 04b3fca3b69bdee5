"""Module: a tree of parameters and sub-modules, torch-style (parameters, state_dict, train/eval, to)."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True)."""
    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True, name: str | None = None):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad, name=name)


class Module:
    """Sub-classes assign Parameters, Modules and ModuleLists as attributes and define forward()."""
    training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ the tree
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def _named_tensors(self, prefix: str, kind):
        for name, value in vars(self).items():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(value, kind):
                yield full, value
            elif isinstance(value, Module):
                yield from value._named_tensors(full, kind)

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) in definition order; a shared (tied) parameter appears once."""
        seen = set()
        for name, p in self._named_tensors(prefix, Parameter):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # ------------------------------------------------------------ state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Every parameter and buffer by dotted name, as arrays (tied weights under each name)."""
        sd = OrderedDict()
        for name, p in self._named_tensors("", Parameter):
            sd[name] = p.data
        for name, b in self.named_buffers():
            sd[name] = b.data
        return sd

    def named_buffers(self, prefix: str = ""):
        """Non-trainable tensors registered with register_buffer (saved in state_dict)."""
        for mod_name, mod in self.named_modules(prefix):
            for name in getattr(mod, "_buffers", ()):
                yield (f"{mod_name}.{name}" if mod_name else name), getattr(mod, name)

    def register_buffer(self, name: str, tensor: Tensor) -> None:
        if "_buffers" not in vars(self):
            self._buffers = []
        self._buffers.append(name)
        setattr(self, name, tensor)

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters in place; with strict, any missing, unexpected or
        wrongly shaped key is an error that lists them all (nothing is copied then)."""
        own = dict(self._named_tensors("", Parameter))
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {own[k].shape}"
                 for k in own if k in state and tuple(np.shape(state[k])) != own[k].shape]
        if wrong or (strict and (missing or unexpected)):
            parts = []
            if missing:
                parts.append(f"missing keys: {missing}")
            if unexpected:
                parts.append(f"unexpected keys: {unexpected}")
            if wrong:
                parts.append(f"wrong shapes: {wrong}")
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + "; ".join(parts))
        for k, t in own.items():
            if k in state:
                value = state[k].data if isinstance(state[k], Tensor) else state[k]
                arr = t.xp.asarray(backend.to_device(value, t.device) if hasattr(value, "shape") else value,
                                   dtype=t.dtype)
                t.data[...] = arr
                t.bump_version()

    # ------------------------------------------------------------ modes and devices
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def to(self, device: str) -> "Module":
        """Move every parameter and buffer to `device` in place (parameters stay the same objects)."""
        backend.check_device(device)
        for _, t in list(self._named_tensors("", Parameter)) + list(self.named_buffers()):
            t.data = backend.to_device(t.data, device)
            if t.grad is not None:
                t.grad = Tensor._wrap(backend.to_device(t.grad.data, device))
        return self

    def astype(self, dtype) -> "Module":
        """Cast every parameter and buffer to a float dtype in place (e.g. float64 for checks)."""
        for _, t in list(self._named_tensors("", Parameter)) + list(self.named_buffers()):
            if np.issubdtype(t.dtype, np.floating):
                t.data = t.data.astype(dtype)
        return self

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # ------------------------------------------------------------ display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return head + ")"
        lines = [head]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules whose parameters are registered under their index."""

    def __init__(self, modules=()):
        self._items = []
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._items)), module)
        self._items.append(module)

    def __getitem__(self, i):
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)
