"""Mixture of experts and multi-head latent attention: the same block, two flavors, seen from inside.

    python examples/07_moe_and_mla.py            # a few seconds on a laptop CPU

1. A tiny Llama-style model whose MLPs are mixtures of 4 experts (top-2): which expert each token
   goes to, the gates, the load-balancing and z losses, and the gradient reaching the experts and
   the router through the gates only.
2. The same model with latent attention: what its cache stores per token against plain multi-head
   attention, and that decoding through the latent cache gives the logits of the full forward.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tinygrad_reason as tg  # noqa: E402
from tinygrad_reason.nn import Transformer, TransformerConfig  # noqa: E402
from tinygrad_reason.nn.moe import route  # noqa: E402


def moe_part(ids) -> None:
    tg.manual_seed(0)
    cfg = TransformerConfig.llama(vocab_size=50, context_length=32, d_model=32, n_layers=2, n_heads=4,
                                  moe_experts=4, moe_top_k=2, moe_norm_topk=True)
    model = Transformer(cfg)
    print(f"== mixture of experts: {cfg.moe_experts} experts, top-{cfg.moe_top_k}, "
          f"{sum(p.data.size for p in model.parameters()):,} parameters")
    # the router logits of every MoE layer, collected by the forward; the first layer's, first row
    router_logits = []
    with tg.no_grad():
        model.hidden_states(ids, router_logits=router_logits)
    block = model.blocks[0]
    first_row = tg.Tensor(router_logits[0].data[:ids.shape[1]])
    gates, experts = route(first_row, cfg.moe_top_k, "softmax", True)
    for t in range(6):
        chosen = ", ".join(f"expert {e} x {g:.3f}" for e, g in zip(experts[t], gates.data[t]))
        print(f"  token {t} (id {ids[0, t]:2d}) -> {chosen}")
    counts = np.bincount(experts.reshape(-1), minlength=cfg.moe_experts)
    print(f"  tokens per expert in this row: {counts.tolist()} (dropless: each expert runs on its own only)")
    targets = np.roll(ids, -1, axis=1)
    terms = model.loss_terms(ids, targets)
    print("  loss parts: " + ", ".join(f"{k} {v.item():.4f}" for k, v in terms.items()))
    loss = model.loss(ids, targets)
    loss.backward()
    print(f"  loss = cross_entropy + {cfg.moe_aux_coef} x load_balancing = {loss.item():.4f}")
    router_grad = np.abs(block.mlp.router.weight.grad.data).max()
    expert_grads = [float(np.abs(e.down.weight.grad.data).max()) if e.down.weight.grad is not None else 0.0
                    for e in block.mlp.experts]
    print(f"  |grad| of the router {router_grad:.2e} (through the gates and the balance loss); "
          f"of each expert's down projection: {', '.join(f'{g:.2e}' for g in expert_grads)}")


def mla_part(ids) -> None:
    tg.manual_seed(0)
    common = dict(vocab_size=50, context_length=32, d_model=32, n_layers=2, n_heads=4)
    mla = Transformer(TransformerConfig.llama(**common, attention="mla", mla_kv_rank=8, mla_rope_dim=4,
                                              mla_nope_dim=4, mla_v_dim=8))
    mha = Transformer(TransformerConfig.llama(**common))
    print("== multi-head latent attention: latent rank 8, rope part 4, no-position part 4, values 8")

    def per_token(model) -> int:
        cache = model.new_cache(1, 8)
        arrays = [a for v in vars(cache).values() if isinstance(v, list) for a in v if isinstance(a, np.ndarray)]
        return sum(a.nbytes for a in arrays) // 8 // model.cfg.n_layers

    print(f"  cache per token and layer: MLA {per_token(mla)} bytes (the latent and one rope key), "
          f"multi-head attention {per_token(mha)} bytes (keys and values of every head)")
    with tg.no_grad():
        full = mla(tg.Tensor(ids[:1])).data[0]
        cache = mla.new_cache(1, ids.shape[1])
        steps = [mla(tg.Tensor(ids[:1, :4]), cache=cache, start=0).data[0]]
        for t in range(4, ids.shape[1]):         # one token at a time through the latent cache
            steps.append(mla(tg.Tensor(ids[:1, t:t + 1]), cache=cache, start=t).data[0])
    cached = np.concatenate(steps, axis=0)
    print(f"  decoding through the latent cache against the full forward: max |logit difference| "
          f"{np.abs(cached - full).max():.2e} (float32 round-off)")


def main() -> None:
    ids = np.random.default_rng(0).integers(0, 50, (2, 12))
    moe_part(ids)
    mla_part(ids)


if __name__ == "__main__":
    main()
