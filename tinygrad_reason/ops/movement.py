"""Ops that move or select elements without arithmetic: reshape, permute, expand, getitem and its
scatter-add, concatenate, pad, device copies (and squeeze / unsqueeze / stack / split built on them).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Function, Tensor


class Reshape(Function):
    def forward(self, x, shape):
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                             f"into {tuple(shape)}") from None

    def backward(self, g):
        return g.reshape(self.parents[0].shape)


class Permute(Function):
    def forward(self, x, axes):
        n = x.ndim
        norm = tuple(a + n if a < 0 else a for a in axes)
        if sorted(norm) != list(range(n)):      # also catches axes out of range (hot path: one check)
            raise ValueError(f"permute: {tuple(axes)} is not a permutation of the {n} axes of shape {x.shape}")
        self.axes = norm
        return x.transpose(norm)

    def backward(self, g):
        return g.permute(tuple(np.argsort(self.axes)))


class Expand(Function):
    """Broadcast to a larger shape (a view); the engine's _sum_to is the whole backward."""
    def forward(self, x, shape):
        try:
            return backend.get_array_module(x).broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"expand: shape {x.shape} cannot be broadcast to {tuple(shape)}") from None

    def backward(self, g):
        return g


def _normalize_index(index):
    """Tensors and lists in an index become arrays; tells whether positions can repeat."""
    if not isinstance(index, tuple):
        index = (index,)
    out, repeats = [], False
    for i in index:
        if isinstance(i, Tensor):
            i = i.data
        elif isinstance(i, list):
            i = np.asarray(i)
        if hasattr(i, "dtype"):
            if np.issubdtype(i.dtype, np.integer):
                repeats = repeats or i.ndim > 0
            elif i.dtype != np.bool_:
                raise IndexError(f"getitem: index arrays must be integer or boolean, got {i.dtype}")
        out.append(i)
    return tuple(out), repeats


class GetItem(Function):
    """x[index] for slices, ints, None, Ellipsis, integer arrays and boolean masks."""
    def forward(self, x, index):
        self.index, self.repeats = _normalize_index(index)
        xp = backend.get_array_module(x)
        self.index = tuple(xp.asarray(i) if isinstance(i, np.ndarray) and xp is not np else i for i in self.index)
        try:
            return x[self.index]
        except IndexError as e:
            raise IndexError(f"getitem: {e} (tensor shape {x.shape})") from None

    def backward(self, g):
        return ScatterAdd.apply(g, shape=self.parents[0].shape, index=self.index, repeats=self.repeats)


class ScatterAdd(Function):
    """zeros(shape) with g added at index: the backward of getitem. Repeated integer indices add up."""
    def forward(self, g, shape, index, repeats):
        self.index, self.repeats = index, repeats
        xp = backend.get_array_module(g)
        out = xp.zeros(shape, dtype=g.dtype)
        if not repeats:
            out[index] = g                      # slices and masks touch each position at most once
        elif xp is np and _rows_of_vectors(index, shape):
            _scatter_add_rows(out, index[0], g)
        elif xp is np:
            np.add.at(out, index, g)
        else:
            import cupyx
            cupyx.scatter_add(out, index, g)
        return out

    def backward(self, gg):
        return GetItem.apply(gg, index=self.index)


def _rows_of_vectors(index, shape) -> bool:
    """An embedding's backward: one integer array picking rows of vectors (index (ids,), shape (V, d, ...))."""
    return (len(index) == 1 and isinstance(index[0], np.ndarray) and index[0].dtype.kind in "iu"
            and len(shape) >= 2)


def _scatter_add_rows(out, rows, g) -> None:
    """out[rows] += g with repeated rows adding up: np.add.at(out, rows, g), the same additions in the
    same order, faster. On (V, d) np.add.at takes its general path, row by row; on the flat (V d,) view
    with each element's flat index it takes its 1-d fast path. One thread, a 2048 x 128 gradient into
    128 rows: 1.6-2.9 ms -> 0.5-0.6 ms; 4096 x 384 into 4096 rows: 10.7-17.7 -> 4.4-5.5 ms."""
    width = math.prod(out.shape[1:])
    ids = rows.reshape(-1).astype(np.intp)                  # intp: ids * width must not overflow
    # a negative id -k gives flat indices k rows before the end: the row x[-k] picks
    flat = np.add.outer(ids * width, np.arange(width, dtype=np.intp)).reshape(-1)
    np.add.at(out.reshape(-1), flat, g.reshape(-1))


