"""nn.ValueHead and F.binary_cross_entropy_with_logits: the verifier heads' score and loss, against
torch on the same hidden states, gradchecked in float64, and as properties over random shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_reason as tg
from tinygrad_reason import Tensor, functional as F
from tinygrad_reason.nn import ValueHead

BCE = F.binary_cross_entropy_with_logits


def _torch_bce(x, y, w, reduction):
    t = torch.nn.functional.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none")
    if reduction == "none":
        return t
    return t.sum() if reduction == "sum" else t.sum() / w.sum()


def _case(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, 2, size=shape).astype(dtype)
    y[..., :1] = 0.25                                           # soft targets too
    mask = rng.random(shape) < 0.7
    mask.reshape(-1)[0] = True
    w = rng.uniform(0.5, 2.0, size=shape).astype(dtype)
    return x, y, mask, w


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_and_gradient_match_torch(dtype, tol, reduction):
    x, y, mask, w = _case(0, (3, 7), dtype)
    ours = Tensor(x.copy(), requires_grad=True)
    loss = BCE(ours, y, mask=mask, weight=w, reduction=reduction)
    loss.backward(Tensor(np.ones(loss.shape, dtype=dtype)) if reduction == "none" else None)
    tx = torch.tensor(x, requires_grad=True)
    ref = _torch_bce(tx, torch.tensor(y), torch.tensor(w * mask), reduction)
    ref.backward(torch.ones_like(ref))
    np.testing.assert_allclose(loss.numpy(), ref.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(ours.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)


def test_large_logits_stay_finite_and_exact():
    """No overflow at +-800; loss and gradient to 1e-14 absolute (a logsumexp, not log1p)."""
    x = Tensor(np.array([-800.0, -30.0, 0.0, 30.0, 800.0]), requires_grad=True)
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    loss = BCE(x, y, reduction="none")
    loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [800.0, np.log1p(np.exp(-30.0)), np.log(2.0),
                                              np.log1p(np.exp(-30.0)), 800.0], rtol=1e-12, atol=1e-14)
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x.numpy()))
    np.testing.assert_allclose(x.grad.numpy(), sig - y, rtol=1e-12, atol=1e-14)     # 0.5 - 1 at 0, no kink


@pytest.mark.parametrize("hidden", [None, 6])
def test_head_and_loss_gradcheck(hidden):
    """With respect to the states and every parameter of the head (float64)."""
    tg.manual_seed(1)
    head = ValueHead(5, hidden=hidden).astype(np.float64)
    x, y, mask, w = _case(2, (2, 4), np.float64)
    states = Tensor(np.random.default_rng(3).standard_normal((2, 4, 5)), requires_grad=True)
    inputs = [Tensor(p.numpy().copy(), requires_grad=True) for p in head.parameters()]

    def objective(s, *ps):
        # the head's forward with ps as its parameters, so gradcheck can perturb them
        h = F.gelu(F.linear(s, ps[0], ps[1])) if hidden else s
        return BCE(F.linear(h, ps[-2], ps[-1]).reshape(s.shape[:-1]), y, mask=mask, weight=w)

    np.testing.assert_allclose(objective(states, *inputs).item(), BCE(head(states), y, mask=mask, weight=w).item(),
                               rtol=1e-12)
    assert tg.gradcheck(objective, [states, *inputs])
    assert tg.gradgradcheck(lambda z: BCE(z, y, mask=mask), [Tensor(x.copy(), requires_grad=True)])


def test_head_on_a_transformers_states_matches_torch():
    """The outcome loss on a tiny GPT's hidden states, with a torch head holding the same weights."""
    from tinygrad_reason.nn import Transformer, TransformerConfig
    tg.manual_seed(0)
    trunk = Transformer(TransformerConfig.gpt(vocab_size=30, context_length=12, d_model=16, n_layers=1, n_heads=2))
    head = ValueHead(16, hidden=8)
    ids = np.random.default_rng(0).integers(0, 30, size=(3, 10))
    targets = np.repeat(np.array([[1.0], [0.0], [1.0]]), 10, axis=1)        # every token predicts the outcome
    mask = np.zeros((3, 10), dtype=bool)
    mask[:, 4:] = True                                                      # completion tokens only
    states = trunk.hidden_states(ids).detach()
    states.requires_grad = True
    loss = BCE(head(states), targets, mask=mask)
    loss.backward()
    ts = torch.tensor(states.numpy(), requires_grad=True)
    fc_w, fc_b, out_w, out_b = (torch.tensor(p.numpy()) for p in head.parameters())
    logits = (torch.nn.functional.gelu(ts @ fc_w.T + fc_b) @ out_w.T + out_b)[..., 0]
    ref = _torch_bce(logits, torch.tensor(targets, dtype=torch.float32), torch.tensor(mask, dtype=torch.float32),
                     "mean")
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(states.grad.numpy(), ts.grad.numpy(), rtol=1e-4, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 10_000))
def test_property_nonnegative_and_the_gradient_is_sigmoid_minus_target(b, t, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, t)) * 10
    y = rng.random((b, t))
    z = Tensor(x.copy(), requires_grad=True)
    loss = BCE(z, y, reduction="sum")
    loss.backward()
    entropy = -(y * np.log(np.clip(y, 1e-300, 1)) + (1 - y) * np.log(np.clip(1 - y, 1e-300, 1)))
    assert loss.item() >= entropy.sum() - 1e-9                 # cross-entropy >= the targets' entropy
    np.testing.assert_allclose(z.grad.numpy(), 1.0 / (1.0 + np.exp(-x)) - y, rtol=1e-9, atol=1e-12)


def test_bad_inputs_are_clear_errors():
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"targets shape \(3,\) must equal logits shape \(2, 3\)"):
        BCE(x, np.zeros(3))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
        BCE(x, np.full((2, 3), 2.0))
    with pytest.raises(ValueError, match=r"mask shape \(2,\) must equal"):
        BCE(x, np.zeros((2, 3)), mask=np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="selects no position"):
        BCE(x, np.zeros((2, 3)), mask=np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="reduction must be"):
        BCE(x, np.zeros((2, 3)), reduction="avg")
    with pytest.raises(ValueError, match="states shape .* must end in d_model 4"):
        ValueHead(4)(Tensor(np.zeros((2, 3, 5), dtype=np.float32)))
