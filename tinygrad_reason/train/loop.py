"""The one training loop that every trainer runs on (supervised fine-tuning today; verifier heads and
GRPO build on it): what a trainer does is a Task, how steps are taken is this file.

Each optimizer step:
    lr from warmup + cosine  ->  zero grads  ->  task.micro_step(step, i, n) for i < grad_accum
    (each a forward and a backward that adds into .grad; the task weights its loss so the sum is
    the step's loss)  ->  a non-finite loss or gradient stops the run, naming the step and the
    parameter, before any weight changes  ->  clip the global gradient norm  ->  AdamW step.
Every `log_every` steps a "train" record goes to the metrics JSONL; every `eval_every` steps (and at
the last) task.evaluate() gives an "eval" record, early stopping counts evaluations without a better
`score`, and a checkpoint is written (model, optimizer, the CPU RNG, the task's state, the loop's
history) so a resumed run repeats the uninterrupted one bit for bit.

A Task provides:
    micro_step(step, micro, n_micro) -> dict   forward + backward of one micro-batch; returns numbers
                                                summed over the step's micro-batches ("loss" and
                                                "tokens" at least; the loss already weighted 1/n_micro
                                                or as the task normalizes)
    evaluate(step) -> dict                      held-out metrics, with the loop's `score` key
    state_dict() -> dict / load_state_dict(d)   what else a resume needs (JSON-able: a sampler's state)
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

from ..comm import GradientBuffer, get_comm, sum_numbers
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..tensor import topological_order
from ..optim import AdamW, clip_grad_norm, decay_groups, global_grad_norm, warmup_cosine
from .metrics import log_metrics, plot_metrics
from .progress import Progress

LOOP_KEYS = ("best", "since_best", "history", "train_config")   # the loop's own keys in a checkpoint's extra


@dataclass
class LoopConfig:
    """The knobs every trainer shares."""
    steps: int = 1000
    grad_accum: int = 1              # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0                # global gradient-norm limit (0: no clipping)
    eval_every: int = 200
    patience: int = 0                # stop after this many evaluations without a better score (0 = never)
    log_every: int = 10
    checkpoint_dir: str | None = None
    log_path: str | None = None
    plot_path: str | None = None
    progress: bool = True

    def __post_init__(self):
        name = type(self).__name__
        for field in ("steps", "grad_accum", "eval_every", "log_every"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{name}.{field} must be positive, got {getattr(self, field)}")
        for field in ("lr", "min_lr", "weight_decay", "clip", "warmup", "patience"):
            if getattr(self, field) < 0:
                raise ValueError(f"{name}.{field} must be >= 0, got {getattr(self, field)}")
        for field in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{name}.{field} must be in [0, 1), got {getattr(self, field)}")


class NonFiniteError(FloatingPointError):
    """A NaN or Inf in a step's loss or gradients; raised before the weights change."""


def non_finite_error(step: int, what: str) -> NonFiniteError:
    return NonFiniteError(f"step {step + 1}: {what}; no weight was changed (the last checkpoint stays as it was)")


def first_non_finite(root) -> str:
    """Where a non-finite value in `root`'s graph began: the earliest-computed tensor holding NaN or
    Inf, named by its op and shape (a leaf: a parameter or input that already held it)."""
    for t in reversed(topological_order([root])):
        if not bool(t.xp.isfinite(t.data).all()):
            return f"op {t.op} {t.shape}" if t.op else f"a leaf tensor {t.shape} (a parameter or input)"
    return "no tensor of the graph (only the final reduction overflowed)"


def _check_gradients(step: int, norm: float, named_params) -> None:
    """A non-finite global norm means some gradient holds NaN or Inf: name the first such parameter."""
    if math.isfinite(norm):
        return
    for name, p in named_params:
        if p.grad is not None and not bool(p.xp.isfinite(p.grad.data).all()):
            raise non_finite_error(step, f"the gradient of {name} {p.shape} holds NaN or Inf")
    raise non_finite_error(step, f"the gradients' global norm is {norm}")


