"""Train a tiny GPT on a built-in public-domain text, on the CPU in about a minute, and sample from it.

    python examples/02_train_tiny_gpt.py                  # CPU
    python examples/02_train_tiny_gpt.py --device cuda    # GPU (needs CuPy)
    python examples/02_train_tiny_gpt.py --steps 50       # a quick look
    python examples/02_train_tiny_gpt.py --reference      # on the reference ops (slower, same losses)

Characters are the tokens (the tiktoken tokenizer comes in a later layer). The model is the seed
GPT: learned + sinusoidal positions, pre-norm LayerNorm, GELU MLP, trained with AdamW, warmup and
cosine decay, gradient clipping. The loss falls from log(vocab) toward ~1.3 nats per character and
the samples start to look like the text. Sampling uses the model's preallocated KV cache.

The model's linear layers, LayerNorms, attention and loss run fused ops written for speed
(ops/matmul.py, ops/nn.py, ops/attention.py). To read what they compute, open
tinygrad_reason/ops/reference.py: each one as its formula in plain Tensor ops, with the backward
left to autograd. --reference trains on those (and on AdamW's whole-array reference update,
optim.adamw_reference_update) instead, through tg.use_reference_ops(True); the losses agree with
the fused run's to float32 rounding.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tinygrad_reason as tg  # noqa: E402
from tinygrad_reason.nn import Transformer, TransformerConfig  # noqa: E402
from tinygrad_reason.optim import AdamW, clip_grad_norm, decay_groups, warmup_cosine  # noqa: E402

# The opening of "A Tale of Two Cities" by Charles Dickens (1859), in the public domain.
TEXT = """It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of
foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light,
it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had
everything before us, we had nothing before us, we were all going direct to Heaven, we were all going
direct the other way - in short, the period was so far like the present period, that some of its
noisiest authorities insisted on its being received, for good or for evil, in the superlative degree
of comparison only. There were a king with a large jaw and a queen with a plain face, on the throne of
England; there were a king with a large jaw and a queen with a fair face, on the throne of France. In
both countries it was clearer than crystal to the lords of the State preserves of loaves and fishes,
that things in general were settled for ever."""


def batches(data: np.ndarray, batch: int, context: int, rng: np.random.Generator):
    while True:
        starts = rng.integers(0, len(data) - context - 1, size=batch)
        x = np.stack([data[s:s + context] for s in starts])
        y = np.stack([data[s + 1:s + context + 1] for s in starts])
        yield x, y


def sample(model: Transformer, prompt: np.ndarray, n_new: int, temperature: float, rng) -> list:
    """Autoregressive sampling with the KV cache: the prompt once, then one token per step."""
    cache = model.new_cache(batch=1, max_len=len(prompt) + n_new)
    out = list(prompt)
    with tg.no_grad():
        logits = model(prompt[None, :], cache=cache, start=0)
        for i in range(n_new):
            last = logits.numpy()[0, -1].astype(np.float64) / temperature
            p = np.exp(last - last.max())
            token = int(rng.choice(len(p), p=p / p.sum()))
            out.append(token)
            if len(out) >= model.cfg.context_length or i == n_new - 1:
                break
            logits = model(np.array([[token]]), cache=cache, start=len(out) - 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="training steps")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-chars", type=int, default=200)
    ap.add_argument("--reference", action="store_true",
                    help="run the reference ops (tinygrad_reason/ops/reference.py) instead of the fused ones")
    args = ap.parse_args()

    if args.reference:
        tg.use_reference_ops(True)          # every F.linear / F.layer_norm / F.attention / ... from here on
    if tg.reference_ops_enabled():
        print("training on the reference ops (tinygrad_reason/ops/reference.py)")

    tg.manual_seed(args.seed)
    vocab = sorted(set(TEXT))
    encode = {c: i for i, c in enumerate(vocab)}
    data = np.array([encode[c] for c in TEXT], dtype=np.int64)
    cfg = TransformerConfig.gpt(vocab_size=len(vocab), context_length=args.context, d_model=64, n_layers=2,
                                n_heads=4, dropout=0.0)
    model = Transformer(cfg).to(args.device)
    opt = AdamW(decay_groups(model, 0.1), lr=args.lr, betas=(0.9, 0.95))
    print(f"{len(TEXT)} characters, vocabulary {len(vocab)}, model {model.num_parameters():,} parameters, "
          f"device {args.device}; a uniform guess costs {math.log(len(vocab)):.2f} nats")

    rng = np.random.default_rng(args.seed)
    stream = batches(data, args.batch, args.context, rng)
    t0, first = time.perf_counter(), None
    for step in range(args.steps):
        x, y = next(stream)
        opt.set_lr(warmup_cosine(step, args.lr, warmup_steps=20, total_steps=args.steps, min_lr=args.lr / 10))
        opt.zero_grad()
        loss = model.loss(x, y)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        first = loss.item() if first is None else first
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.perf_counter() - t0:6.1f}s")
    print(f"loss {first:.3f} -> {loss.item():.3f} in {time.perf_counter() - t0:.1f}s")

    model.eval()
    prompt = np.array([encode[c] for c in "It was the "], dtype=np.int64)
    text = "".join(vocab[i] for i in sample(model, prompt, args.sample_chars, 0.8, rng))
    print("sample:", text.replace("\n", " "))


if __name__ == "__main__":
    main()
