"""Rollouts for RL: G sampled completions per prompt, and the policy's log-probabilities of them.

sample_groups: the prompts, each repeated G times side by side, in ONE generate call (the copies of
a prompt share one prompt forward and its keys). Row r of the call samples from its own generator
(row seed `first_seed + r`), so a rollout does not depend on how it is batched.

The policy and its log-probabilities. The distribution a token was sampled from is the model's
logits divided by the temperature, cut to the top-k and then the top-p set (sampling.py's order),
renormalized. token_logprobs recomputes exactly that distribution, differentiably:
    x = logits / T;  x[tokens outside the top-k / top-p set of x] = -inf;  log_softmax(x)[sampled token]
The kept set is recomputed from the current logits (a function of them that has no gradient), so at
the old policy the recomputed log-probs equal the sampler's (`Rollouts.sampler_logprobs`) to
round-off: to 1e-6 in float64, a test. The sampled token is always kept (under a newer policy that
would cut it, its ratio stays finite). Greedy decoding (T = 0) has no distribution to differentiate:
its tokens are scored under the model distribution (T = 1), which is what the sampler reports for
them too. A repetition penalty or an n-gram ban makes the distribution depend on the history; RL
rejects both (GRPOConfig) rather than score under a distribution that was not sampled from.

Layout for the recomputation (policy_inputs): each row is its prompt LEFT-padded to the longest
prompt W, then its completion right-padded; positions count from each row's first real token, as
the decoder counts them. So hidden state W - 1 + t predicts completion token t in every row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend
from .. import functional as F
from ..data.formats import IGNORE
from ..generate import SamplingConfig, generate
from ..generate.sampling import top_k_filter, top_p_filter
from ..tensor import Tensor


@dataclass
class Rollouts:
    """A batch of completions, G per prompt, rows of a group side by side. (N, T) arrays are
    right-padded to the longest completion T."""
    prompts: list                    # per row: prompt token ids
    completions: list                # per row: generated token ids (stop token included)
    group: np.ndarray                # (N,) int: the group (prompt) index of each row
    sampler_logprobs: np.ndarray     # (N, T) float64: log-prob of each token under the distribution sampled from
    tokens: np.ndarray               # (N, T) int64 completion tokens, pad_id after the end
    real: np.ndarray                 # (N, T) bool: a generated token (not padding)
    forced: np.ndarray               # (N, T) bool: forced by a tool (no loss)
    finish_reasons: list             # per row: 'stop' or 'length' (truncated)

    @property
    def lengths(self) -> np.ndarray:
        return self.real.sum(axis=1)

    @property
    def truncated(self) -> np.ndarray:
        return np.array([r == "length" for r in self.finish_reasons], dtype=bool)

    def loss_mask(self, mask_truncated: bool = False) -> np.ndarray:
        """(N, T) bool: the tokens that carry loss: sampled (not forced), not padding, and, with
        mask_truncated, not in a completion cut off by the length limit."""
        mask = self.real & ~self.forced
        if mask_truncated:
            mask &= ~self.truncated[:, None]
        return mask

    def select(self, rows) -> "Rollouts":
        rows = np.asarray(rows, dtype=np.int64)
        return Rollouts([self.prompts[i] for i in rows], [self.completions[i] for i in rows], self.group[rows],
                        self.sampler_logprobs[rows], self.tokens[rows], self.real[rows], self.forced[rows],
                        [self.finish_reasons[i] for i in rows])


def sample_groups(model, prompts, group_size: int, cfg: SamplingConfig, first_seed: int = 0,
                  tool=None) -> Rollouts:
    """`group_size` completions of each prompt, all in one generate call (rows of a group side by
    side, row r with row seed first_seed + r)."""
    rows = [list(p) for p in prompts for _ in range(group_size)]
    result = generate(model, rows, cfg, row_seeds=[first_seed + r for r in range(len(rows))], tool=tool)
    n, t = len(rows), max(result.n_generated, default=0)
    tokens = np.full((n, t), cfg.pad_id, dtype=np.int64)
    real, forced = np.zeros((n, t), dtype=bool), np.zeros((n, t), dtype=bool)
    lps = np.zeros((n, t))
    for i, toks in enumerate(result.tokens):
        k = len(toks)
        tokens[i, :k], real[i, :k], forced[i, :k] = toks, True, result.forced[i]
        # greedy rows report 0 (probability 1) as their sampling log-prob: they are scored under the model's
        lps[i, :k] = result.logprobs[i] if cfg.greedy else result.sample_logprobs[i]
    group = np.repeat(np.arange(len(prompts)), group_size)
    return Rollouts(rows, [list(x) for x in result.tokens], group, lps, tokens, real, forced,
                    list(result.finish_reasons))


def policy_inputs(rollouts: Rollouts, pad_id: int):
    """(inputs (N, W + T - 1), pad_mask or None, positions, W): the model's inputs for scoring every
    completion token in one forward (the module docstring's layout)."""
    n, t = rollouts.tokens.shape
    w = max(len(p) for p in rollouts.prompts)
    full = np.full((n, w + t), pad_id, dtype=np.int64)
    mask = np.zeros((n, w + t), dtype=bool)
    for i, p in enumerate(rollouts.prompts):
        full[i, w - len(p):w] = p
        mask[i, w - len(p):w] = True
    full[:, w:] = rollouts.tokens
    mask[:, w:] = rollouts.real
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    left_padded = not mask[:, :w].all()
    # right padding needs no mask (causality hides it); left padding does
    return full[:, :-1], (mask[:, :-1] if left_padded else None), positions[:, :-1], w


def kept_tokens(x: np.ndarray, cfg: SamplingConfig) -> np.ndarray | None:
    """(M, V) bool: the top-k / top-p set of tempered logits x (M, V), as the sampler cuts it;
    None when neither filter is on."""
    if cfg.greedy or (cfg.top_k is None and cfg.top_p >= 1.0):
        return None
    y = np.asarray(x, dtype=np.float64)
    if cfg.top_k is not None:
        y = top_k_filter(y, cfg.top_k)
    if cfg.top_p < 1.0:
        y = top_p_filter(y, cfg.top_p)
    return np.isfinite(y)


def token_logprobs(logits: Tensor, targets: np.ndarray, valid: np.ndarray, cfg: SamplingConfig) -> Tensor:
    """(N, T) log-probs of `targets` under the sampling distribution of `logits` (N, T, V) (the
    module docstring); 0 where not `valid`. Differentiable in the logits."""
    x = logits if cfg.greedy or cfg.temperature == 1.0 else logits * (1.0 / float(cfg.temperature))
    safe = np.where(valid, targets, IGNORE)
    if cfg.greedy or (cfg.top_k is None and cfg.top_p >= 1.0):
        return -F.cross_entropy(x, safe, reduction="none")
    xp = x.xp
    rows = np.nonzero(valid.reshape(-1))[0]
    v = x.shape[-1]
    flat = x.data.reshape(-1, v)
    kept_rows = kept_tokens(backend.to_device(flat[rows], "cpu"), cfg)
    kept_rows[np.arange(len(rows)), targets.reshape(-1)[rows]] = True   # the sampled token stays in the set
    cut = np.zeros((flat.shape[0], v), dtype=bool)
    cut[rows] = ~kept_rows
    x = F.masked_fill(x, xp.asarray(cut.reshape(x.shape)), -np.inf)
    return -F.cross_entropy(x, safe, reduction="none")


def policy_logprobs(model, rollouts: Rollouts, cfg: SamplingConfig, with_logits: bool = False):
    """(N, T) log-probs of each row's completion tokens under `model`'s sampling distribution,
    one forward for the batch; 0 on padding. Differentiable when grad is on. with_logits: also
    return the (N, T, V) logits Tensor (for the entropy metric)."""
    inputs, pad_mask, positions, w = policy_inputs(rollouts, cfg.pad_id)
    hidden = model.hidden_states(inputs, pad_mask=pad_mask, positions=positions)
    logits = model.logits(hidden[:, w - 1:])
    logp = token_logprobs(logits, rollouts.tokens, rollouts.real, cfg)
    return (logp, logits) if with_logits else logp


def entropy(logits_data, mask: np.ndarray, temperature: float = 1.0) -> float:
    """Mean entropy (nats) of softmax(logits / temperature) over the positions in `mask` (the
    metrics' entropy: before any top-k / top-p cut)."""
    if not isinstance(logits_data, np.ndarray):
        logits_data = backend.to_device(logits_data, "cpu")
    x = np.asarray(logits_data, dtype=np.float64)[mask]
    if temperature > 0:
        x = x / temperature
    if not len(x):
        return float("nan")
    x = x - x.max(axis=-1, keepdims=True)
    p = np.exp(x)
    z = p.sum(axis=-1, keepdims=True)
    p /= z
    with np.errstate(invalid="ignore"):
        h = np.log(z[:, 0]) - np.where(p > 0, p * x, 0.0).sum(axis=-1)
    return float(h.mean())
