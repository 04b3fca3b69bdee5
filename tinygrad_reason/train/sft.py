"""Supervised fine-tuning on reasoning data, direct answers or chains of thought, on the train loop.

Each micro-batch draws `batch_size` examples (with replacement, from a seeded sampler whose state
is checkpointed), renders them in the format, and takes the mean next-token cross-entropy over the
completion tokens. With several threads on CPU the micro-batch is split into one shard per thread
(parallel.data_parallel_backward, shards weighted by their scored tokens, so the gradient is the
whole micro-batch's). Evaluation is greedy decoding on the held-out split (train/evaluation.py).

Under several processes (comm.py; `mpiexec -n N`) every rank draws the same micro-batch from the
same sampler and takes its contiguous 1/N of the rows; its loss is weighted by its share of the
micro-batch's scored tokens, so the loop's sum of the ranks' gradients is the one-process gradient
(to the rounding of the sum order). batch_size must be a multiple of N; the sampler's state is the
same on every rank, so a checkpoint resumes with any such N.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..comm import get_comm
from ..data.formats import IGNORE, encode_example, make_batch
from ..parallel import data_parallel_backward
from . import loop
from .evaluation import evaluate


@dataclass
class TrainConfig(loop.LoopConfig):
    batch_size: int = 32
    data_parallel: bool = True       # on CPU with several threads: a shard of each micro-batch per thread
    eval_size: int = 200             # held-out problems per evaluation (0 = all)
    max_new_tokens: int = 96
    eval_batch: int = 64
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        for name in ("batch_size", "max_new_tokens", "eval_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.eval_size < 0:
            raise ValueError(f"TrainConfig.eval_size must be >= 0, got {self.eval_size}")


class SFTTask:
    """Next-token cross-entropy on the completions of `records` rendered in format `fmt`; `comm`
    (default comm.get_comm()) the processes that share each batch."""
    shards_by_rank = True

    def __init__(self, model, tok, train_records, eval_records, fmt: str, cfg: TrainConfig, comm=None):
        self.model, self.tok, self.fmt, self.cfg = model, tok, fmt, cfg
        self.comm = get_comm() if comm is None else comm
        if cfg.batch_size % self.comm.size:
            raise ValueError(f"TrainConfig.batch_size ({cfg.batch_size}) must be a multiple of the number of "
                             f"processes ({self.comm.size}): each takes an equal share of every batch")
        self.examples = [encode_example(r, tok, fmt) for r in train_records]
        too_long = [len(e.ids) for e in self.examples if len(e.ids) - 1 > model.cfg.context_length]
        if too_long:
            raise ValueError(f"train: {len(too_long)} examples exceed the context length {model.cfg.context_length} "
                             f"(longest {max(too_long)} tokens); raise context_length or shorten the task")
        self.eval_records = eval_records[:cfg.eval_size] if cfg.eval_size else eval_records
        self.sampler = np.random.default_rng(cfg.seed)
        self.params = list(model.parameters())

    def micro_step(self, step: int, micro: int, n_micro: int) -> dict:
        batch = [self.examples[i] for i in self.sampler.integers(0, len(self.examples), size=self.cfg.batch_size)]
        ids, targets, mask = make_batch(batch, self.tok.pad_id)
        weight = 1.0 / n_micro
        if self.comm.size > 1:          # this rank's rows, weighted by their share of the scored tokens
            scored = int((targets != IGNORE).sum())
            share = len(ids) // self.comm.size
            rows = slice(self.comm.rank * share, (self.comm.rank + 1) * share)
            ids, targets, mask = ids[rows], targets[rows], mask[rows]
            weight *= int((targets != IGNORE).sum()) / scored
        if self.cfg.data_parallel:      # one shard (a plain backward) on CuPy or with one thread
            loss = data_parallel_backward(lambda i, t, m: self.model.loss(i, t, pad_mask=m) * weight,
                                          (ids, targets, mask), self.params,
                                          shard_weight=lambda i, t, m: int((t != IGNORE).sum()))
        else:
            scaled = self.model.loss(ids, targets, pad_mask=mask) * weight
            scaled.backward()
            loss = scaled.item()
        return {"loss": loss, "tokens": int(mask.sum())}     # the loop sums both over the ranks

    def evaluate(self, step: int) -> dict:
        return evaluate(self.model, self.tok, self.eval_records, self.fmt, self.cfg.eval_batch, self.cfg.max_new_tokens)

    def state_dict(self) -> dict:
        return {"sampler_state": self.sampler.bit_generator.state, "format": self.fmt}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.bit_generator.state = state["sampler_state"]


def train(model, tok, train_records, eval_records, fmt: str, cfg: TrainConfig) -> dict:
    """Train `model` on `train_records` rendered in format `fmt`; returns {"history", "best_accuracy",
    "steps_done"}."""
    return loop.run(model, SFTTask(model, tok, train_records, eval_records, fmt, cfg), cfg)
