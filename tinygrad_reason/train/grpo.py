"""GRPO: reinforcement learning with verifiable rewards, as a Task on the train loop (loop.py).

One rollout batch feeds `mu` optimizer steps (TRL's num_iterations):
    draw prompts_per_step training problems -> G completions each (rollouts.sample_groups: one
    generate call, each prompt's forward shared by its G rows) -> decode, reward (rl_rewards:
    TRL's interface, weighted sum) -> [dynamic sampling: drop groups whose rewards have no spread,
    refill from new problems, at most dynamic_max_rounds generate calls] -> advantages per group
    -> per-token loss weights for the whole batch (grpo_loss.token_weights)
then every optimizer step runs the batch in grad_accum micro-batches: the policy's log-probs of the
sampled tokens (rollouts.policy_logprobs: under the sampling distribution, recomputed exactly),
the clipped surrogate + KL (grpo_loss.policy_loss), backward. On the batch's first step the
parameters ARE the old policy, so its log-probs (detached) become logp_old for the mu - 1 steps
after (ratio exactly 1 on the first). The sampler's own log-probs are kept to measure how far the
recomputation is from them (logprob_mismatch; round-off in float32, 1e-6 in float64 is a test).

A NaN or Inf in the loss stops the step before any backward, naming the step and the op where it
began (loop.first_non_finite); the loop's own checks catch one in the gradients.

Tokens forced by the calculator tool and padding carry no loss; with mask_truncated, neither do the
completions the length limit cut off. Dropout is off in every forward (the ratio must compare one
policy with itself). The reference policy for the KL term (beta > 0) is a frozen copy of the model
as it was when the trainer was built, i.e. the SFT model.

State for resume: the problem sampler and the count of rollout rows drawn (row seeds follow it), so
a resumed run draws the same problems and samples the same completions. Checkpoints are written at
evaluations, which fall on the first step of a rollout batch (eval_every is a multiple of mu).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from ..data.formats import prompt_ids
from ..generate import CalculatorTool, SamplingConfig
from ..parallel import data_parallel_backward
from ..tensor import no_grad
from . import loop
from .evaluation import evaluate
from .grpo_loss import ADVANTAGES, IMPORTANCE_LEVELS, KL_ESTIMATORS, LOSS_TYPES, advantages, policy_loss, token_weights
from .metrics import plot_rl_metrics
from .rl_rewards import REWARD_FUNCTIONS, OverlongPenalty, combine_rewards, reward_name
from .rollouts import Rollouts, entropy, policy_logprobs, sample_groups


@dataclass
class GRPOConfig(loop.LoopConfig):
    """GRPO's knobs, TRL's defaults where it has one (loss_type dapo, beta 0, eps 0.2, mu 1,
    temperature 1, group advantages, G 8, no weight decay, AdamW betas (0.9, 0.999), gradient
    clip 1). The learning rate is ours: TRL's 1e-6 is for billion-parameter models."""
    steps: int = 200
    lr: float = 3e-5                  # constant (min_lr = lr): chosen by the 100-step probes in the README
    min_lr: float = 3e-5
    warmup: int = 0
    weight_decay: float = 0.0
    beta2: float = 0.999
    eval_every: int = 50
    log_every: int = 1
    # rollouts
    prompts_per_step: int = 16        # groups per rollout batch
    num_generations: int = 8          # G, completions per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_completion_length: int = 160
    tool: bool = False                # the calculator forces annotation results while sampling
    # objective
    advantage: str = "group"          # group | mean (Dr. GRPO) | batch | rloo
    loss_type: str = "dapo"           # grpo | bnpo | dr_grpo | dapo
    eps_low: float = 0.2
    eps_high: float = 0.2             # 0.28: DAPO's clip-higher
    delta: float | None = None        # two-sided clip: cap on the unclipped ratio (> 1 + eps_high)
    importance_level: str = "token"   # token (GRPO) | sequence (GSPO)
    beta: float = 0.0                 # KL to the reference policy
    kl_estimator: str = "k3"
    mu: int = 1                       # optimizer steps per rollout batch
    mask_truncated: bool = False
    dynamic_sampling: bool = False
    dynamic_max_rounds: int = 3       # generate calls per batch at most, with dynamic sampling
    # rewards
    rewards: tuple = ("correctness",)
    reward_weights: tuple | None = None       # one per reward (default 1.0 each)
    overlong_cache: int = 0           # > 0: DAPO's soft overlong penalty over the last this many tokens
    grading_timeout: float = 1.0
    grading_workers: int = 2
    # evaluation and batching
    eval_size: int = 200
    eval_batch: int = 64
    data_parallel: bool = True
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        self.rewards = tuple(self.rewards)
        if self.reward_weights is not None:
            self.reward_weights = tuple(float(w) for w in self.reward_weights)

        def bad(field, why):
            raise ValueError(f"GRPOConfig.{field} {why}, got {getattr(self, field)!r}")

        if self.num_generations < 2:
            bad("num_generations", "must be >= 2 (a group needs two completions to compare)")
        for field in ("prompts_per_step", "max_completion_length", "mu", "eval_batch", "dynamic_max_rounds",
                      "grading_workers"):
            if getattr(self, field) < 1:
                bad(field, "must be >= 1")
        for field in ("eps_low", "eps_high", "beta", "eval_size", "overlong_cache", "temperature"):
            if getattr(self, field) < 0:
                bad(field, "must be >= 0")
        if self.eps_low >= 1:
            bad("eps_low", "must be < 1 (the ratio's lower clip 1 - eps_low must stay positive)")
        if self.delta is not None and self.delta <= 1 + self.eps_high:
            bad("delta", f"must be > 1 + eps_high = {1 + self.eps_high}")
        for field, allowed in (("advantage", ADVANTAGES), ("loss_type", LOSS_TYPES),
                               ("importance_level", IMPORTANCE_LEVELS), ("kl_estimator", KL_ESTIMATORS)):
            if getattr(self, field) not in allowed:
                bad(field, f"must be one of {allowed}")
        unknown = [r for r in self.rewards if r not in REWARD_FUNCTIONS]
        if unknown or not self.rewards:
            bad("rewards", f"must name reward functions among {tuple(REWARD_FUNCTIONS)}")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            bad("reward_weights", f"needs one weight per reward {self.rewards}")
        if self.overlong_cache > self.max_completion_length:
            bad("overlong_cache", f"must be <= max_completion_length {self.max_completion_length}")
        if self.eval_every % self.mu:
            bad("eval_every", f"must be a multiple of mu = {self.mu} (checkpoints fall on a rollout batch's first step)")
        if self.grading_timeout <= 0:
            bad("grading_timeout", "must be > 0")
        self.sampling()      # temperature / top-k / top-p checked by SamplingConfig

    def sampling(self, pad_id: int = 0, stop_ids=()) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              max_new_tokens=self.max_completion_length, stop_ids=tuple(stop_ids),
                              seed=self.seed, pad_id=pad_id)