def run(model, task, cfg: LoopConfig, score: str = "accuracy", label: str = "step") -> dict:
    """Train `model` on `task` for cfg.steps optimizer steps (resuming from cfg.checkpoint_dir when it
    holds a checkpoint). Returns {"history": eval records, "best_<score>": best score, "steps_done"}.

    Several processes (task.comm, else comm.get_comm(): MPI under mpiexec): the task must shard its
    batches by rank (task.shards_by_rank; its loss weighted by its share of the global batch). The
    ranks agree on the config, start from rank 0's weights, sum their gradients in one allreduce per
    step, so every rank takes the same step; rank 0 alone writes metrics and checkpoints."""
    comm = getattr(task, "comm", None) or get_comm()
    if comm.size > 1:
        if not getattr(task, "shards_by_rank", False):
            raise ValueError(f"train loop: {type(task).__name__} does not shard its batches across processes, "
                             f"and this launch has {comm.size}; run it as one process")
        comm.check_same("train config", {k: v for k, v in dataclasses.asdict(cfg).items() if k != "progress"})
    opt = AdamW(decay_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    start, best, since_best, history = 0, None, 0, []
    if cfg.checkpoint_dir and os.path.exists(os.path.join(cfg.checkpoint_dir, "checkpoint.json")):
        info = load_checkpoint(cfg.checkpoint_dir, model, opt)
        start, extra = info["step"], info["extra"]
        best, since_best, history = extra["best"], extra["since_best"], extra["history"]
        task.load_state_dict({k: v for k, v in extra.items() if k not in LOOP_KEYS})
    named = list(model.named_parameters())
    params = [p for _, p in named]
    grads = None
    if comm.size > 1:
        for p in params:           # every rank starts from rank 0's weights (a fresh init or the checkpoint)
            comm.broadcast_(p.data)
        grads = GradientBuffer([p for p in params if p.requires_grad])
    log_path = cfg.log_path if comm.is_root else None
    progress = Progress(cfg.steps, label, cfg.progress and comm.is_root)
    model.train()
    t_last, tokens, done = time.perf_counter(), 0, start
    for step in range(start, cfg.steps):
        done = step + 1
        opt.set_lr(warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr))
        opt.zero_grad()
        totals: dict = {}
        for micro in range(cfg.grad_accum):
            for k, v in task.micro_step(step, micro, cfg.grad_accum).items():
                totals[k] = totals.get(k, 0) + v
        if grads is not None:      # each rank's loss is its share of the global batch's: the sums are the step's
            grads.allreduce_sum(comm)
            totals = sum_numbers(comm, totals)
        loss = float(totals.get("loss", 0.0))
        if not math.isfinite(loss):
            raise non_finite_error(step, f"the loss is {loss}")
        grad_norm = clip_grad_norm(params, cfg.clip) if cfg.clip else global_grad_norm(params)
        _check_gradients(step, grad_norm, named)
        opt.step()
        tokens += int(totals.get("tokens", 0))
        now = time.perf_counter()
        tps = tokens / max(now - t_last, 1e-9)
        shown = f" reward {totals['reward']:.3f}" if "reward" in totals else ""     # an RL task's rollout reward
        progress.update(done, f"loss {loss:.4f}{shown} {tps:,.0f} tok/s")
        if step % cfg.log_every == 0:
            log_metrics(log_path, {"kind": "train", "step": step, "loss": loss, "lr": opt.param_groups[0]["lr"],
                                       "tokens_per_s": tps, "grad_norm": grad_norm,
                                       **{k: v for k, v in totals.items() if k not in ("loss", "tokens")}})
            t_last, tokens = now, 0
        if done % cfg.eval_every == 0 or done == cfg.steps:
            result = task.evaluate(step)
            entry = {"kind": "eval", "step": done, **result}
            history.append(entry)
            log_metrics(log_path, entry)
            if best is None or result[score] > best:
                best, since_best = result[score], 0
            else:
                since_best += 1
            if cfg.checkpoint_dir and comm.is_root:
                state = task.state_dict()
                clash = sorted(set(state) & set(LOOP_KEYS))
                if clash:
                    raise ValueError(f"train loop: the task's state uses the loop's keys {clash}")
                save_checkpoint(cfg.checkpoint_dir, model, opt, step=done,
                                extra={**state, "best": best, "since_best": since_best, "history": history,
                                       "train_config": dataclasses.asdict(cfg)})
            if cfg.patience and since_best >= cfg.patience:
                break
    progress.close()
    if log_path and cfg.plot_path:
        plot_metrics(log_path, cfg.plot_path, score)
    return {"history": history, f"best_{score}": best, "steps_done": done}

