"""Full training steps of a nanoGPT-style model: ours vs torch eager, same process, same threads.

Both sides: learned token + position embeddings, pre-norm LayerNorm with bias, attention written
with explicit matmuls, a boolean causal mask and softmax (not torch's fused attention), exact-erf
GELU MLP 4x, untied head without bias, N(0, 0.02) init (GPT-2's scaled residual projections),
AdamW lr 3e-4, betas (0.9, 0.95), weight decay 0.1 on matrices only. A step is zero_grad, forward,
cross-entropy, backward, AdamW. Steps alternate ours / torch after warm-up; medians are reported.

    python benchmarks/bench_train.py --threads 2 --configs tiny,small
    python benchmarks/bench_train.py --configs medium --steps 3      # slow on 2 cores
    python benchmarks/bench_train.py --configs small --gemm-floor --no-memory   # + the BLAS part alone
    python benchmarks/bench_train.py --configs tiny,small --blas mkl           # ours on MKL ([mkl] extra)
    python benchmarks/bench_train.py --configs tiny,small --threads 1 --hand --no-memory   # + the hand-written step

Our side runs its step two ways (--parallel both, the default): "ops", one forward/backward whose ops split
their work over the threads, and "data", the batch cut into a shard per thread, each shard's forward and
backward on its own thread (tinygrad_reason/parallel.py); the same gradients up to float rounding.

Prints one JSON line per config: ms/step for both and the ratio ours/torch (and *_data_parallel fields), tokens/s, model
FLOP/s and its fraction of the float32 matmul peak measured in the same run, and peak memory of
each side (measured in a child process per side: growth of the peak RSS over the RSS before
training, the peak being reset through /proc/self/clear_refs; Linux only). With --gemm-floor, the
linear layers' GEMMs of one step timed alone in numpy and in torch, and each side's step minus them
(`*_rest_ms`: everything that is not a linear-layer GEMM). With --hand, a third side: the same step
written by hand in plain NumPy (hand_step.py, no autograd), timed in the same alternation, with its time
per part of the step (`hand_parts_ms`): the reference that tells the engine's overhead from NumPy's own cost.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {
    "tiny": dict(vocab=128, ctx=64, d=128, layers=4, heads=4, batch=32),
    "small": dict(vocab=4096, ctx=256, d=384, layers=6, heads=6, batch=16),
    "medium": dict(vocab=8192, ctx=512, d=768, layers=12, heads=12, batch=8),
}


def _set_threads(n: int) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TINYGRAD_REASON_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")   # idle OpenBLAS threads otherwise spin


def build_ours(name: str, seed: int = 0):
    """Our model + optimizer for a config, seeded."""
    import tinygrad_reason as tg
    from tinygrad_reason.fast import configure_from_env
    from tinygrad_reason.nn import Transformer, TransformerConfig
    from tinygrad_reason.optim import AdamW, decay_groups

    configure_from_env()          # as the command line does: malloc keeps freed memory, TINYGRAD_REASON_BLAS
    c = CONFIGS[name]
    tg.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=c["vocab"], context_length=c["ctx"], d_model=c["d"], n_layers=c["layers"],
                            n_heads=c["heads"], positions="learned", norm="layernorm", mlp="gelu", bias=True,
                            tie_embeddings=False, init_std=0.02)
    ours = Transformer(cfg)
    return cfg, ours, AdamW(decay_groups(ours, 0.1), lr=3e-4, betas=(0.9, 0.95))


def build(name: str, seed: int = 0):
    """Our model + optimizer, the torch twin with the same weights, and a fixed batch."""
    import numpy as np
    import torch

    c = CONFIGS[name]
    cfg, ours, opt = build_ours(name, seed)
    tmodel = TorchGPT(cfg)
    with torch.no_grad():
        for n, p in tmodel.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(ours.state_dict()[n])))
    decay = [p for p in tmodel.parameters() if p.dim() >= 2]
    no_decay = [p for p in tmodel.parameters() if p.dim() < 2]
    topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=3e-4, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, c["vocab"], size=(c["batch"], c["ctx"] + 1))
    return cfg, ours, opt, tmodel, topt, ids[:, :-1], ids[:, 1:]


def TorchGPT(cfg):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            d = cfg.d_model
            self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
            self.v_proj, self.o_proj = nn.Linear(d, d), nn.Linear(d, d)
            self.register_buffer("causal", torch.ones(cfg.context_length, cfg.context_length, dtype=torch.bool).triu(1))

        def forward(self, x, cache=None, start=0):
            b, t, d = x.shape
            h = cfg.n_heads
            q, k, v = (p(x).view(b, t, h, d // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
            if cache is not None:   # preallocated (k, v) of shape (B, H, max_len, hd), like ours
                cache[0][:, :, start:start + t] = k
                cache[1][:, :, start:start + t] = v
                k, v = cache[0][:, :, :start + t], cache[1][:, :, :start + t]
            s = k.shape[2]
            att = (q @ k.transpose(-2, -1)) * (1.0 / (d // h) ** 0.5)
            att = att.masked_fill(self.causal[start:start + t, :s], float("-inf")).softmax(dim=-1)
            return self.o_proj((att @ v).transpose(1, 2).reshape(b, t, d))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.proj = nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.Linear(4 * cfg.d_model, cfg.d_model)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm, self.attn = nn.LayerNorm(cfg.d_model), Attention()
            self.mlp_norm, self.mlp = nn.LayerNorm(cfg.d_model), MLP()

        def forward(self, x, cache=None, start=0):
            x = x + self.attn(self.attn_norm(x), cache, start)
            return x + self.mlp(self.mlp_norm(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layers))
            self.norm = nn.LayerNorm(cfg.d_model)
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

        def forward(self, ids, caches=None, start=0):
            x = self.tok_emb(ids) + self.pos_emb(torch.arange(start, start + ids.shape[1]))
            for i, blk in enumerate(self.blocks):
                x = blk(x, None if caches is None else caches[i], start)
            return self.lm_head(self.norm(x))

        def new_cache(self, batch, max_len):
            hd = cfg.d_model // cfg.n_heads
            shape = (batch, cfg.n_heads, max_len, hd)
            return [(torch.zeros(shape), torch.zeros(shape)) for _ in range(cfg.n_layers)]

    return GPT()


def our_step(model, opt, ids, targets, data_parallel: bool = False):
    """data_parallel: the batch split over our threads, a shard per thread (tinygrad_reason/parallel.py);
    otherwise one forward/backward whose ops split their work over the threads."""
    opt.zero_grad()
    if data_parallel:
        from tinygrad_reason.parallel import data_parallel_backward
        loss = data_parallel_backward(model.loss, (ids, targets), model.parameters())
    else:
        loss = model.loss(ids, targets)
        loss.backward()
        loss = loss.item()
    opt.step()
    return loss


def torch_step(model, opt, ids, targets):
    import torch.nn.functional as F
    opt.zero_grad(set_to_none=True)
    logits = model(ids)
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    opt.step()
    return loss.item()


def model_flops_per_step(cfg, batch: int) -> float:
    """6 N per token for the matmul weights (forward 2N + backward 4N) plus the attention matmuls
    (q k^T and att v: 2 * 2 * T * d per token per layer forward, x3 with backward)."""
    d, t, L, V = cfg.d_model, cfg.context_length, cfg.n_layers, cfg.vocab_size
    n_matmul = L * (4 * d * d + 8 * d * d) + d * V
    return batch * t * (6 * n_matmul + 3 * 4 * L * t * d)


def matmul_peak(n: int = 1024, repeats: int = 5):
    """float32 GEMM FLOP/s of numpy and of torch on this machine, same threads."""
    import numpy as np
    import torch
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ta = torch.from_numpy(a)
    out = {}
    for name, fn in (("numpy", lambda: a @ a), ("torch", lambda: ta @ ta)):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = 2 * n ** 3 / min(times)
    return out


def linear_gemm_floor(cfg, batch: int, repeats: int = 3):
    """ms for the GEMMs of every linear layer of a step (forward y = x W^T, backward g W and g^T x,
    lm_head included), numpy vs torch on the same arrays, cycling through the layers as a step does
    (so weights and activations are not hot in cache): the part of a step set by the BLAS library."""
    import numpy as np
    import torch
    rng = np.random.default_rng(0)
    rows, d = batch * cfg.context_length, cfg.d_model
    shapes = [(d, d)] * 4 + [(d, cfg.mlp_hidden), (cfg.mlp_hidden, d)]
    shapes = shapes * cfg.n_layers + [(d, cfg.vocab_size)]
    arrays = [tuple(rng.standard_normal(s, dtype=np.float32) for s in ((rows, i), (o, i), (rows, o)))
              for i, o in shapes]
    tensors = [tuple(torch.from_numpy(a) for a in t) for t in arrays]

    def step(layers):
        for x, w, g in layers:
            x @ w.T, g @ w, g.T @ x

    out = {}
    for name, layers in (("numpy", arrays), ("torch", tensors)):
        step(layers)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step(layers)
            times.append(time.perf_counter() - t0)
        out[name] = float(np.median(times))
    return out


def peak_memory(name: str, side: str, threads: int, steps: int = 2) -> float:
    """Peak RSS growth (MiB) over `steps` training steps of one side ("ours", "ours_data_parallel" or
    "torch"), in a fresh child process."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r});"
            f"import bench_train as b; b._set_threads({threads}); print(b._child_memory({name!r}, {side!r}, {steps}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _child_memory(name: str, side: str, steps: int) -> float:
    import gc

    import torch
    cfg, ours, opt, tmodel, topt, ids, targets = build(name)
    if side.startswith("ours"):
        del tmodel, topt
    else:
        del ours, opt
        tids, ttargets = torch.from_numpy(ids), torch.from_numpy(targets)
    gc.collect()
    base = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:   # reset the peak (VmHWM) to the current RSS
        f.write("5")
    for _ in range(steps):
        if side.startswith("ours"):
            our_step(ours, opt, ids, targets, data_parallel=side == "ours_data_parallel")
        else:
            torch_step(tmodel, topt, tids, ttargets)
    return _status_mib("VmHWM") - base


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def run(name: str, threads: int, steps: int, warmup: int, memory: bool, gemm_floor: bool = False,
        parallel: str = "both", hand: bool = False) -> dict:
    """parallel: how our side uses the threads: "ops" (each op splits its work), "data" (a batch shard
    per thread) or "both" (two models of ours, same weights, timed in turn with torch)."""
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    cfg, ours, opt, tmodel, topt, ids, targets = build(name)
    tids, ttargets = torch.from_numpy(ids), torch.from_numpy(targets)
    modes = {"ops": ["ops"], "data": ["data"], "both": ["ops", "data"]}[parallel]
    if threads == 1:
        modes = ["ops"]         # one shard: the data-parallel step is the plain one
    sides = {m: (ours, opt) if m == modes[0] else build_ours(name)[1:] for m in modes}
    if hand:
        from hand_step import HandGPT
        hand_model = HandGPT(ours.state_dict(), cfg.n_heads, norm_eps=cfg.norm_eps)
    times = {m: [] for m in [*modes, "torch"] + (["hand"] if hand else [])}
    losses = {}
    for i in range(warmup + steps):
        if hand and i == warmup:
            hand_model.times.clear()
        for m, (model, optimizer) in sides.items():
            t0 = time.perf_counter()
            losses[m] = our_step(model, optimizer, ids, targets, data_parallel=m == "data")
            if i >= warmup:
                times[m].append(time.perf_counter() - t0)
        if hand:
            t0 = time.perf_counter()
            losses["hand"] = hand_model.step(ids, targets)
            if i >= warmup:
                times["hand"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lt = torch_step(tmodel, topt, tids, ttargets)
        if i >= warmup:
            times["torch"].append(time.perf_counter() - t0)
    t = float(np.median(times["torch"]))
    o = float(np.median(times[modes[0]]))
    flops = model_flops_per_step(cfg, ids.shape[0])
    peak = matmul_peak()
    result = {
        "config": name, **CONFIGS[name], "threads": threads, "steps": steps, "ours_parallel": modes[0],
        "ours_blas": "mkl" if __import__("tinygrad_reason").mkl_enabled() else "numpy",
        "ours_kernel_threads": __import__("tinygrad_reason.fast.threads").fast.threads.num_threads(),
        "ours_ms": round(o * 1e3, 2), "torch_ms": round(t * 1e3, 2), "ratio": round(o / t, 3),
        "ours_tokens_per_s": round(ids.size / o), "torch_tokens_per_s": round(ids.size / t),
        "ours_gflops": round(flops / o / 1e9, 2), "torch_gflops": round(flops / t / 1e9, 2),
        "numpy_matmul_peak_gflops": round(peak["numpy"] / 1e9, 2),
        "torch_matmul_peak_gflops": round(peak["torch"] / 1e9, 2),
        "ours_peak_fraction": round(flops / o / peak["numpy"], 3),
        "torch_peak_fraction": round(flops / t / peak["torch"], 3),
        "final_loss_ours": round(losses[modes[0]], 4), "final_loss_torch": round(lt, 4),
    }
    if modes == ["ops", "data"]:
        d = float(np.median(times["data"]))
        result.update({"ours_data_parallel_ms": round(d * 1e3, 2), "ratio_data_parallel": round(d / t, 3),
                       "ours_data_parallel_tokens_per_s": round(ids.size / d),
                       "final_loss_ours_data_parallel": round(losses["data"], 4)})
    if hand:
        h = float(np.median(times["hand"]))
        result.update({"hand_ms": round(h * 1e3, 2), "ratio_hand": round(h / t, 3),
                       "ours_over_hand": round(o / h, 3), "final_loss_hand": round(losses["hand"], 4),
                       "hand_parts_ms": {k: round(v / steps * 1e3, 1) for k, v in
                                         sorted(hand_model.times.items(), key=lambda kv: -kv[1])}})
    if gemm_floor:
        floor = linear_gemm_floor(cfg, ids.shape[0])
        result["linear_gemms_numpy_ms"] = round(floor["numpy"] * 1e3, 1)
        result["linear_gemms_torch_ms"] = round(floor["torch"] * 1e3, 1)
        result["ours_rest_ms"] = round(o * 1e3 - result["linear_gemms_numpy_ms"], 1)
        result["torch_rest_ms"] = round(t * 1e3 - result["linear_gemms_torch_ms"], 1)
    if memory:
        first = "ours" if modes[0] == "ops" else "ours_data_parallel"
        result["ours_peak_mib"] = round(peak_memory(name, first, threads), 1)
        result["torch_peak_mib"] = round(peak_memory(name, "torch", threads), 1)
        result["memory_ratio"] = round(result["ours_peak_mib"] / max(result["torch_peak_mib"], 1e-9), 3)
        if modes == ["ops", "data"]:
            result["ours_data_parallel_peak_mib"] = round(peak_memory(name, "ours_data_parallel", threads), 1)
            result["memory_ratio_data_parallel"] = round(
                result["ours_data_parallel_peak_mib"] / max(result["torch_peak_mib"], 1e-9), 3)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,small", help="comma-separated: tiny, small, medium")
    ap.add_argument("--threads", type=int, default=2, help="BLAS / torch threads for both sides")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--blas", choices=["numpy", "mkl"], default="numpy",
                    help="our side's BLAS for the linear layers: NumPy's own, or MKL (the [mkl] extra)")
    ap.add_argument("--parallel", choices=["ops", "data", "both"], default="both",
                    help="our side's use of the threads: ops split their work (ops), a batch shard per thread "
                         "(data, tinygrad_reason/parallel.py), or both timed in turn; with --threads 1 only ops")
    ap.add_argument("--gemm-floor", action="store_true",
                    help="also time the linear layers' GEMMs alone in numpy and torch (the BLAS part of a step)")
    ap.add_argument("--hand", action="store_true",
                    help="also time the step written by hand in plain NumPy (hand_step.py, always on NumPy's BLAS): "
                         "the reference that tells the engine's overhead from NumPy's own cost")
    args = ap.parse_args()
    _set_threads(args.threads)
    if args.blas == "mkl":
        os.environ["TINYGRAD_REASON_BLAS"] = "mkl"     # read by configure_from_env in build_ours (children too)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    for name in args.configs.split(","):
        if name not in CONFIGS:
            ap.error(f"unknown config {name!r}: choose from {sorted(CONFIGS)}")
        print(json.dumps(run(name, args.threads, args.steps, args.warmup, not args.no_memory, args.gemm_floor,
                             args.parallel, args.hand)),
              flush=True)


if __name__ == "__main__":
    main()
