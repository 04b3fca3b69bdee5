"""One GRPO step, ours vs the same step written in torch, same weights, same process, same threads.

The step: 16 prompts x G = 8 completions sampled at temperature 1 on a KV cache (each prompt's forward
done once and shared by its 8 rows, on both sides), a reward, group advantages, then the update: the
sampled tokens' log-probs recomputed with gradient, the clipped surrogate (loss_type dapo), backward,
gradient clipping and AdamW. The model is bench_train.py's nanoGPT-style config (small by default).

    python benchmarks/bench_grpo.py --threads 2
    python benchmarks/bench_grpo.py --threads 1 --config tiny --repeats 2

Completions run to the full --new tokens on both sides (no stop token: an untrained model would stop
at random places, and the two sides must do the same work). The update of both sides runs on OUR
rollouts, so the log-probs it recomputes must agree (printed: mean_logprob_ours / _torch, first round). Prints one JSON line: seconds
per part for each side (rollout, update, whole step), the ratios ours/torch (<= 1 means we are faster)
and tokens/s of the rollout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402


def reward(tokens):
    """A reward of the tokens alone, the same on both sides: the share of even token ids."""
    import numpy as np
    return (np.asarray(tokens) % 2 == 0).mean(axis=1)


# ------------------------------------------------------------------ ours
def ours_rollout(model, prompts, g, n_new, seed):
    from tinygrad_reason.generate import SamplingConfig
    from tinygrad_reason.train.rollouts import sample_groups
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=n_new, seed=seed)
    return sample_groups(model, [list(p) for p in prompts], g, cfg), cfg


def ours_update(model, opt, ro, cfg, g, n_new):
    import numpy as np

    from tinygrad_reason.optim import clip_grad_norm
    from tinygrad_reason.parallel import data_parallel_backward
    from tinygrad_reason.train.grpo_loss import advantages, policy_loss, token_weights
    from tinygrad_reason.train.rollouts import policy_logprobs
    adv = advantages(reward(ro.tokens), g)
    mask = ro.loss_mask()
    w = token_weights(mask, "dapo", n_new)
    rows = np.arange(len(ro.prompts))
    opt.zero_grad()

    logps = []

    def shard(idx):
        part = ro.select(idx)
        logp = policy_logprobs(model, part, cfg)
        logps.append(float(logp.numpy()[mask[idx]].sum()))
        loss, _ = policy_loss(logp, logp.numpy(), adv[idx], w[idx])
        return loss * (len(rows) / len(idx))

    data_parallel_backward(shard, (rows,), model.parameters())
    clip_grad_norm(list(model.parameters()), 1.0)
    opt.step()
    return sum(logps) / mask.sum()          # the mean recomputed log-prob: compared with torch's


# ------------------------------------------------------------------ torch
def torch_rollout(model, prompts, g, n_new, seed):
    import torch
    gen = torch.Generator().manual_seed(seed)
    ids = torch.from_numpy(prompts)
    b, t = ids.shape
    with torch.no_grad():
        caches = model.new_cache(b, t + n_new)
        logits = model(ids, caches, 0)[:, -1]
        caches = [(k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)) for k, v in caches]   # shared prompt
        logits = logits.repeat_interleave(g, 0)
        out, lps = [], []
        for i in range(n_new):
            logp = torch.log_softmax(logits.double(), dim=-1)
            nxt = torch.multinomial(logp.exp(), 1, generator=gen)
            out.append(nxt)
            lps.append(logp.gather(1, nxt))
            if i < n_new - 1:
                logits = model(nxt, caches, t + i)[:, -1]
    return torch.cat(out, 1).numpy(), torch.cat(lps, 1).numpy()


def torch_update(model, opt, prompts, g, tokens, n_new):
    import torch
    p = torch.from_numpy(prompts).repeat_interleave(g, 0)
    full = torch.cat([p, torch.from_numpy(tokens)], 1)
    r = torch.from_numpy(reward(tokens))
    grouped = r.view(-1, g)
    adv = ((r - grouped.mean(1).repeat_interleave(g)) / (grouped.std(1).repeat_interleave(g) + 1e-4)).float()
    opt.zero_grad(set_to_none=True)
    logits = model(full[:, :-1])[:, p.shape[1] - 1:]
    logp = torch.log_softmax(logits, -1).gather(-1, full[:, p.shape[1]:, None])[..., 0]
    ratio = torch.exp(logp - logp.detach())
    per_token = -torch.min(ratio * adv[:, None], torch.clamp(ratio, 0.8, 1.2) * adv[:, None])
    loss = per_token.sum() / per_token.numel()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return logp.detach().double().mean().item()


def run(config: str, n_prompts: int, g: int, prompt_len: int, n_new: int, repeats: int, threads: int) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    cfg, ours, opt, tmodel, topt, _, _ = bench_train.build(config)
    prompts = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(n_prompts, prompt_len))
    times = {k: [] for k in ("ours_rollout", "ours_update", "torch_rollout", "torch_update")}
    losses = []
    for rep in range(repeats + 1):                      # the first round warms up both sides
        t0 = time.perf_counter()
        ro, scfg = ours_rollout(ours, prompts, g, n_new, seed=rep)
        t1 = time.perf_counter()
        lo = ours_update(ours, opt, ro, scfg, g, n_new)
        t2 = time.perf_counter()
        torch_rollout(tmodel, prompts, g, n_new, seed=rep)
        t3 = time.perf_counter()
        lt = torch_update(tmodel, topt, prompts, g, ro.tokens, n_new)    # on our rollouts: the same loss
        t4 = time.perf_counter()
        if rep:
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[k].append(v)
        losses.append((lo, lt))
    med = {k: float(np.median(v)) for k, v in times.items()}
    ours_step, torch_step = med["ours_rollout"] + med["ours_update"], med["torch_rollout"] + med["torch_update"]
    rows = n_prompts * g
    return {"config": config, "threads": threads, "prompts": n_prompts, "G": g, "prompt_len": prompt_len,
            "new_tokens": n_new, **{f"{k}_s": round(v, 3) for k, v in med.items()},
            "ours_step_s": round(ours_step, 3), "torch_step_s": round(torch_step, 3),
            "ratio_rollout": round(med["ours_rollout"] / med["torch_rollout"], 3),
            "ratio_update": round(med["ours_update"] / med["torch_update"], 3),
            "ratio_step": round(ours_step / torch_step, 3),
            "ours_rollout_tokens_per_s": round(rows * n_new / med["ours_rollout"], 1),
            "torch_rollout_tokens_per_s": round(rows * n_new / med["torch_rollout"], 1),
            "mean_logprob_ours": round(losses[0][0], 6), "mean_logprob_torch": round(losses[0][1], 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", choices=sorted(bench_train.CONFIGS))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new", type=int, default=64, help="tokens sampled per completion")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    bench_train._set_threads(args.threads)
    print(json.dumps(run(args.config, args.prompts, args.G, args.prompt_len, args.new, args.repeats, args.threads)))


if __name__ == "__main__":
    main()
