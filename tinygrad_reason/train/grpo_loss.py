"""The GRPO objective, as pure functions of log-probs, rewards and masks (the trainer is grpo.py).

Advantages of a group's G rewards r (groups are contiguous rows), `advantage=`:
    "group"  (GRPO)        (r - mean_g) / (std_g + 1e-4)      std unbiased, as TRL's torch.std
    "mean"   (Dr. GRPO)    r - mean_g
    "batch"                (r - mean_g) / (std_batch + 1e-4)  TRL's scale_rewards="batch"
    "rloo"   (RLOO)        r_i - mean of the group's OTHER rewards  = G/(G-1) (r_i - mean_g)
A group whose rewards are all equal gets advantage 0 everywhere in every mode: it gives no gradient.

Per token (ratio rho = exp(logp - logp_old); A the row's advantage):
    token level (GRPO):     loss_t = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)
    sequence level (GSPO):  rho replaced by the row's exp(mean_t(logp - logp_old)) (length-normalized)
    delta (two-sided clip): the unclipped rho capped at delta first, so a negative-advantage token
                            whose ratio ran far above 1 cannot push without bound
    + beta * KL_t to the reference policy, estimator k1 = logp - ref, k2 = (logp - ref)^2 / 2,
      k3 = exp(ref - logp) - (ref - logp) - 1 (Schulman's, TRL's).
Aggregation, `loss_type=` (N rows in the optimizer step, |o_i| loss tokens of row i):
    "grpo"     mean over rows of each row's token mean:  sum_it loss_it / (N |o_i|)
    "bnpo"     per token over the step's batch:         sum_it loss_it / sum_i |o_i|
    "dr_grpo"  sum_it loss_it / (N * max_completion_length)
    "dapo"     per token over the whole accumulated batch: the same normalizer as bnpo here
TRL divides bnpo by each micro-batch's OWN token count, so its update depends on how a batch is cut
into micro-batches; here every type is written as per-token weights fixed for the whole optimizer
step before any micro-batch runs (token_weights), so k micro-batches sum to exactly the update of
one batch. That makes bnpo and dapo one loss on one process (a test says so); they are kept as two
names for TRL's configs.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..tensor import Tensor

ADVANTAGES = ("group", "mean", "batch", "rloo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
KL_ESTIMATORS = ("k1", "k2", "k3")
IMPORTANCE_LEVELS = ("token", "sequence")
STD_EPS = 1e-4


def advantages(rewards, group_size: int, mode: str = "group") -> np.ndarray:
    """(N,) advantages of (N,) rewards in contiguous groups of group_size (the module docstring)."""
    if mode not in ADVANTAGES:
        raise ValueError(f"advantages: unknown mode {mode!r}: expected one of {ADVANTAGES}")
    r = np.asarray(rewards, dtype=np.float64)
    if group_size < 2 or r.ndim != 1 or len(r) % group_size:
        raise ValueError(f"advantages: {r.shape} rewards do not form groups of {group_size} (>= 2)")
    g = r.reshape(-1, group_size)
    mean = g.mean(axis=1, keepdims=True)
    if mode == "group":
        adv = (g - mean) / (g.std(axis=1, ddof=1, keepdims=True) + STD_EPS)
    elif mode == "mean":
        adv = g - mean
    elif mode == "batch":
        adv = (g - mean) / ((r.std(ddof=1) if len(r) > 1 else 0.0) + STD_EPS)
    else:
        adv = (g - mean) * (group_size / (group_size - 1))
    flat = np.where(np.ptp(g, axis=1, keepdims=True) == 0, 0.0, adv)   # exactly 0 for a zero-spread group
    return flat.reshape(-1)


def token_weights(mask: np.ndarray, loss_type: str, max_completion_length: int) -> np.ndarray:
    """(N, T) weights w such that the step's loss is sum(w * loss_t): the aggregation of
    `loss_type` over ALL N rows of the optimizer step (the module docstring); 0 off the mask."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"token_weights: unknown loss_type {loss_type!r}: expected one of {LOSS_TYPES}")
    m = np.asarray(mask, dtype=np.float64)
    n = max(m.shape[0], 1)
    if loss_type == "grpo":
        return m / (n * np.maximum(m.sum(axis=1, keepdims=True), 1.0))
    if loss_type == "dr_grpo":
        return m / (n * float(max_completion_length))
    return m / max(m.sum(), 1.0)


