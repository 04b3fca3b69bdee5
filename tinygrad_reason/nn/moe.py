"""A mixture-of-experts feed-forward block (Mixtral, Qwen3-MoE, DeepSeek), and its auxiliary losses.

For each token x (a row of d features):

    logits = x R^T                                   router R (E, d), no bias
    s      = softmax(logits)  or  sigmoid(logits)    scores, one per expert
    top    = the k experts of largest s              ties: the lowest expert index wins
    g_j    = s_top_j,  or  s_top_j / sum_i s_top_i   the gates (norm_topk: Qwen3-MoE's norm_topk_prob)
    y      = sum_j g_j expert_top_j(x)  +  shared(x)

Each expert is a SwiGLU (or GELU) MLP of `hidden` units. The shared experts are always on and have
no gate; n of them are one MLP of n * hidden units (the sum of n MLPs is one MLP with their hidden
units side by side), as DeepSeek-V2/V3 build them.

Dispatch is dropless: every (token, slot) assignment is computed, none dropped for capacity, and each
expert runs only on the tokens routed to it: the assignments are sorted by expert (index arrays on
the host side of the graph), each expert gathers its rows (getitem), the outputs are scaled by their
gates and added back into their tokens' rows by one scatter-add (ops/movement.py's ScatterAdd, the
backward of getitem). The selection itself is not differentiable (a step function); gradients flow
through the gates into the router, and through the experts.

Auxiliary losses over the router logits of all MoE layers together (rows concatenated):
load_balancing_loss is Switch Transformer's E * sum_e f_e P_e exactly as transformers'
load_balancing_loss_func (models/qwen3_moe) computes it; router_z_loss is ST-MoE's mean of
logsumexp(logits)^2 (transformers' switch_transformers router_z_loss_func).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import functional as F
from ..ops.movement import ScatterAdd
from ..tensor import Tensor
from .layers import MLP, Dropout, Linear, SwiGLU
from .module import Module, ModuleList

ROUTERS = ("softmax", "sigmoid")


def top_k_experts(scores, k: int):
    """(N, k) indices of the k largest scores of each row, largest first. Among equal scores the lowest
    expert index wins: a stable sort of -scores keeps equal entries in index order, as
    torch.sort(descending=True, stable=True) and jax.lax.top_k do. torch.topk does not promise an
    order for ties (on CPU it picks [2, 3] of four equal scores for k=2), so with exactly tied router
    scores transformers' models may route elsewhere; untied scores route the same."""
    xp = backend.get_array_module(scores)
    return xp.argsort(-scores, axis=-1, kind="stable")[:, :k]


def route(logits: Tensor, k: int, scoring: str = "softmax", norm_topk: bool = False):
    """The gates (N, k) Tensor and the chosen experts (N, k) integer array of router logits (N, E)."""
    if scoring not in ROUTERS:
        raise ValueError(f"route: scoring must be one of {ROUTERS}, got {scoring!r}")
    n, e = logits.shape
    if not 1 <= k <= e:
        raise ValueError(f"route: top_k must be in [1, {e}] for {e} experts, got {k}")
    scores = F.softmax(logits, axis=-1) if scoring == "softmax" else F.sigmoid(logits)
    experts = top_k_experts(scores.data, k)
    xp = logits.xp
    gates = scores[xp.arange(n)[:, None], experts]
    if norm_topk:
        gates = gates / gates.sum(axis=-1, keepdims=True)
    return gates, experts


def dispatch(x: Tensor, gates: Tensor, experts, ffns) -> Tensor:
    """sum_j gates[t, j] * ffns[experts[t, j]](x[t]) for every row t of x (N, d), each expert run
    only on its own rows."""
    n, k = experts.shape
    xp = x.xp
    flat = experts.reshape(-1)
    order = xp.argsort(flat, kind="stable")        # assignments grouped by expert, rows ascending within
    rows = order // k                               # the token of each assignment
    counts = xp.bincount(flat, minlength=len(ffns)).tolist()
    outs, start = [], 0
    for ffn, c in zip(ffns, counts):
        if c:
            outs.append(ffn(x[rows[start:start + c]]))
        start += c
    if not outs:                                    # no tokens at all
        return x * 0.0
    y = F.concatenate(outs, axis=0) * gates.reshape(-1)[order].unsqueeze(-1)
    # repeats=True: a token's k outputs land on the same row and add up
    return ScatterAdd.apply(y, shape=x.shape, index=(rows,), repeats=True)


