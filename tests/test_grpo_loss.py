"""train/grpo_loss.py: advantages and the policy loss of every loss type, importance level, clip
and KL estimator against a torch implementation written here (TRL's formulas) on the same
log-probs, rewards and masks, values and gradients; the properties the objective promises."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinygrad_reason.tensor import Tensor
from tinygrad_reason.train.grpo_loss import (ADVANTAGES, LOSS_TYPES, advantages, kl_penalty, policy_loss,
                                             token_weights)

MAX_LEN = 9


# ------------------------------------------------------------------ the torch reference (TRL's GRPOTrainer)
def torch_advantages(rewards, g, mode):
    r = torch.tensor(rewards, dtype=torch.float64)
    grouped = r.view(-1, g)
    mean = grouped.mean(dim=1).repeat_interleave(g)
    if mode == "group":
        return (r - mean) / (grouped.std(dim=1).repeat_interleave(g) + 1e-4)
    if mode == "mean":
        return r - mean
    if mode == "batch":
        return (r - mean) / (r.std() + 1e-4)
    total = grouped.sum(dim=1).repeat_interleave(g)
    return r - (total - r) / (g - 1)                       # RLOO: leave-one-out baseline


def torch_loss(logp, old, adv, mask, loss_type, eps_low, eps_high, delta, level, beta, ref, estimator):
    logp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    old, mask = torch.tensor(old), torch.tensor(mask, dtype=torch.float64)
    adv = torch.tensor(adv).unsqueeze(1)
    log_ratio = logp - old
    if level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_ratio)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta:
        d = torch.tensor(ref) - logp
        kl = {"k1": -d, "k2": 0.5 * d ** 2, "k3": torch.exp(d) - d - 1}[estimator]
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type in ("bnpo", "dapo"):
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        loss = (per_token * mask).sum() / (per_token.size(0) * MAX_LEN)
    loss.backward()
    return loss.item(), logp.grad.numpy()


def batch(seed, n=8, t=MAX_LEN, spread=0.4):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.05, 3.0, (n, t))
    old = logp + rng.normal(0, spread, (n, t))             # ratios on both sides of the clip
    mask = rng.random((n, t)) < 0.8
    mask[0] = False                                         # a row with no loss tokens
    adv = rng.normal(0, 1, n)
    ref = logp + rng.normal(0, 0.3, (n, t))
    return logp, old, adv, mask, ref


def ours(logp, old, adv, mask, loss_type, **kw):
    x = Tensor(logp, requires_grad=True)
    loss, stats = policy_loss(x, old, adv, token_weights(mask, loss_type, MAX_LEN), **kw)
    loss.backward()
    return loss.item(), x.grad.numpy(), stats


CASES = list(itertools.product(LOSS_TYPES, ("token", "sequence"), (None, 1.5), (0.0, 0.04),
                               ("k1", "k2", "k3")))


@pytest.mark.parametrize("loss_type,level,delta,beta,estimator",
                         [c for c in CASES if c[3] or c[4] == "k3"])     # estimators only matter with beta
def test_policy_loss_matches_torch(loss_type, level, delta, beta, estimator):
    logp, old, adv, mask, ref = batch(1)
    kw = dict(eps_low=0.2, eps_high=0.28, delta=delta, level=level, beta=beta, kl_estimator=estimator)
    value, grad, _ = ours(logp, old, adv, mask, loss_type, ref_logp=ref, **kw)
    t_value, t_grad = torch_loss(logp, old, adv, mask, loss_type, 0.2, 0.28, delta, level, beta, ref, estimator)
    assert value == pytest.approx(t_value, rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(grad, t_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("mode", ADVANTAGES)
def test_advantages_match_torch_and_sum_to_zero_per_group(mode):
    rng = np.random.default_rng(2)
    rewards = rng.integers(0, 2, 24).astype(float) + rng.normal(0, 0.1, 24)
    rewards[8:12] = 1.0                                     # a group with no spread
    adv = advantages(rewards, 4, mode)
    ref = torch_advantages(rewards, 4, mode).numpy()
    np.testing.assert_allclose(adv, ref, rtol=1e-12, atol=1e-12)
    assert np.all(adv[8:12] == 0.0)                        # exactly zero, not round-off
    np.testing.assert_allclose(adv.reshape(-1, 4).sum(axis=1), 0.0, atol=1e-12)


def test_bnpo_and_dapo_are_one_loss_on_one_process():
    logp, old, adv, mask, _ = batch(3)
    a, ga, _ = ours(logp, old, adv, mask, "bnpo")
    b, gb, _ = ours(logp, old, adv, mask, "dapo")
    assert a == b and np.array_equal(ga, gb)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", ("token", "sequence"))
def test_micro_batches_sum_to_the_whole_batch(loss_type, level):
    # the weights are fixed for the whole step, so any split of the rows adds up to one batch's loss
    logp, old, adv, mask, ref = batch(4, n=12)
    w = token_weights(mask, loss_type, MAX_LEN)
    kw = dict(level=level, beta=0.04, ref_logp=ref)
    x = Tensor(logp, requires_grad=True)
    whole, _ = policy_loss(x, old, adv, w, **{**kw, "ref_logp": ref})
    whole.backward()
    total, grads = 0.0, np.zeros_like(logp)
    for rows in (np.arange(0, 5), np.arange(5, 7), np.arange(7, 12)):
        part = Tensor(logp[rows], requires_grad=True)
        loss, _ = policy_loss(part, old[rows], adv[rows], w[rows], **{**kw, "ref_logp": ref[rows]})
        loss.backward()
        total += loss.item()
        grads[rows] = part.grad.numpy()
    assert total == pytest.approx(whole.item(), rel=1e-12)
    np.testing.assert_allclose(grads, x.grad.numpy(), rtol=1e-12, atol=1e-15)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(LOSS_TYPES), st.floats(0.05, 0.4), st.floats(0.05, 0.4))
def test_clipping_stops_the_push_outside_the_trust_region(seed, loss_type, eps_low, eps_high):
    # a token whose ratio already moved past the clip in its advantage's direction gets no gradient;
    # every other loss token gets A * ratio * weight, the unclipped surrogate's
    logp, old, adv, mask, _ = batch(seed, spread=0.5)
    _, grad, stats = ours(logp, old, adv, mask, loss_type, eps_low=eps_low, eps_high=eps_high)
    ratio = np.exp(logp - old)
    a = adv[:, None]
    outside = ((ratio > 1 + eps_high) & (a > 0)) | ((ratio < 1 - eps_low) & (a < 0))
    w = token_weights(mask, loss_type, MAX_LEN)
    assert np.all(grad[outside & mask] == 0)
    inside = mask & ~outside
    np.testing.assert_allclose(grad[inside], (-a * ratio * w)[inside], rtol=1e-12)
    assert np.all(np.abs(grad) <= np.abs(a * ratio * w) + 1e-15)    # clipping never adds gradient
    assert stats["clip_region"] == int((outside & mask).sum()) and stats["loss_tokens"] == int(mask.sum())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(ADVANTAGES), st.sampled_from(LOSS_TYPES),
       st.sampled_from(("token", "sequence")))
def test_zero_spread_groups_give_zero_gradient(seed, mode, loss_type, level):
    rng = np.random.default_rng(seed)
    logp, old, _, mask, _ = batch(seed)
    rewards = np.repeat(rng.integers(0, 2, 2).astype(float), 4)        # two groups of 4, each all-equal
    adv = advantages(rewards, 4, mode)
    _, grad, _ = ours(logp, old, adv, mask, loss_type, level=level)
    assert np.all(grad == 0)


def test_ratio_one_gives_the_policy_gradient():
    # at the old policy (the first step of a batch) the loss's gradient is -A * weight per token
    logp, _, adv, mask, _ = batch(5)
    _, grad, stats = ours(logp, logp.copy(), adv, mask, "grpo")
    np.testing.assert_allclose(grad, -adv[:, None] * token_weights(mask, "grpo", MAX_LEN), rtol=1e-12)
    assert stats["clip_region"] == 0


def test_kl_estimators():
    logp = Tensor(np.array([-1.0, -2.0]))
    ref = np.array([-1.5, -1.0])
    d = ref - logp.numpy()
    np.testing.assert_allclose(kl_penalty(logp, ref, "k1").numpy(), -d)
    np.testing.assert_allclose(kl_penalty(logp, ref, "k2").numpy(), d ** 2 / 2)
    np.testing.assert_allclose(kl_penalty(logp, ref, "k3").numpy(), np.exp(d) - d - 1)
    assert np.all(kl_penalty(logp, ref, "k3").numpy() >= 0)
    with pytest.raises(ValueError, match="unknown estimator 'k4'"):
        kl_penalty(logp, ref, "k4")


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown mode 'z'"):
        advantages([1.0, 0.0], 2, "z")
    with pytest.raises(ValueError, match="groups of 3"):
        advantages([1.0, 0.0], 3)
    with pytest.raises(ValueError, match="unknown loss_type 'ppo'"):
        token_weights(np.ones((2, 2), bool), "ppo", 4)
    logp, old, adv, mask, _ = batch(0)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(Tensor(logp), old, adv, token_weights(mask, "grpo", MAX_LEN), beta=0.1)
    with pytest.raises(ValueError, match="importance level 'word'"):
        policy_loss(Tensor(logp), old, adv, token_weights(mask, "grpo", MAX_LEN), level="word")


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_at_the_old_policy_clip_and_sequence_ratios_change_nothing(loss_type):
    # with mu = 1 (TRL's default) every step is at ratio 1: the clip range, delta and the GSPO sequence
    # ratio all give the plain token-level policy gradient, so only mu > 1 can tell them apart
    logp, _, adv, mask, _ = batch(6)
    _, base, _ = ours(logp, logp.copy(), adv, mask, loss_type)
    for kw in (dict(eps_high=0.28), dict(eps_low=3e-4, eps_high=4e-4, level="sequence"), dict(delta=1.5)):
        _, g, _ = ours(logp, logp.copy(), adv, mask, loss_type, **kw)
        np.testing.assert_allclose(g, base, rtol=1e-12, atol=1e-16, err_msg=str(kw))
