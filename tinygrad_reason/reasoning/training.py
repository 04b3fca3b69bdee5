"""Supervised training on reasoning data (direct answers or chains of thought), with evaluation.

One loop for both formats: micro-batches with gradient accumulation, warmup + cosine learning
rate, gradient clipping, evaluation on a held-out split every `eval_every` steps (greedy decoding
with the KV cache, exact answer match), early stopping on that accuracy, checkpoints that resume
bit-identically (the batch sampler's state is saved too), a progress line with loss, tokens/s and
ETA, metrics appended to a JSONL log, and PNG curves when matplotlib is installed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.formats import IGNORE, encode_example, make_batch, parse_completion, prompt_ids
from ..optim import AdamW, clip_grad_norm, decay_groups, warmup_cosine
from ..parallel import data_parallel_backward
from ..tensor import no_grad
from .sampling import SamplingConfig, generate


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1              # micro-batches per optimizer step (each batch_size examples)
    data_parallel: bool = True       # on CPU with several threads: a shard of each micro-batch per thread
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 200
    eval_size: int = 200             # held-out problems per evaluation (0 = all)
    patience: int = 0                # stop after this many evaluations without a better accuracy (0 = never)
    max_new_tokens: int = 96
    eval_batch: int = 64
    checkpoint_dir: str | None = None
    log_path: str | None = None
    plot_path: str | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "max_new_tokens", "eval_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "clip", "warmup", "eval_size", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")


def normalize_answer(text) -> str:
    """Exact match up to spaces and thousands separators (the arithmetic tasks' answers are integers)."""
    return "" if text is None else str(text).strip().replace(",", "").replace(" ", "")


def evaluate(model, tok, records, fmt: str, batch_size: int = 64, max_new_tokens: int = 96) -> dict:
    """Greedy decoding with the KV cache; accuracy = exact match of the parsed answer."""
    was_training = model.training
    model.eval()
    correct, generated, t0 = 0, 0, time.perf_counter()
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, stop_ids=(tok.eot_id,))
    try:
        with no_grad():
            for i in range(0, len(records), batch_size):
                chunk = records[i:i + batch_size]
                result = generate(model, [prompt_ids(r, tok, fmt) for r in chunk], cfg)
                for r, out in zip(chunk, result.tokens):
                    generated += len(out)
                    correct += normalize_answer(parse_completion(out, tok, fmt)) == normalize_answer(r.answer)
    finally:
        model.train(was_training)
    n = len(records)
    return {"accuracy": correct / n if n else float("nan"), "correct": correct, "n": n,
            "generated_tokens": generated, "seconds": time.perf_counter() - t0}


class _Progress:
    """A one-line progress display: step, loss, tokens/s and ETA (rewritten in place on a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.t0 = total, enabled, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        done = step + 1
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - done)
        line = (f"step {done}/{self.total} [{'#' * (20 * done // self.total):20s}] loss {loss:.4f} "
                f"{tokens_per_s:,.0f} tok/s ETA {eta:5.0f}s")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif done % max(1, self.total // 20) == 0 or done == self.total:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def _log(path, record: dict) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def plot_metrics(log_path: str, png_path: str) -> bool:
    """Loss and accuracy curves from a metrics JSONL; False (and nothing written) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [json.loads(line) for line in open(log_path)]
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train])
    axes[0].set(xlabel="step", ylabel="loss", title="training loss")
    axes[1].plot([r["step"] for r in evals], [r["accuracy"] for r in evals], marker="o")
    axes[1].set(xlabel="step", ylabel="accuracy", title="held-out exact match", ylim=(0, 1))
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)
    return True


def train(model, tok, train_records, eval_records, fmt: str, cfg: TrainConfig) -> dict:
    """Train `model` on `train_records` rendered in format `fmt`; returns the history and the best accuracy."""
    examples = [encode_example(r, tok, fmt) for r in train_records]
    too_long = [len(e.ids) for e in examples if len(e.ids) - 1 > model.cfg.context_length]
    if too_long:
        raise ValueError(f"train: {len(too_long)} examples exceed the context length {model.cfg.context_length} "
                         f"(longest {max(too_long)} tokens); raise context_length or shorten the task")
    opt = AdamW(decay_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    sampler = np.random.default_rng(cfg.seed)
    start, best, since_best, history = 0, -1.0, 0, []
    if cfg.checkpoint_dir and os.path.exists(os.path.join(cfg.checkpoint_dir, "checkpoint.json")):
        info = load_checkpoint(cfg.checkpoint_dir, model, opt)
        start = info["step"]
        extra = info["extra"]
        sampler.bit_generator.state = extra["sampler_state"]
        best, since_best, history = extra["best"], extra["since_best"], extra["history"]
    eval_set = eval_records[:cfg.eval_size] if cfg.eval_size else eval_records
    progress = _Progress(cfg.steps, cfg.progress)
    model.train()
    t_last, tokens = time.perf_counter(), 0
    done = start
    params = list(model.parameters())
    # shards weighted by their scored tokens: the sum of shard gradients is the micro-batch's token mean
    shard_loss = lambda i, t, m: model.loss(i, t, pad_mask=m) * (1.0 / cfg.grad_accum)   # noqa: E731
    shard_tokens = lambda i, t, m: int((t != IGNORE).sum())                               # noqa: E731
    for step in range(start, cfg.steps):
        done = step + 1
        opt.set_lr(warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr))
        opt.zero_grad()
        loss_sum = 0.0
        for _ in range(cfg.grad_accum):
            batch = [examples[i] for i in sampler.integers(0, len(examples), size=cfg.batch_size)]
            ids, targets, mask = make_batch(batch, tok.pad_id)
            if cfg.data_parallel:      # one shard (plain backward) on CuPy or with one thread
                loss_sum += data_parallel_backward(shard_loss, (ids, targets, mask), params,
                                                   shard_weight=shard_tokens)
            else:
                loss = model.loss(ids, targets, pad_mask=mask) * (1.0 / cfg.grad_accum)
                loss.backward()
                loss_sum += loss.item()
            tokens += int(mask.sum())
        clip_grad_norm(model.parameters(), cfg.clip)
        opt.step()
        now = time.perf_counter()
        tps = tokens / max(now - t_last, 1e-9)
        progress.update(step, loss_sum, tps)
        if step % 10 == 0:
            _log(cfg.log_path, {"kind": "train", "step": step, "loss": loss_sum, "lr": opt.param_groups[0]["lr"],
                                "tokens_per_s": tps})
            t_last, tokens = now, 0
        last = step == cfg.steps - 1
        if (step + 1) % cfg.eval_every == 0 or last:
            result = evaluate(model, tok, eval_set, fmt, cfg.eval_batch, cfg.max_new_tokens)
            entry = {"kind": "eval", "step": step + 1, **result}
            history.append(entry)
            _log(cfg.log_path, entry)
            if result["accuracy"] > best:
                best, since_best = result["accuracy"], 0
            else:
                since_best += 1
            if cfg.checkpoint_dir:
                save_checkpoint(cfg.checkpoint_dir, model, opt, step=step + 1,
                                extra={"sampler_state": sampler.bit_generator.state, "best": best,
                                       "since_best": since_best, "history": history, "format": fmt,
                                       "train_config": dataclasses.asdict(cfg)})
            if cfg.patience and since_best >= cfg.patience:
                break
    progress.close()
    if cfg.log_path and cfg.plot_path:
        plot_metrics(cfg.log_path, cfg.plot_path)
    return {"history": history, "best_accuracy": best, "steps_done": done}


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple:
    """95% Wilson score interval of a binomial proportion (well-behaved near 0 and 1)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))

