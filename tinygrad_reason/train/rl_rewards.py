"""Reward functions for RL, with HF TRL's interface, and their weighted combination.

A reward function is called once per rollout batch as
    fn(prompts=[str], completions=[str], completion_ids=[[int]], **columns) -> [float | None]
prompts / completions are decoded text with the special tokens kept (<|step|>, <|answer|>, ...),
columns are the dataset's fields, one value per completion (question, answer, steps, meta, plus
finish_reason). It returns one float per completion, or None where it does not apply. The trainer
adds the functions with their weights; a None adds nothing (TRL's nansum), and a completion with no
applicable function at all gets reward 0.

Built in (REWARD_FUNCTIONS; the trainer names them by these keys):
    correctness  1.0 if the strict answer (grading.rewards.strict_answer: the one answer span, no
                 hedges, no last-number fallback) is correct against the `answer` column, else 0.0;
                 graded in the grader's sandboxed workers under a time limit, several at once
    format       1.0 if the completion has the chain-of-thought structure (grading.rewards.format_ok)
    overlong     DAPO's soft overlong penalty (make it with overlong_penalty(max_len, cache)):
                 0 up to max_len - cache tokens, then falling linearly to -1 at max_len
"""
from __future__ import annotations

import math

import numpy as np

from ..grading.rewards import format_reward, strict_rewards


class CorrectnessReward:
    """Strict correctness against the `answer` column (the module docstring)."""
    __name__ = "correctness"

    def __init__(self, timeout: float = 1.0, workers: int = 2):
        self.timeout, self.workers = float(timeout), int(workers)

    def __call__(self, prompts, completions, completion_ids, answer=None, **columns):
        if answer is None:
            raise ValueError("correctness reward: the dataset has no 'answer' column")
        return strict_rewards(completions, answer, timeout=self.timeout, workers=self.workers)


class FormatReward:
    """1.0 for a completion with the format's structure (grading.rewards.format_ok)."""
    __name__ = "format"

    def __init__(self, fmt: str = "cot"):
        self.fmt = fmt

    def __call__(self, prompts, completions, completion_ids, **columns):
        return [format_reward(c, self.fmt) for c in completions]


class OverlongPenalty:
    """DAPO's soft overlong punishment on the completion's length in tokens."""
    __name__ = "overlong"

    def __init__(self, max_len: int, cache: int):
        if not 0 < cache <= max_len:
            raise ValueError(f"overlong penalty: cache must be in (0, max_len={max_len}], got {cache}")
        self.max_len, self.cache = int(max_len), int(cache)

    def __call__(self, prompts, completions, completion_ids, **columns):
        free = self.max_len - self.cache
        out = []
        for ids in completion_ids:
            n = len(ids)
            out.append(0.0 if n <= free else max(-1.0, (free - n) / self.cache))
        return out


def overlong_penalty(max_len: int, cache: int) -> OverlongPenalty:
    return OverlongPenalty(max_len, cache)


REWARD_FUNCTIONS = {"correctness": CorrectnessReward, "format": FormatReward}


def reward_name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def combine_rewards(funcs, weights, prompts, completions, completion_ids, columns: dict) -> tuple:
    """Call every reward function once on the batch -> (total (N,), per-function (N, K) with NaN
    where a function returned None). A function that returns the wrong number of values,
    or a value that is not a finite number or None, is an error naming it."""
    n = len(completions)
    if len(weights) != len(funcs):
        raise ValueError(f"rewards: {len(weights)} weights for {len(funcs)} reward functions")
    per = np.full((n, len(funcs)), np.nan)
    for k, fn in enumerate(funcs):
        values = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
        values = list(values)
        if len(values) != n:
            raise ValueError(f"reward function {reward_name(fn)!r} returned {len(values)} values for {n} completions")
        for i, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(v)):
                raise ValueError(f"reward function {reward_name(fn)!r} returned {v!r} for completion {i}: "
                                 "expected a finite number or None")
            per[i, k] = float(v)
    w = np.asarray(weights, dtype=np.float64)
    total = np.nansum(per * w[None, :], axis=1)
    return total, per
