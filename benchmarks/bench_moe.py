"""The mixture-of-experts layer (nn/moe.py): forward + backward, ours against torch running the same
dropless dispatch, in one process, on the same thread count.

    python benchmarks/bench_moe.py --threads 1 --tokens 2048

Both sides: router logits x R^T, softmax, top-k (renormalized), then per expert: gather its tokens,
SwiGLU, scale by the gate, one scatter-add back into the tokens' rows (torch: index_select / index_add;
ours: getitem / ScatterAdd). The same float32 weights and input; outputs and input gradients are checked
equal first (ties in top-k are absent with random weights). Then the median of --repeats
forward+backward passes of sum(y * g) for a fixed random g, the sides taking turns, and the ratio
torch time / ours (> 1: we are faster). A dense SwiGLU of the same active size (k x hidden units) is
timed too on both sides, for scale: what the routing and dispatch cost on top of the arithmetic.
One JSON line per configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402


def torch_moe(x, router, gate, up, down, k):
    """y = sum_j g_j SwiGLU_e_j(x), each expert on its own tokens (index_select, split, index_add)."""
    import torch
    probs = torch.softmax(x @ router.T, dim=-1)
    top, experts = torch.topk(probs, k, dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    flat = experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    rows = order // k
    counts = torch.bincount(flat, minlength=len(gate)).tolist()
    # one gather of every assignment, split by expert: a per-expert index_select would give x a full
    # (N, d) gradient per expert in torch's backward
    outs = []
    for e, xe in enumerate(torch.split(x.index_select(0, rows), counts)):
        if len(xe):
            outs.append((torch.nn.functional.silu(xe @ gate[e].T) * (xe @ up[e].T)) @ down[e].T)
    # one scatter of all assignments, as ours (a per-expert index_add would copy y E times)
    y = torch.cat(outs) * top.reshape(-1)[order][:, None]
    return torch.zeros_like(x).index_add(0, rows, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--experts", default="8,32")
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    bench_train._set_threads(args.threads)
    import numpy as np
    import torch

    import tinygrad_reason as tg
    from tinygrad_reason.nn.layers import SwiGLU
    from tinygrad_reason.nn.moe import MoE
    torch.set_num_threads(args.threads)
    for n_experts in (int(e) for e in args.experts.split(",")):
        tg.manual_seed(0)
        moe = MoE(args.dim, n_experts, args.top_k, args.hidden, norm_topk=True)
        dense = SwiGLU(args.dim, args.top_k * args.hidden)
        rng = np.random.default_rng(0)
        x_np = rng.standard_normal((args.tokens, args.dim)).astype(np.float32)
        g_np = rng.standard_normal((args.tokens, args.dim)).astype(np.float32)

        def param(a):
            return torch.tensor(np.ascontiguousarray(a), requires_grad=True)

        router = param(moe.router.weight.data)
        # one tensor per expert weight, as an nn.ModuleList of experts holds them (indexing a stacked
        # (E, h, d) tensor would give it a full-size gradient per expert in torch's backward)
        gate = [param(e.gate.weight.data) for e in moe.experts]
        up = [param(e.up.weight.data) for e in moe.experts]
        down = [param(e.down.weight.data) for e in moe.experts]
        dg, du, dd = (param(m.weight.data) for m in (dense.gate, dense.up, dense.down))

        def ours(layer):
            x = tg.Tensor(x_np, requires_grad=True)
            layer.zero_grad()
            (layer(x) * tg.Tensor(g_np)).sum().backward()
            return x

        def theirs(fn):
            x = torch.tensor(x_np, requires_grad=True)
            for p in (router, *gate, *up, *down, dg, du, dd):
                p.grad = None
            (fn(x) * torch.from_numpy(g_np)).sum().backward()
            return x

        def torch_dense(x):
            return (torch.nn.functional.silu(x @ dg.T) * (x @ du.T)) @ dd.T

        def torch_routed(x):
            return torch_moe(x, router, gate, up, down, args.top_k)

        ox, tx = ours(moe), theirs(torch_routed)
        y_ours = moe(tg.Tensor(x_np)).data
        with torch.no_grad():
            y_torch = torch_routed(torch.from_numpy(x_np)).numpy()
        err_y = float(np.abs(y_ours - y_torch).max())
        err_g = float(np.abs(ox.grad.data - tx.grad.numpy()).max())
        err_w = float(np.abs(moe.experts[0].down.weight.grad.data - down[0].grad.numpy()).max())
        times = {"ours_moe": [], "torch_moe": [], "ours_dense": [], "torch_dense": []}
        for _ in range(args.repeats):
            for name, run in (("ours_moe", lambda: ours(moe)), ("torch_moe", lambda: theirs(torch_routed)),
                              ("ours_dense", lambda: ours(dense)), ("torch_dense", lambda: theirs(torch_dense))):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({"experts": n_experts, "top_k": args.top_k, "tokens": args.tokens, "dim": args.dim,
                          "hidden": args.hidden, "threads": args.threads,
                          "max_abs_diff": {"y": err_y, "grad_x": err_g, "grad_expert0_down": err_w},
                          **{f"{k}_ms": round(v * 1e3, 2) for k, v in med.items()},
                          "moe_ratio_torch_over_ours": round(med["torch_moe"] / med["ours_moe"], 3),
                          "dense_ratio_torch_over_ours": round(med["torch_dense"] / med["ours_dense"], 3),
                          "ours_moe_over_dense": round(med["ours_moe"] / med["ours_dense"], 2),
                          "torch_moe_over_dense": round(med["torch_moe"] / med["torch_dense"], 2)}))


if __name__ == "__main__":
    main()
