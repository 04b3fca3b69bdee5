"""benchmarks/hand_step.py, the training step written by hand that bench_train.py --hand measures our
engine against: it must compute the same step, or the floor it reports means nothing."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import bench_train  # noqa: E402
from hand_step import HandGPT  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return bench_train.build("tiny")


def test_hand_gradients_equal_the_engines(tiny):
    cfg, ours, opt, _, _, ids, targets = tiny
    ids, targets = ids[:8], targets[:8]
    hand = HandGPT(ours.state_dict(), cfg.n_heads, norm_eps=cfg.norm_eps)
    hand_loss = hand.loss_and_grads(ids, targets)
    opt.zero_grad()
    loss = ours.loss(ids, targets)
    loss.backward()
    assert hand_loss == pytest.approx(loss.item(), rel=1e-6)
    grads = {n: p.grad.numpy() for n, p in ours.named_parameters()}
    assert set(grads) == set(hand.g)
    scale = max(float(np.abs(g).max()) for g in grads.values())
    for name, g in grads.items():     # k's bias gets a zero gradient (softmax ignores a per-row shift): atol
        np.testing.assert_allclose(hand.g[name], g, rtol=2e-3, atol=2e-5 * scale, err_msg=name)


def test_hand_steps_follow_torch(tiny):
    cfg, ours, _, tmodel, topt, ids, targets = tiny
    hand = HandGPT(ours.state_dict(), cfg.n_heads, norm_eps=cfg.norm_eps)
    tmodel, topt = bench_train.build("tiny")[3:5]                 # fresh: the fixture's may have stepped
    tids, ttargets = torch.from_numpy(ids), torch.from_numpy(targets)
    for _ in range(3):
        assert hand.step(ids, targets) == pytest.approx(bench_train.torch_step(tmodel, topt, tids, ttargets),
                                                        rel=1e-5)
    for name, p in tmodel.named_parameters():
        # AdamW moves a weight by about lr (3e-4) a step whatever its gradient, so a near-zero gradient
        # rounded differently moves it differently: atol a tenth of lr
        np.testing.assert_allclose(hand.p[name], p.detach().numpy(), rtol=1e-4, atol=3e-5, err_msg=name)
    assert {"linear", "attention", "gelu", "layernorm", "adamw"} <= set(hand.times)


def test_hand_gelu_and_its_derivative_match_torch():
    u = np.concatenate([np.linspace(-12, 12, 600 * 64 - 4), [0.0, -0.0, 1e-6, -1e-6]]).astype(np.float32)
    u = u.reshape(600, 64)                                          # blocks of 256 rows: two whole, one partial
    out, deriv = HandGPT._gelu(u)
    tu = torch.from_numpy(u.astype(np.float64)).requires_grad_()
    ref = torch.nn.functional.gelu(tu)
    ref.sum().backward()
    bound = 1e-6 * np.maximum(1.0, np.abs(u))                        # A&S 7.1.26: |erf error| < 1.5e-7
    assert np.all(np.abs(out - ref.detach().numpy()) <= bound)
    assert np.all(np.abs(deriv - tu.grad.numpy()) <= bound)


def test_hand_refuses_a_state_dict_whose_q_k_v_are_apart(tiny):
    cfg, ours = tiny[:2]
    state = dict(ours.state_dict())
    state["blocks.0.attn.q_proj.weight"] = state.pop("blocks.0.attn.q_proj.weight")    # q moves to the end
    with pytest.raises(ValueError, match="blocks.0.attn.q_proj.weight"):
        HandGPT(state, cfg.n_heads)
