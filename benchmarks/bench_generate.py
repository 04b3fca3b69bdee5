"""KV-cache greedy decoding: ours vs torch eager on the same weights, same process, same threads.

The nanoGPT-style model of bench_train.py (small config by default); each side has a preallocated
KV cache, processes a prompt in one forward pass, then decodes one token per step greedily.

    python benchmarks/bench_generate.py --threads 2 --batches 1,16

Prints a JSON line per batch size: ms per decoded token for both, tokens/s (batch x steps / time)
and the ratio of throughputs ours/torch (>= 1 means we are faster), and checks both sides produced
the same tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402


def decode_ours(model, prompt, n_new):
    import numpy as np

    import tinygrad_reason as tg
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + n_new)
    with tg.no_grad():                 # with MKL on, 2-64-row products pack their weights (fast/packing.py), timed
        logits = model(prompt, cache=cache, start=0)
        tokens = []
        for i in range(n_new):
            nxt = logits.data[:, -1].argmax(axis=-1)[:, None]
            tokens.append(nxt)
            if i < n_new - 1:
                logits = model(nxt, cache=cache, start=prompt.shape[1] + i)
    return np.concatenate(tokens, axis=1)


def decode_torch(model, prompt, n_new):
    import torch
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + n_new)
    with torch.no_grad():
        logits = model(prompt, cache, 0)
        tokens = []
        for i in range(n_new):
            nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
            tokens.append(nxt)
            if i < n_new - 1:
                logits = model(nxt, cache, prompt.shape[1] + i)
    return torch.cat(tokens, dim=1).numpy()


def run(config: str, batch: int, prompt_len: int, n_new: int, repeats: int, threads: int) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    cfg, ours, _, tmodel, _, _, _ = bench_train.build(config)
    ours.eval()
    tmodel.eval()
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(batch, prompt_len))
    tprompt = torch.from_numpy(prompt)
    same = bool((decode_ours(ours, prompt, 4) == decode_torch(tmodel, tprompt, 4)).all())
    to, tt = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decode_ours(ours, prompt, n_new)
        t1 = time.perf_counter()
        decode_torch(tmodel, tprompt, n_new)
        t2 = time.perf_counter()
        to.append(t1 - t0)
        tt.append(t2 - t1)
    o, t = float(np.median(to)), float(np.median(tt))
    return {"config": config, "batch": batch, "prompt": prompt_len, "new_tokens": n_new, "threads": threads,
            "ours_ms_per_step": round(o / n_new * 1e3, 3), "torch_ms_per_step": round(t / n_new * 1e3, 3),
            "ours_tokens_per_s": round(batch * n_new / o, 1), "torch_tokens_per_s": round(batch * n_new / t, 1),
            "throughput_ratio_ours_over_torch": round(t / o, 3), "same_tokens": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", choices=sorted(bench_train.CONFIGS))
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blas", choices=["numpy", "mkl"], default="numpy",
                    help="our side's BLAS for the linear layers: NumPy's own, or MKL (the [mkl] extra)")
    args = ap.parse_args()
    bench_train._set_threads(args.threads)
    if args.blas == "mkl":
        os.environ["TINYGRAD_REASON_BLAS"] = "mkl"
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    for b in args.batches.split(","):
        print(json.dumps(run(args.config, int(b), args.prompt, args.new, args.repeats, args.threads)), flush=True)


if __name__ == "__main__":
    main()