class Concatenate(Function):
    def forward(self, *arrays, axis):
        xp = backend.get_array_module(arrays[0])
        ndim = arrays[0].ndim
        if not -ndim <= axis < ndim:
            raise ValueError(f"concatenate: axis {axis} is out of range for {ndim}-dim tensors")
        self.axis = axis % ndim
        for a in arrays[1:]:
            if a.ndim != ndim or any(n != m for i, (n, m) in enumerate(zip(a.shape, arrays[0].shape)) if i != self.axis):
                raise ValueError(f"concatenate: shapes {[tuple(x.shape) for x in arrays]} differ outside axis {axis}")
        self.bounds = np.cumsum([0] + [a.shape[self.axis] for a in arrays])
        return xp.concatenate(arrays, axis=self.axis)

    def backward(self, g):
        lead = (slice(None),) * self.axis
        return tuple(g[lead + (slice(int(lo), int(hi)),)] for lo, hi in zip(self.bounds[:-1], self.bounds[1:]))


class Pad(Function):
    """Constant padding, numpy-style widths: ((before, after), ...) per axis."""
    def forward(self, x, pad_width, value):
        self.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, x.shape))
        # a 0-d input has no axes to pad (pad_width is ()), which numpy.pad only takes as 0
        return backend.get_array_module(x).pad(x, pad_width or 0, mode="constant", constant_values=value)

    def backward(self, g):
        return g[self.slices]


class ToDevice(Function):
    def forward(self, x, device):
        return backend.to_device(x, device)

    def backward(self, g):
        return g.to(self.parents[0].device)


# ---------------------------------------------------------------- functional forms
def _axis_in_range(axis: int, x, op: str) -> int:
    """axis (negatives allowed) as a non-negative index, or a ValueError naming op and shape."""
    span = max(x.ndim, 1)
    if not -span <= axis < span:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of shape {x.shape}")
    return axis % span


def _shape_arg(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def reshape(x, *shape):
    shape = _shape_arg(shape)
    return x if shape == x.shape else Reshape.apply(x, shape=shape)


def permute(x, *axes):
    return Permute.apply(x, axes=_shape_arg(axes))


def transpose(x, axis0=-2, axis1=-1):
    """Swap two axes (the last two by default)."""
    if x.ndim < 2:
        return x
    axis0, axis1 = _axis_in_range(axis0, x, "transpose"), _axis_in_range(axis1, x, "transpose")
    axes = list(range(x.ndim))
    axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
    return Permute.apply(x, axes=tuple(axes))


def expand(x, *shape):
    shape = _shape_arg(shape)
    return x if shape == x.shape else Expand.apply(x, shape=shape)


broadcast_to = expand


def squeeze(x, axis=None):
    if axis is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = [_axis_in_range(a, x, "squeeze") for a in axes]
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} has size {x.shape[a]}, not 1 (shape {x.shape})")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def unsqueeze(x, axis):
    nd = x.ndim + 1
    if not -nd <= axis < nd:
        raise ValueError(f"unsqueeze: axis {axis} is out of range for a result with {nd} dims")
    axis %= nd
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def flatten(x, start=0, end=-1):
    start, end = _axis_in_range(start, x, "flatten"), _axis_in_range(end, x, "flatten")
    n = int(np.prod(x.shape[start:end + 1]))
    return reshape(x, x.shape[:start] + (n,) + x.shape[end + 1:])


def getitem(x, index):
    return GetItem.apply(x, index=index)


def concatenate(tensors, axis=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    return tensors[0] if len(tensors) == 1 else Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    return concatenate([unsqueeze(t, axis) for t in tensors], axis=axis)


def split(x, sizes, axis=0):
    """Split along axis into pieces of the given sizes (a list), or into `sizes` equal pieces (an int)."""
    axis = _axis_in_range(axis, x, "split")
    n = x.shape[axis]
    if isinstance(sizes, int):
        if sizes <= 0 or n % sizes:
            raise ValueError(f"split: axis {axis} of size {n} does not split into {sizes} equal parts")
        sizes = [n // sizes] * sizes
    if sum(sizes) != n:
        raise ValueError(f"split: sizes {list(sizes)} do not add up to {n} (axis {axis} of shape {x.shape})")
    lead, out, start = (slice(None),) * axis, [], 0
    for s in sizes:
        out.append(getitem(x, lead + (slice(start, start + s),)))
        start += s
    return out


def pad(x, pad_width, value=0.0):
    """Constant padding; pad_width like numpy.pad: an int, (before, after), or one pair per axis."""
    width = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2)) if x.ndim else np.zeros((0, 2), np.int64)
    if (width < 0).any():
        raise ValueError(f"pad: widths must be non-negative, got {pad_width}")
    return Pad.apply(x, pad_width=tuple((int(a), int(b)) for a, b in width), value=value)