@contextlib.contextmanager
def _dropout_off(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def concat_rollouts(parts: list, pad_id: int = 0) -> Rollouts:
    """One Rollouts of several (groups renumbered, (N, T) arrays padded to the longest, tokens with pad_id)."""
    if len(parts) == 1:
        return parts[0]
    t = max(p.tokens.shape[1] for p in parts)

    def pad(a, value):
        return np.pad(a, ((0, 0), (0, t - a.shape[1])), constant_values=value)

    groups, offset = [], 0
    for p in parts:
        groups.append(p.group + offset)
        offset += int(p.group.max()) + 1 if len(p.group) else 0
    return Rollouts(sum((p.prompts for p in parts), []), sum((p.completions for p in parts), []),
                    np.concatenate(groups), np.concatenate([pad(p.sampler_logprobs, 0.0) for p in parts]),
                    np.concatenate([pad(p.tokens, pad_id) for p in parts]),
                    np.concatenate([pad(p.real, False) for p in parts]),
                    np.concatenate([pad(p.forced, False) for p in parts]),
                    sum((p.finish_reasons for p in parts), []))


class GRPOTask:
    """GRPO on `train_records` (their `answer` is what the correctness reward checks), evaluated
    by greedy accuracy on `eval_records`. reward_funcs: TRL-style callables replacing cfg.rewards
    (with cfg.reward_weights or 1.0 each); ref_model: the KL reference (default: a frozen copy of
    `model` now)."""

    def __init__(self, model, tok, train_records, eval_records, cfg: GRPOConfig, fmt: str = "cot",
                 reward_funcs=None, ref_model=None):
        self.model, self.tok, self.cfg, self.fmt = model, tok, cfg, fmt
        self.records = list(train_records)
        if not self.records:
            raise ValueError("GRPO: no training problems")
        self.prompts = [self.prompt_ids(r) for r in self.records]
        longest = max(len(p) for p in self.prompts)
        ctx = model.cfg.context_length
        if longest >= ctx:
            raise ValueError(f"GRPO: a training prompt has {longest} tokens, the context length is {ctx}")
        self.eval_records = eval_records[:cfg.eval_size] if cfg.eval_size else list(eval_records)
        self.sampling = cfg.sampling(pad_id=tok.pad_id, stop_ids=self.stop_ids())
        # every prompt + completion fits the context in one scoring forward, whatever is batched together
        self.sampling.max_new_tokens = min(cfg.max_completion_length, ctx - longest)
        self.reward_funcs = list(self.default_rewards() if reward_funcs is None else reward_funcs)
        self.reward_weights = list(cfg.reward_weights or [1.0] * len(self.reward_funcs))
        if len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"GRPO: {len(self.reward_weights)} reward weights for {len(self.reward_funcs)} functions")
        if cfg.overlong_cache:
            self.reward_funcs.append(OverlongPenalty(cfg.max_completion_length, cfg.overlong_cache))
            self.reward_weights.append(1.0)
        self.ref_model = None
        if cfg.beta > 0:
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            for p in self.ref_model.parameters():
                p.requires_grad = False
        self.tool = self.make_tool() if cfg.tool else None
        self.sampler = np.random.default_rng(cfg.seed)
        self.rows_drawn = 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.batch = None
        self._mismatch = 0.0

    # ------------------------------------------------------------------ the policy's format
    # The package's own prompt format (data.formats) here; reasoning.chat_grpo overrides these four
    # (and evaluate) for a pretrained chat model: its chat template, its end-of-turn token, its graded answer.
    def prompt_ids(self, record) -> list:
        return prompt_ids(record, self.tok, self.fmt)

    def stop_ids(self) -> tuple:
        return (self.tok.eot_id,)

    def default_rewards(self) -> list:
        """cfg.rewards as reward functions."""
        cfg = self.cfg
        return [REWARD_FUNCTIONS[name](timeout=cfg.grading_timeout, workers=cfg.grading_workers)
                if name == "correctness" else REWARD_FUNCTIONS[name](self.fmt) for name in cfg.rewards]

    def make_tool(self):
        return CalculatorTool(self.tok)

    # ------------------------------------------------------------------ rollouts
    def _generate(self, n_prompts: int) -> tuple:
        """n_prompts new problems, G completions each, rewarded: (rollouts, total reward (N,),
        per-function rewards (N, K), seconds spent decoding and rewarding)."""
        cfg = self.cfg
        idx = self.sampler.integers(0, len(self.records), size=n_prompts)
        ro = sample_groups(self.model, [self.prompts[i] for i in idx], cfg.num_generations, self.sampling,
                           first_seed=self.rows_drawn, tool=self.tool)
        self.rows_drawn += n_prompts * cfg.num_generations
        recs = [self.records[i] for i in idx for _ in range(cfg.num_generations)]
        t0 = time.perf_counter()
        columns = {"question": [r.question for r in recs], "answer": [r.answer for r in recs],
                   "steps": [r.steps for r in recs], "meta": [r.meta for r in recs],
                   "finish_reason": ro.finish_reasons}
        texts = [self.tok.decode(c) for c in ro.completions]
        prompts = [self.tok.decode(p) for p in ro.prompts]
        total, per = combine_rewards(self.reward_funcs, self.reward_weights, prompts, texts, ro.completions, columns)
        return ro, total, per, time.perf_counter() - t0

    def _new_batch(self) -> dict:
        cfg, g = self.cfg, self.cfg.num_generations
        t0 = time.perf_counter()
        kept, totals, grading, generated = [], [], 0.0, 0
        all_total, all_per, all_lengths, all_trunc = [], [], [], []
        need, rounds = cfg.prompts_per_step, 0
        while need > 0 and rounds < (cfg.dynamic_max_rounds if cfg.dynamic_sampling else 1):
            ro, total, per, secs = self._generate(need)
            rounds += 1
            grading += secs
            generated += int(ro.real.sum())
            all_total.append(total), all_per.append(per), all_lengths.append(ro.lengths), all_trunc.append(ro.truncated)
            groups = np.arange(len(total) // g)
            if cfg.dynamic_sampling:
                spread = np.ptp(total.reshape(-1, g), axis=1) > 0
                groups = groups[spread]
            rows = (groups[:, None] * g + np.arange(g)[None, :]).reshape(-1)
            if len(rows):
                kept.append(ro.select(rows)), totals.append(total[rows])
            need -= len(groups)
        rollout_time = time.perf_counter() - t0 - grading
        total_all, per_all = np.concatenate(all_total), np.concatenate(all_per)
        lengths, trunc = np.concatenate(all_lengths), np.concatenate(all_trunc)
        metrics = {"reward": float(total_all.mean()),
                   "reward_std": float(total_all.reshape(-1, g).std(axis=1, ddof=1).mean()),
                   "frac_reward_zero_std": float((np.ptp(total_all.reshape(-1, g), axis=1) == 0).mean()),
                   "completion_length_mean": float(lengths.mean()), "completion_length_min": int(lengths.min()),
                   "completion_length_max": int(lengths.max()), "clipped_ratio": float(trunc.mean()),
                   "time_rollout": rollout_time, "time_grading": grading, "rollout_rounds": rounds,
                   "rollout_tokens_per_s": generated / max(rollout_time, 1e-9)}
        done = lengths[~trunc]
        if len(done):
            metrics.update(terminated_length_mean=float(done.mean()), terminated_length_min=int(done.min()),
                           terminated_length_max=int(done.max()))
        for k, fn in enumerate(self.reward_funcs):
            col = per_all[:, k]
            name = reward_name(fn)
            metrics[f"rewards/{name}/mean"] = float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")
            metrics[f"rewards/{name}/std"] = float(np.nanstd(col, ddof=1)) if np.isfinite(col).sum() > 1 else 0.0
        names = [reward_name(f) for f in self.reward_funcs]
        if "correctness" in names:
            right = np.nan_to_num(per_all[:, names.index("correctness")]) > 0
            wrong_lengths = lengths[~right]
            metrics["incorrect_length_mean"] = float(wrong_lengths.mean()) if len(wrong_lengths) else float("nan")
            metrics["correct_length_mean"] = float(lengths[right].mean()) if right.any() else float("nan")
        metrics["groups"] = sum(len(t) for t in totals) // g
        if not kept:
            return {"rollouts": None, "metrics": metrics}
        ro, total = concat_rollouts(kept, self.sampling.pad_id), np.concatenate(totals)
        mask = ro.loss_mask(cfg.mask_truncated)
        batch = {"rollouts": ro, "advantages": advantages(total, g, cfg.advantage), "mask": mask,
                 "weights": token_weights(mask, cfg.loss_type, cfg.max_completion_length),
                 "old_logp": np.zeros(mask.shape), "ref_logp": None, "metrics": metrics,
                 "loss_tokens": max(int(mask.sum()), 1)}
        if self.ref_model is not None:
            with no_grad(), _dropout_off(self.ref_model):
                batch["ref_logp"] = np.asarray(policy_logprobs(self.ref_model, ro, self.sampling).data, dtype=np.float64)
        return batch

    # ------------------------------------------------------------------ the Task interface
    def micro_step(self, step: int, micro: int, n_micro: int) -> dict:
        cfg = self.cfg
        first = step % cfg.mu == 0                 # the batch's first step: parameters are the old policy
        out = {}
        if first and micro == 0:
            self.batch = self._new_batch()
            out.update(self.batch["metrics"])
        batch = self.batch
        ro = batch["rollouts"] if batch else None
        if ro is None:
            return {**out, "loss": 0.0, "tokens": 0}
        n = len(ro.prompts)
        rows = np.arange(n * micro // n_micro, n * (micro + 1) // n_micro)
        if not len(rows):
            return {**out, "loss": 0.0, "tokens": 0}
        t0 = time.perf_counter()
        shard_stats = []

        def shard_loss(idx):
            part = ro.select(idx)
            logp, logits = policy_logprobs(self.model, part, self.sampling, with_logits=True)
            m = batch["mask"][idx]
            extra = {}
            if first:
                lp = np.asarray(logp.data, dtype=np.float64)
                batch["old_logp"][idx] = lp
                gap = np.abs(lp - part.sampler_logprobs)[m]
                extra = {"logprob_mismatch": float(gap.max()) if len(gap) else 0.0,
                         "entropy_sum": entropy(logits.data, m, self.sampling.temperature or 1.0) * int(m.sum())
                         if m.any() else 0.0}
            loss, stats = policy_loss(logp, batch["old_logp"][idx], batch["advantages"][idx], batch["weights"][idx],
                                      eps_low=cfg.eps_low, eps_high=cfg.eps_high, delta=cfg.delta,
                                      level=cfg.importance_level, beta=cfg.beta, kl_estimator=cfg.kl_estimator,
                                      ref_logp=None if batch["ref_logp"] is None else batch["ref_logp"][idx])
            value = float(loss.item())
            if not math.isfinite(value):      # before any backward: name where it began, change no weight
                raise loop.non_finite_error(step, f"the GRPO loss is {value}; the first NaN / Inf comes from "
                                                  f"{loop.first_non_finite(loss)}")
            shard_stats.append({**stats, **extra})
            # data_parallel_backward scales a shard by its share of the rows; the weights already
            # hold the whole step's normalization, so that share is undone here
            return loss * (len(rows) / len(idx))

        with _dropout_off(self.model):
            if cfg.data_parallel:
                loss = data_parallel_backward(shard_loss, (rows,), self.params)
            else:
                scaled = shard_loss(rows)
                scaled.backward()
                loss = scaled.item()
        norm = 1.0 / batch["loss_tokens"]
        for key in ("clip_low", "clip_high", "clip_region"):
            out[f"{key}_ratio"] = sum(s[key] for s in shard_stats) * norm
        if cfg.beta:
            out["kl"] = sum(s["kl"] for s in shard_stats) * norm
        if first:
            out["entropy"] = sum(s["entropy_sum"] for s in shard_stats) * norm
            # a max over the batch, not a sum: reported once, by the step's last micro-batch
            mismatch = max(s["logprob_mismatch"] for s in shard_stats)
            self._mismatch = mismatch if micro == 0 else max(self._mismatch, mismatch)
            if micro == n_micro - 1:
                out["logprob_mismatch"] = self._mismatch
        out.update(loss=loss, tokens=int(batch["mask"][rows].sum()), time_update=time.perf_counter() - t0)
        return out

    def evaluate(self, step: int) -> dict:
        return evaluate(self.model, self.tok, self.eval_records, self.fmt, self.cfg.eval_batch,
                        self.cfg.max_completion_length)

    def state_dict(self) -> dict:
        return {"sampler_state": self.sampler.bit_generator.state, "rows_drawn": self.rows_drawn, "format": self.fmt}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.bit_generator.state = state["sampler_state"]
        self.rows_drawn = int(state["rows_drawn"])


def train_grpo(model, tok, train_records, eval_records, cfg: GRPOConfig, fmt: str = "cot", reward_funcs=None,
               ref_model=None) -> dict:
    """GRPO-train `model` (a trained chain-of-thought policy); returns the loop's result dict."""
    task = GRPOTask(model, tok, train_records, eval_records, cfg, fmt, reward_funcs, ref_model)
    result = loop.run(model, task, dataclasses.replace(cfg, plot_path=None))     # GRPO draws its own curves
    if cfg.log_path and cfg.plot_path:
        plot_rl_metrics(cfg.log_path, cfg.plot_path)
    return result
