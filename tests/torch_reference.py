"""An independent torch implementation of tinygrad_reason's Transformer, for parity tests and benchmarks.

Parameter names and layouts equal our `Transformer.state_dict()` keys (tok_emb.weight,
pos_emb.weight, blocks.N.attn_norm.*, blocks.N.attn.{q,k,v,o}_proj.*, blocks.N.attn.{q,k}_norm.weight,
blocks.N.mlp_norm.*, blocks.N.mlp.{fc,proj}.* or blocks.N.mlp.{gate,up,down}.*, norm.*, lm_head.weight
(absent when tied)), so `load_from_ours` is a plain copy by name.

Written from the definitions, not from our code: attention is explicit matmuls with a causal (and
optional padding) mask and a softmax; grouped-query heads use repeat_interleave of the k/v heads;
RoPE is the "rotate half" layout; RMSNorm is x / sqrt(mean(x^2) + eps) * w. Only torch and numpy.

The config is duck-typed: any object with TransformerConfig's attribute names works.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TorchTransformer", "load_from_ours", "sinusoidal_table", "rope_tables"]


def sinusoidal_table(n_positions: int, dim: int) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...), in float64."""
    pe = np.zeros((n_positions, dim))
    for i in range(0, dim, 2):
        angle = np.arange(n_positions) / 10000.0 ** (i / dim)
        pe[:, i] = np.sin(angle)
        pe[:, i + 1] = np.cos(angle)
    return pe


def rope_tables(n_positions: int, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of pos * base^(-2i/d) for i < d/2, repeated for both halves; float64, (n, d)."""
    inv_freq = base ** (-np.arange(0, head_dim, 2) / head_dim)
    angles = np.arange(n_positions)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles), np.sin(angles)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float, bias: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


def _norm(cfg, dim):
    return LayerNorm(dim, cfg.norm_eps, cfg.bias) if cfg.norm == "layernorm" else RMSNorm(dim, cfg.norm_eps)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.h, self.hkv, self.hd = cfg.n_heads, cfg.n_kv_heads or cfg.n_heads, cfg.head_dim
        d = cfg.d_model
        self.q_proj = nn.Linear(d, self.h * self.hd, bias=cfg.bias)
        self.k_proj = nn.Linear(d, self.hkv * self.hd, bias=cfg.bias)
        self.v_proj = nn.Linear(d, self.hkv * self.hd, bias=cfg.bias)
        self.o_proj = nn.Linear(self.h * self.hd, d, bias=cfg.bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.hd, cfg.norm_eps)
            self.k_norm = RMSNorm(self.hd, cfg.norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, rope=None, pad_mask=None):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.hkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.hkv, self.hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        rep = self.h // self.hkv
        k = k.repeat_interleave(rep, dim=1)          # query head i uses kv head i // rep
        v = v.repeat_interleave(rep, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
        masked = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        if pad_mask is not None:
            masked = masked[None, None] | ~pad_mask.bool()[:, None, None, :]
        # the lowest finite value (not -inf), so a query row whose keys are all padding stays finite
        scores = scores.masked_fill(masked, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.h * self.hd))


class GeluMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class SwiGLU(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=cfg.bias)
        self.up = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=cfg.bias)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = _norm(cfg, cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp_norm = _norm(cfg, cfg.d_model)
        self.mlp = GeluMLP(cfg) if cfg.mlp == "gelu" else SwiGLU(cfg)

    def forward(self, x, rope=None, pad_mask=None):
        x = x + self.attn(self.attn_norm(x), rope, pad_mask)
        return x + self.mlp(self.mlp_norm(x))


class TorchTransformer(nn.Module):
    """Decoder-only transformer: GPT (learned / sinusoidal positions, LayerNorm, GELU) or Llama
    (RoPE, RMSNorm, SwiGLU, GQA, optional QK-norm) from a TransformerConfig-like object."""

    def __init__(self, cfg, dtype=torch.float32):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model) if "learned" in cfg.positions else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = _norm(cfg, cfg.d_model)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if "sinusoidal" in cfg.positions:
            self.register_buffer("sinusoidal", torch.from_numpy(sinusoidal_table(cfg.context_length, cfg.d_model)),
                                 persistent=False)
        else:
            self.sinusoidal = None
        if cfg.positions == "rope":
            cos, sin = rope_tables(cfg.context_length, cfg.head_dim, cfg.rope_base)
            self.register_buffer("rope_cos", torch.from_numpy(cos), persistent=False)
            self.register_buffer("rope_sin", torch.from_numpy(sin), persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        self.to(dtype)

    def hidden_states(self, ids, pad_mask=None):
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        t = ids.shape[1]
        x = self.tok_emb(ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(t))
        if self.sinusoidal is not None:
            x = x + self.sinusoidal[:t].to(x.dtype)
        rope = None
        if self.rope_cos is not None:
            rope = (self.rope_cos[:t].to(x.dtype), self.rope_sin[:t].to(x.dtype))
        if pad_mask is not None:
            pad_mask = torch.as_tensor(np.asarray(pad_mask)).bool()
        for block in self.blocks:
            x = block(x, rope, pad_mask)
        return self.norm(x)

    def forward(self, ids, pad_mask=None):
        h = self.hidden_states(ids, pad_mask)
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return h @ weight.T

    def loss(self, ids, targets, ignore_index: int = -100):
        logits = self(ids)
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)


def load_from_ours(torch_model: nn.Module, our_model) -> nn.Module:
    """Copy every tensor of our model's state_dict() into the torch model's parameter of the same
    name (in the torch model's dtype). The key sets must be equal."""
    ours = {k: np.asarray(_to_numpy(v)) for k, v in our_model.state_dict().items()}
    theirs = dict(torch_model.named_parameters())
    if set(ours) != set(theirs):
        raise KeyError(f"load_from_ours: names differ; only ours: {sorted(set(ours) - set(theirs))}, "
                       f"only torch: {sorted(set(theirs) - set(ours))}")
    with torch.no_grad():
        for name, p in theirs.items():
            if tuple(p.shape) != ours[name].shape:
                raise ValueError(f"load_from_ours: {name} has shape {tuple(p.shape)} in torch, {ours[name].shape} in ours")
            p.copy_(torch.from_numpy(np.ascontiguousarray(ours[name])).to(p.dtype))
    return torch_model


def _to_numpy(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a