class MoE(Module):
    """The mixture-of-experts feed-forward block; `router_logits`, a list, collects the (N, E) logits
    for the auxiliary losses."""

    def __init__(self, dim: int, n_experts: int, top_k: int, hidden: int, mlp: str = "swiglu",
                 n_shared: int = 0, scoring: str = "softmax", norm_topk: bool = False, bias: bool = False,
                 dropout: float = 0.0, dtype=np.float32, approximate: str = "none"):
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"MoE: top_k must be in [1, n_experts={n_experts}], got {top_k}")
        if scoring not in ROUTERS:
            raise ValueError(f"MoE: scoring must be one of {ROUTERS}, got {scoring!r}")
        if mlp not in ("swiglu", "gelu"):
            raise ValueError(f"MoE: mlp must be 'swiglu' or 'gelu', got {mlp!r}")
        make = (lambda h: SwiGLU(dim, h, bias, 0.0, dtype)) if mlp == "swiglu" \
            else (lambda h: MLP(dim, h, bias, 0.0, dtype, approximate))
        self.n_experts, self.top_k, self.scoring, self.norm_topk = n_experts, top_k, scoring, norm_topk
        self.router = Linear(dim, n_experts, False, dtype)
        self.experts = ModuleList(make(hidden) for _ in range(n_experts))
        self.shared = make(n_shared * hidden) if n_shared else None
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, router_logits: list | None = None) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        logits = self.router(flat)
        if router_logits is not None:
            router_logits.append(logits)
        gates, experts = route(logits, self.top_k, self.scoring, self.norm_topk)
        out = dispatch(flat, gates, experts, list(self.experts))
        if self.shared is not None:
            out = out + self.shared(flat)
        return self.dropout(out.reshape(x.shape))

    def extra_repr(self) -> str:
        return (f"experts={self.n_experts}, top_k={self.top_k}, scoring={self.scoring!r}, "
                f"norm_topk={self.norm_topk}, shared={self.shared is not None}")


# ---------------------------------------------------------------- auxiliary losses
def _row_weights(router_logits: list, pad_mask):
    """The logits of all layers as one (L N, E) Tensor and each row's weight (1, or 0 for padding)."""
    if not router_logits:
        raise ValueError("moe losses: no router logits (the model has no MoE layer, or they were not collected)")
    logits = F.concatenate(router_logits, axis=0)
    xp, n = logits.xp, router_logits[0].shape[0]
    if pad_mask is None:
        return logits, None
    keep = pad_mask.data if isinstance(pad_mask, Tensor) else xp.asarray(pad_mask)
    if keep.size != n:
        raise ValueError(f"moe losses: pad_mask has {keep.size} entries ({keep.shape}) for {n} routed tokens")
    keep = keep.reshape(-1).astype(logits.dtype)
    return logits, xp.tile(keep, len(router_logits))      # the same tokens in every layer


def load_balancing_loss(router_logits: list, n_experts: int, top_k: int, pad_mask=None) -> Tensor:
    """Switch Transformer's load-balancing loss over the router logits of all MoE layers (each (N, E)):

        E * sum_e f_e P_e,   over the L N rows r (padding rows left out):
        f_e = (1 / rows) sum_r [e in top-k of row r]      the share of assignments (sums to k)
        P_e = (1 / rows) sum_r softmax(logits_r)_e        the mean router probability

    f is a count, not differentiable; the gradient flows through P. As transformers computes it,
    P uses the softmax of the logits whatever the router's scoring, and top-k is taken on it."""
    logits, weight = _row_weights(router_logits, pad_mask)
    probs = F.softmax(logits, axis=-1)
    xp = logits.xp
    hits = xp.zeros(logits.shape, dtype=logits.dtype)          # one-hot of each row's top-k
    hits[xp.arange(logits.shape[0])[:, None], top_k_experts(probs.data, top_k)] = 1.0
    if weight is None:
        rows = logits.shape[0]
        f = hits.sum(axis=0) / rows
        p = probs.sum(axis=0) * (1.0 / rows)
    else:
        rows = float(weight.sum())
        f = (hits * weight[:, None]).sum(axis=0) / rows
        p = (probs * Tensor._wrap(weight[:, None])).sum(axis=0) * (1.0 / rows)
    return (p * Tensor._wrap(f)).sum() * float(n_experts)


def router_z_loss(router_logits: list, pad_mask=None) -> Tensor:
    """ST-MoE's router z-loss: the mean over the L N rows (padding left out) of logsumexp(logits_r)^2;
    it keeps the logits small, so the router's softmax stays in range."""
    logits, weight = _row_weights(router_logits, pad_mask)
    z = F.logsumexp(logits, axis=-1)
    if weight is None:
        return (z * z).mean()
    return (z * z * Tensor._wrap(weight)).sum() * (1.0 / float(weight.sum()))
