"""Finite-difference checks of gradients (first and second order), public like torch's.

The analytic gradient of a random projection sum(out * v) is compared with central differences in
float64, element by element and along one random direction through all inputs at once (Chainer's
check_backward). A failure names the input, the worst element, both values and the tolerance.
"""
from __future__ import annotations

import numpy as np

from .tensor import Tensor, enable_grad, grad, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numeric one (or the check could not run)."""


def _as_list(out):
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for k, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise GradcheckError(f"gradcheck: fn must return Tensors; output {k} is {type(o).__name__}")
    return outs


def _fmt(idx, shape) -> str:
    return str(tuple(int(i) for i in np.unravel_index(idx, shape))) if shape else "()"


def _compare(analytic, numeric, atol, rtol, where: str, shape):
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    tol = atol + rtol * np.abs(numeric)
    err = np.abs(analytic - numeric)
    bad = ~(err <= tol)                                  # NaN counts as bad
    if not bad.any():
        return None
    ratio = np.where(np.isnan(err), np.inf, err / tol).reshape(-1)
    worst = int(np.argmax(ratio))
    a, n = analytic.reshape(-1)[worst], numeric.reshape(-1)[worst]
    return (f"{where}: worst element {_fmt(worst, shape)}: analytic {a:.10g}, numeric {n:.10g}, "
            f"|diff| {abs(a - n):.3g} > tolerance {tol.reshape(-1)[worst]:.3g} "
            f"(atol {atol:g} + rtol {rtol:g} * |numeric|); {int(bad.sum())} of {bad.size} outside tolerance")


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-7, rtol: float = 1e-5, seed: int = 0,
              check_elements: bool = True, check_direction: bool = True, raise_exception: bool = True) -> bool:
    """True when fn's analytic gradients match central differences for every input that requires grad.

    fn takes the inputs (Tensors) and returns a Tensor or a tuple of Tensors. Inputs that require
    grad must be float64. Also checks that fn does not modify its inputs and is deterministic.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise ValueError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64")
    try:
        _gradcheck(fn, inputs, checked, eps, atol, rtol, seed, check_elements, check_direction)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _gradcheck(fn, inputs, checked, eps, atol, rtol, seed, check_elements, check_direction):
    rng = np.random.default_rng(seed)
    snapshot = [t.numpy().copy() if isinstance(t, Tensor) else None for t in inputs]
    outs = _as_list(fn(*inputs))
    for i, t in enumerate(inputs):
        if snapshot[i] is not None and not np.array_equal(snapshot[i], t.numpy(), equal_nan=True):
            raise GradcheckError(f"gradcheck: fn modified its input {i} in place")
    for k, o in enumerate(outs):
        if o.dtype != np.float64:
            raise GradcheckError(f"gradcheck: output {k} is {o.dtype}; the check needs float64 end to end")
    xp = outs[0].xp
    proj = [xp.asarray(rng.standard_normal(o.shape)) for o in outs]

    def objective(arrays) -> float:
        """sum_k <out_k, v_k> for inputs replaced by `arrays`, without a graph."""
        with no_grad():
            args = [Tensor._wrap(a) if isinstance(t, Tensor) else t for a, t in zip(arrays, inputs)]
            return float(sum(float((o.data * v).sum()) for o, v in zip(_as_list(fn(*args)), proj)))

    base = [t.data if isinstance(t, Tensor) else None for t in inputs]
    first = objective(base)
    if objective(base) != first:
        raise GradcheckError("gradcheck: fn is not deterministic (two calls on the same inputs differ)")

    scalar = None
    for o, v in zip(outs, proj):
        term = (o * Tensor._wrap(v)).sum()
        scalar = term if scalar is None else scalar + term
    if not scalar.requires_grad:
        raise GradcheckError("gradcheck: the outputs do not depend on any input that requires grad")
    analytic = grad(scalar, [inputs[i] for i in checked], allow_unused=True)
    analytic = [np.zeros(inputs[i].shape) if g is None else g.numpy() for i, g in zip(checked, analytic)]

    if check_elements:
        for i, a in zip(checked, analytic):
            x = inputs[i].data
            numeric = np.zeros(x.shape)
            for j in range(x.size):
                arrays = list(base)
                plus, minus = x.copy(), x.copy()
                plus.reshape(-1)[j] += eps
                minus.reshape(-1)[j] -= eps
                arrays[i] = plus
                f_plus = objective(arrays)
                arrays[i] = minus
                numeric.reshape(-1)[j] = (f_plus - objective(arrays)) / (2 * eps)
            report = _compare(a, numeric, atol, rtol, f"gradcheck failed for input {i} (shape {x.shape})", x.shape)
            if report:
                raise GradcheckError(report)

    if check_direction:
        dirs = {i: rng.standard_normal(inputs[i].shape) for i in checked}
        plus, minus = list(base), list(base)
        for i, d in dirs.items():
            plus[i] = base[i] + xp.asarray(eps * d)
            minus[i] = base[i] - xp.asarray(eps * d)
        numeric = (objective(plus) - objective(minus)) / (2 * eps)
        analytic_dir = sum(float((a * dirs[i]).sum()) for i, a in zip(checked, analytic))
        report = _compare(analytic_dir, numeric, atol, rtol,
                          "gradcheck failed along a random direction through all inputs", ())
        if report:
            raise GradcheckError(report)


def gradgradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-7, rtol: float = 1e-5, seed: int = 0,
                  raise_exception: bool = True) -> bool:
    """Second derivatives: gradcheck of (inputs, v) -> d<fn(inputs), v>/d(inputs), built with create_graph."""
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    outs = _as_list(fn(*inputs))
    rng = np.random.default_rng(seed + 1)
    vs = [Tensor(outs[0].xp.asarray(rng.standard_normal(o.shape)), requires_grad=True) for o in outs]
    n = len(inputs)

    def first_derivatives(*args):
        xs, v = list(args[:n]), args[n:]
        with enable_grad():   # the numeric pass calls this under no_grad; the inner grad needs a graph
            for i in checked:
                if not xs[i].requires_grad:
                    xs[i] = Tensor(xs[i].data, requires_grad=True)
            total = None
            for o, vk in zip(_as_list(fn(*xs)), v):
                term = (o * vk).sum()
                total = term if total is None else total + term
            gs = grad(total, [xs[i] for i in checked], create_graph=True, allow_unused=True)
        # an unused input has a zero gradient, which still depends on nothing
        return tuple(g if g is not None else xs[i] * 0.0 for i, g in zip(checked, gs))

    return gradcheck(first_derivatives, inputs + vs, eps=eps, atol=atol, rtol=rtol, seed=seed,
                     raise_exception=raise_exception)
