"""Tensor, Function and the reverse-mode engine.

A Tensor wraps one array of its backend. Every differentiable op is a Function subclass (in ops/)
holding `forward` (raw arrays in, raw array out) beside `backward` (a Tensor gradient in, one
Tensor gradient per input out, written with Tensor ops so create_graph=True gives second
derivatives). Applying a Function records it as the `_ctx` of its output: the graph is the chain
of `_ctx.parents`. `backward()` walks that graph in reverse topological order (iteratively, so
graphs 100,000 nodes deep work), undoes broadcasting in one place (`_sum_to`), and frees the
graph's saved arrays unless asked to keep them.

The ops (ops/) import this file, never the reverse: ops/__init__.py attaches the operators and the
op methods (x + y, x.sum(), x.reshape(...), x.to("cuda"), ...) to Tensor when the package loads.
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import numpy as np

from . import backend

# ---------------------------------------------------------------- grad mode
class _GradMode(threading.local):
    """Per thread, as in torch: one thread's backward (which records nothing) must not switch off
    recording in another thread's forward (data-parallel steps run both at once)."""
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


@contextlib.contextmanager
def _set_grad_enabled(mode: bool):
    prev, _grad_mode.enabled = _grad_mode.enabled, mode
    try:
        yield
    finally:
        _grad_mode.enabled = prev


def no_grad():
    """Context manager (or decorator) in which ops record no graph."""
    return _set_grad_enabled(False)


def enable_grad():
    return _set_grad_enabled(True)


# ---------------------------------------------------------------- Function
class Function:
    """One differentiable op: `forward` on arrays beside `backward` on Tensors.

    Subclasses set attributes on `self` in forward for backward to use (saved arrays), read
    their input Tensors as `self.parents` and their output as `self.output`.
    `once_differentiable = True` marks a fused op whose backward works on raw arrays; the
    engine refuses to build a graph through it (create_graph=True) with a clear error.
    """
    once_differentiable = False
    __slots__ = ("parents", "_output", "__dict__")

    @classmethod
    def apply(cls, *parents: "Tensor", **kwargs) -> "Tensor":
        ctx = cls()
        if len(parents) > 1:
            device = parents[0].device
            for p in parents[1:]:
                if p.device != device:
                    raise RuntimeError(f"{cls.op_name()}: tensors on different devices "
                                       f"({', '.join(q.device for q in parents)}); move them with .to(device)")
        out = Tensor._wrap(ctx.forward(*[p.data for p in parents], **kwargs))
        if _grad_mode.enabled and any(p.requires_grad for p in parents) and _is_float(out.data.dtype):
            ctx.parents = parents
            ctx._output = weakref.ref(out)
            out.requires_grad = True
            out._ctx = ctx
        return out

    @classmethod
    def op_name(cls) -> str:
        return cls.__name__

    @property
    def output(self) -> "Tensor":
        # A weak reference: the output is alive whenever its backward can run (it is the root,
        # or an input of a node further down), and no reference cycle keeps the graph alive.
        return self._output()

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad: "Tensor"):
        raise NotImplementedError

    def release(self) -> None:
        """Free saved arrays and the links to the inputs once backward has used them."""
        self.__dict__.clear()
        self.parents = None

    @property
    def released(self) -> bool:
        return self.parents is None


# ---------------------------------------------------------------- Tensor
def _is_float(dtype) -> bool:
    # dtype.kind == "f" is np.issubdtype(dtype, np.floating) for a numpy dtype, ~15x faster (hot path:
    # every recorded op calls this); anything else (a type like np.float32) takes the general check.
    kind = getattr(dtype, "kind", None)
    return kind == "f" if isinstance(kind, str) else np.issubdtype(dtype, np.floating)