def kl_penalty(logp: Tensor, ref_logp, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_penalty: unknown estimator {estimator!r}: expected one of {KL_ESTIMATORS}")
    diff = logp - Tensor._wrap(logp.xp.asarray(ref_logp, dtype=logp.dtype))
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return diff * diff * 0.5
    return F.exp(-diff) + diff - 1.0


def policy_loss(logp: Tensor, old_logp, adv, weights, *, eps_low: float = 0.2, eps_high: float = 0.2,
                delta: float | None = None, level: str = "token", beta: float = 0.0, ref_logp=None,
                kl_estimator: str = "k3") -> tuple[Tensor, dict]:
    """The clipped surrogate (+ KL) of the module docstring for the rows of logp (N, T), summed with
    `weights` (token_weights' rows for these rows; a token with weight 0 carries no loss). Returns
    (scalar loss Tensor, stats): COUNTS over the loss tokens, so micro-batches add up: clip_low /
    clip_high / clip_region (tokens whose ratio the clip holds below / above / either, TRL's
    is_low_clipped: ratio < 1 - eps_low with A < 0), loss_tokens, and kl (the KL summed, with beta)."""
    if level not in IMPORTANCE_LEVELS:
        raise ValueError(f"policy_loss: unknown importance level {level!r}: expected one of {IMPORTANCE_LEVELS}")
    xp = logp.xp
    w = np.asarray(weights, dtype=np.float64)
    a = np.asarray(adv, dtype=np.float64).reshape(-1, 1)
    old = Tensor._wrap(xp.asarray(old_logp, dtype=logp.dtype))
    log_ratio = logp - old
    if level == "sequence":          # GSPO: one length-normalized ratio per row, on the row's loss tokens
        m = (w > 0).astype(np.float64)
        mask_t = Tensor._wrap(xp.asarray(m / np.maximum(m.sum(axis=1, keepdims=True), 1.0), dtype=logp.dtype))
        log_ratio = (log_ratio * mask_t).sum(axis=1, keepdims=True)        # (N, 1)
    ratio = F.exp(log_ratio)
    clipped = F.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    unclipped = F.clip(ratio, None, delta) if delta is not None else ratio
    adv_t = Tensor._wrap(xp.asarray(a, dtype=logp.dtype))
    per_token = -F.minimum(unclipped * adv_t, clipped * adv_t)
    kl = None
    if beta:
        if ref_logp is None:
            raise ValueError("policy_loss: beta > 0 needs the reference policy's log-probs (ref_logp)")
        kl = kl_penalty(logp, ref_logp, kl_estimator)
        per_token = per_token + kl * beta
    w_t = Tensor._wrap(xp.asarray(w, dtype=logp.dtype))
    loss = (per_token * w_t).sum()
    r = np.broadcast_to(np.asarray(ratio.data if xp is np else xp.asnumpy(ratio.data), dtype=np.float64), w.shape)
    on = w > 0
    low = (r < 1.0 - eps_low) & (a < 0) & on
    high = (r > 1.0 + eps_high) & (a > 0) & on
    stats = {"clip_low": int(low.sum()), "clip_high": int(high.sum()), "clip_region": int((low | high).sum()),
             "loss_tokens": int(on.sum())}
    if kl is not None:
        kl_data = kl.data if xp is np else xp.asnumpy(kl.data)
        stats["kl"] = float(np.where(on, kl_data, 0.0).sum())
    return loss, stats
