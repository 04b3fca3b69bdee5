"""Every op in the registry passes gradcheck in float64, and gradgradcheck where twice differentiable."""
import inspect

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason import Function, Tensor, ops
from op_registry import (ATTENTION_DROPOUT, BIASED_ATTENTION_DROPOUT, DROPOUT, PACKED_ATTENTION_DROPOUT, SPECS,
                         UNCOVERED_BY_DESIGN, make_inputs)

GRAD_SPECS = [s for s in SPECS if s.functions] + [DROPOUT, ATTENTION_DROPOUT, PACKED_ATTENTION_DROPOUT,
                                                  BIASED_ATTENTION_DROPOUT]


def _tensors(spec, device, seed=0):
    return [Tensor(a, requires_grad=True, device=device) for a in make_inputs(spec, seed)]


@pytest.mark.parametrize("spec", GRAD_SPECS, ids=lambda s: s.name)
def test_gradcheck(spec, device):
    assert tg.gradcheck(spec.ours, _tensors(spec, device), **spec.extra.get("gradcheck", {}))


@pytest.mark.parametrize("spec", [s for s in GRAD_SPECS if s.twice], ids=lambda s: s.name)
def test_gradgradcheck(spec, device):
    assert tg.gradgradcheck(spec.ours, _tensors(spec, device), **spec.extra.get("gradcheck", {}))


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.twice], ids=lambda s: s.name)
def test_once_differentiable_refuses_create_graph(spec, device):
    xs = _tensors(spec, device)
    out = spec.ours(*xs).sum()
    with pytest.raises(RuntimeError, match="once-differentiable"):
        tg.grad(out, xs, create_graph=True)


def _all_functions():
    found = set()
    for mod in (ops.elementwise, ops.reduce, ops.movement, ops.matmul, ops.nn, ops.rope, ops.attention):
        for name, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, Function) and obj.__module__ == mod.__name__ and not name.startswith("_"):
                found.add(obj)
    return found


def test_registry_covers_every_function():
    covered = {f for s in GRAD_SPECS for f in s.functions}
    missing = {f.__name__ for f in _all_functions() - covered} - UNCOVERED_BY_DESIGN
    assert not missing, f"ops without a gradcheck / hypothesis / parity spec: {sorted(missing)}"


def test_pow_tensor_exponent_at_zero_base():
    # d(a^b)/db at a == 0 is 0 for b >= 0 (torch's convention), not nan from 0 * log 0
    a = Tensor(np.array([0.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([2.0, 3.0]), requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 8.0 * np.log(2.0)])
    np.testing.assert_allclose(a.grad.numpy(), [0.0, 12.0])