class Tensor:
    __slots__ = ("data", "grad", "_requires_grad", "_ctx", "_retain", "name", "version", "__weakref__")
    __array_priority__ = 1000  # numpy scalars on the left defer to our reflected operators

    def __init__(self, data, requires_grad: bool = False, dtype=None, device: str | None = None,
                 name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        xp = backend.xp_for(device) if device is not None else backend.get_array_module(data)
        if dtype is None and not hasattr(data, "dtype"):
            # Python floats become the default float dtype (like torch); ints stay int64.
            arr = np.asarray(data)
            if _is_float(arr.dtype):
                arr = arr.astype(backend.default_dtype)
            data = xp.asarray(arr)
        else:
            data = xp.asarray(data, dtype=dtype)
        if device is not None:
            data = backend.to_device(data, device)
        self.data = data
        self.grad = None
        self._ctx = None
        self._retain = False
        self.name = name
        self.version = 0       # bumped by in-place changes of .data (optimizer steps, load_state_dict)
        self._requires_grad = False
        self.requires_grad = requires_grad

    @classmethod
    def _wrap(cls, arr) -> "Tensor":
        """A Tensor around an op's result without copying (0-d results of numpy are scalars)."""
        t = cls.__new__(cls)
        if not hasattr(arr, "shape") or type(arr) is not np.ndarray and backend.get_array_module(arr) is np:
            arr = np.asarray(arr)
        t.data = arr
        t.grad = None
        t._ctx = None
        t._retain = False
        t.name = None
        t.version = 0
        t._requires_grad = False
        return t

    # ------------------------------------------------------------ attributes
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not _is_float(self.data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients; this tensor is "
                            f"{self.data.dtype} with shape {self.shape}")
        if not value and self._ctx is not None:
            raise RuntimeError("requires_grad can only be switched off on a leaf tensor; use .detach()")
        self._requires_grad = bool(value)

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return "cpu" if type(self.data) is np.ndarray else backend.device_of(self.data)

    @property
    def xp(self):
        return backend.get_array_module(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def op(self) -> str:
        """Name of the op that made this tensor ('' for a leaf)."""
        return "" if self._ctx is None else self._ctx.op_name()

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        return bool(self.data)   # numpy's rule: only one-element tensors have a truth value

    def __repr__(self) -> str:
        extra = ""
        if self._ctx is not None:
            extra = f", op={self.op}"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        if self.device != "cpu":
            extra += f", device={self.device!r}"
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=20,
                               prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    # ------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        return backend.to_device(self.data, "cpu")

    def item(self):
        if self.size != 1:
            raise ValueError(f"item(): only a tensor with one element converts to a Python number, "
                             f"got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same array, cut from the graph."""
        return Tensor._wrap(self.data)

    def bump_version(self) -> None:
        """Record that .data changed in place, so what was computed from the old values (a packed
        copy of a weight: fast/packing.py) knows it is stale."""
        self.version += 1

    def retain_grad(self) -> "Tensor":
        """Keep this intermediate tensor's gradient in .grad after backward."""
        self._retain = True
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------ backward
    def backward(self, grad=None, retain_graph: bool = False, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's .grad (leaves add up across calls)."""
        if not self.requires_grad:
            raise RuntimeError(f"backward: this tensor (shape {self.shape}) does not require grad "
                               "and has no graph; did you forget requires_grad=True?")
        for _ in backward_steps(self, grad, retain_graph=retain_graph, create_graph=create_graph):
            pass


# ---------------------------------------------------------------- the engine
def topological_order(roots) -> list:
    """Tensors that need a gradient, each after every tensor computed from it (roots first).

    Iterative post-order depth-first search: no recursion limit, so a 100,000-op chain works.
    """
    order, visited = [], set()
    stack = [(r, False) for r in roots]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        ctx = t._ctx
        if ctx is not None and ctx.parents is not None:
            for p in ctx.parents:
                if p.requires_grad and id(p) not in visited:
                    stack.append((p, False))
    order.reverse()
    return order


def _sum_to(grad: Tensor, shape: tuple, op: str) -> Tensor:
    """Undo broadcasting: sum `grad` down to `shape`. The one place broadcasting is reversed."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0:
        raise RuntimeError(f"{op}.backward returned a gradient of shape {grad.shape} for an input of "
                           f"shape {shape}")
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape)
                                      if n == 1 and grad.shape[i + lead] != 1)
    out = grad.sum(axis=axes, keepdims=True) if axes else grad
    if lead:
        out = out.reshape(shape)
    if out.shape != shape:
        raise RuntimeError(f"{op}.backward returned a gradient of shape {grad.shape} that does not "
                           f"broadcast to its input's shape {shape}")
    return out


class Step:
    """One node of a backward walk: the tensor, its incoming gradient, what it passes on."""
    __slots__ = ("tensor", "grad", "passed")

    def __init__(self, tensor, grad, passed):
        self.tensor, self.grad, self.passed = tensor, grad, passed

    @property
    def op(self) -> str:
        return self.tensor.op or "leaf"

    def __repr__(self) -> str:
        return f"Step(op={self.op}, shape={self.tensor.shape}, passes={len(self.passed)})"


def _seed_grad(root: Tensor, grad) -> Tensor:
    if grad is None:
        if root.size != 1:
            raise RuntimeError(f"backward: grad can be implied only for a tensor with one element; "
                               f"this one has shape {root.shape}: pass grad= of that shape")
        return Tensor._wrap(root.xp.ones(root.shape, dtype=root.dtype))
    grad = grad if isinstance(grad, Tensor) else Tensor(grad, dtype=root.dtype, device=root.device)
    if grad.shape != root.shape:
        raise RuntimeError(f"backward: grad has shape {grad.shape} but the tensor has shape {root.shape}")
    return grad


def owned_grad(g: Tensor, seen: set, create_graph: bool) -> Tensor:
    """A gradient safe to store as a leaf's .grad: writable, not shared with another leaf or with
    the caller's grad= array. Under create_graph the copy is a graph op, so it stays differentiable."""
    arr = g.data
    base = arr if arr.base is None else arr.base
    if arr.base is not None or id(base) in seen:
        g = g * 1.0 if create_graph else Tensor._wrap(arr.copy())
        base = g.data
    seen.add(id(base))
    return g


def backward_steps(root: Tensor, grad=None, retain_graph: bool = False, create_graph: bool = False,
                   inputs=None):
    """The engine, as a generator: yields a Step per node so backprop can be walked by hand.

    With `inputs` (a list of tensors), their gradients are collected into the dict returned by
    the generator (StopIteration.value) instead of being accumulated into .grad (see `grad`).
    """
    retain_graph = retain_graph or create_graph
    seed = _seed_grad(root, grad)
    grads = {id(root): seed}
    wanted = {id(t): t for t in inputs} if inputs is not None else None
    collected = {}
    seen_arrays: set = {id(seed.data if seed.data.base is None else seed.data.base)}  # grad= may be the caller's
    with _set_grad_enabled(create_graph):
        for node in topological_order([root]):
            g = grads.pop(id(node), None)
            if g is None:
                continue  # no gradient flows here (e.g. an unused branch)
            if wanted is not None:
                if id(node) in wanted:
                    collected[id(node)] = g
            elif node._ctx is None or node._retain:
                if node.grad is None:
                    node.grad = owned_grad(g, seen_arrays, create_graph)
                else:
                    node.grad = node.grad + g
            ctx = node._ctx
            if ctx is None:
                yield Step(node, g, [])
                continue
            if ctx.released:
                raise RuntimeError(f"backward through {ctx.op_name()} a second time: its saved arrays "
                                   "were freed after the first backward; pass retain_graph=True to the "
                                   "first call to keep them")
            if create_graph and ctx.once_differentiable:
                raise RuntimeError(f"{ctx.op_name()} is once-differentiable (a fused backward on raw "
                                   "arrays): it cannot be differentiated twice, so create_graph=True "
                                   "cannot pass through it")
            in_grads = ctx.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            passed = []
            for parent, pg in zip(ctx.parents, in_grads):
                if pg is None or not parent.requires_grad:
                    continue
                pg = _sum_to(pg, parent.shape, ctx.op_name())
                if pg.dtype != parent.dtype:
                    pg = pg.astype(parent.dtype)
                prev = grads.get(id(parent))
                grads[id(parent)] = pg if prev is None else prev + pg
                passed.append((parent, pg))
            yield Step(node, g, passed)
            if not retain_graph:
                ctx.release()
    return collected


def grad(outputs, inputs, grad_outputs=None, retain_graph: bool = False, create_graph: bool = False,
         allow_unused: bool = False):
    """d(outputs)/d(inputs) as a tuple, without touching any .grad (like torch.autograd.grad)."""
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if isinstance(outputs, Tensor):
        outputs, grad_outputs = [outputs], [grad_outputs]
    elif grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    results = {}
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not out.requires_grad:
            continue
        keep = retain_graph or create_graph or i < len(outputs) - 1
        walk = backward_steps(out, g, retain_graph=keep, create_graph=create_graph, inputs=inputs)
        while True:
            try:
                next(walk)
            except StopIteration as stop:
                got = stop.value
                break
        for k, v in got.items():
            results[k] = v if k not in results else results[k] + v
    found = []
    for i, t in enumerate(inputs):
        g = results.get(id(t))
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: input {i} (shape {t.shape}) was not used to compute the outputs; "
                               "pass allow_unused=True to get None for it")
        found.append(g)
    return found[0] if single else tuple(found)

