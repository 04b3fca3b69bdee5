"""One decoder-only transformer, two families from one config.

The seed GPT: learned (+ sinusoidal) positions, pre-norm LayerNorm, GELU MLP, residuals.
Llama / Qwen style: RoPE (optionally scaled for long contexts), RMSNorm, SwiGLU, grouped-query
attention, optional QK-norm, and separate bias switches for q/k/v, the output projection and the MLP.
`hidden_states()` returns the last layer's normalized states per position, for heads that sit on
the trunk (verifiers); `forward()` maps them to logits.

Mixture of experts (moe_experts > 0, nn/moe.py): the MLP of the MoE layers (every layer by default;
moe_every / moe_dense_layers as Qwen3-MoE's decoder_sparse_step / mlp_only_layers) is a router over
moe_experts SwiGLU (or GELU) experts of moe_hidden units, moe_top_k of them per token, with optional
always-on shared experts. loss() then adds moe_aux_coef x the load-balancing loss (+ moe_z_coef x the
router z-loss) over all MoE layers, as Qwen3MoeForCausalLM adds its aux_loss with output_router_logits.

Multi-head latent attention (attention="mla", nn/mla.py; DeepSeek-V2/V3): keys and values come
from a compressed latent of mla_kv_rank features per token plus one rotary key of mla_rope_dim shared
by all heads, optionally with compressed queries (mla_q_rank); the KV cache (LatentCache) holds
just those mla_kv_rank + mla_rope_dim numbers per token and layer.

step_attention ("none" by default; "mask" or "bias", nn/step_attention.py): the attention of a
chain-of-thought token is shaped by the step structure of the ids, read with the special ids of
cfg.step_ids (step_ids_from_tokenizer(tok)). Every forward computes the relations from its ids; with
a KV cache, the cache's StepStructure keeps the labels of the positions fed so far, so a decode step
sees the structure a full forward sees.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import backend
from .. import functional as F
from ..ops.rope import ROPE_SCALINGS, rope_tables
from ..tensor import Tensor
from .attention import CausalSelfAttention, KVCache
from .mla import LatentCache, MultiHeadLatentAttention
from .layers import MLP, Dropout, Embedding, LayerNorm, Linear, RMSNorm, SwiGLU, normal_, zeros_
from .module import Module, ModuleList
from .moe import ROUTERS, MoE, load_balancing_loss, router_z_loss
from .step_attention import MODES as STEP_MODES, StepStructure, check_step_ids, step_inputs

POSITIONS = ("learned", "sinusoidal", "learned+sinusoidal", "rope", "none")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
ATTENTIONS = ("mha", "mla")


@dataclass
class TransformerConfig:
    vocab_size: int
    context_length: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None        # None: same as n_heads (plain multi-head attention)
    head_dim: int | None = None          # None: d_model // n_heads (Qwen3 sets it explicitly)
    positions: str = "learned"
    norm: str = "layernorm"
    mlp: str = "gelu"
    mlp_hidden: int | None = None        # None: 4 d for GELU, 8/3 d rounded up to 64 for SwiGLU
    gelu_approximate: str = "none"       # the GELU MLP's GELU: "none" (exact erf) or "tanh" (GPT-2's gelu_new)
    bias: bool = True                    # the blocks' Linear and LayerNorm biases; the next three refine it
    qkv_bias: bool | None = None         # None: same as bias (Qwen2: True with bias=False)
    o_bias: bool | None = None           # None: same as bias
    mlp_bias: bool | None = None         # None: same as bias
    tie_embeddings: bool = False
    dropout: float = 0.0
    rope_base: float = 10000.0
    rope_scaling: str = "none"           # "linear" or "llama3": frequencies stretched for a longer context
    rope_scaling_factor: float = 1.0
    rope_low_freq_factor: float = 1.0    # llama3 only: wavelengths over original_context / this are stretched,
    rope_high_freq_factor: float = 4.0   # under original_context / this kept, blended in between
    rope_original_context: int = 8192    # llama3 only: the context length the model was trained at
    qk_norm: bool = False
    norm_eps: float = 1e-5
    init_std: float = 0.02
    step_attention: str = "none"         # "mask" / "bias": reasoning-step structure in attention (nn/step_attention.py)
    step_ids: dict | None = None         # its special ids (step_ids_from_tokenizer(tok)); only read with step attention
    moe_experts: int = 0                 # > 0: mixture-of-experts MLPs with this many routed experts (nn/moe.py)
    moe_top_k: int = 2                   # experts per token
    moe_hidden: int | None = None        # each expert's hidden size; None: mlp_hidden
    moe_shared_experts: int = 0          # always-on experts of moe_hidden units each, added without a gate
    moe_router: str = "softmax"          # the scores: "softmax" (Mixtral, Qwen3-MoE) or "sigmoid"
    moe_norm_topk: bool = False          # top-k gates renormalized to sum to 1 (Qwen3-MoE's norm_topk_prob)
    moe_aux_coef: float = 0.001          # load-balancing loss weight in loss() (Qwen3-MoE's router_aux_loss_coef)
    moe_z_coef: float = 0.0              # weight of the router z-loss in loss() (ST-MoE uses 0.001)
    moe_every: int = 1                   # layer i is MoE when (i + 1) % moe_every == 0 (Qwen3-MoE's decoder_sparse_step)
    moe_dense_layers: tuple = ()         # layers kept dense whatever moe_every says (Qwen3-MoE's mlp_only_layers)
    attention: str = "mha"               # "mha" (multi-head / grouped-query) or "mla" (latent attention, nn/mla.py)
    mla_q_rank: int | None = None        # MLA: rank of the query compression (q_lora_rank); None: one q_proj
    mla_kv_rank: int | None = None       # MLA: width of the cached latent c (kv_lora_rank)
    mla_rope_dim: int | None = None      # MLA: rotary features per head, one key for all heads (qk_rope_head_dim)
    mla_nope_dim: int | None = None      # MLA: per-head key features without position (qk_nope_head_dim)
    mla_v_dim: int | None = None         # MLA: per-head value width (v_head_dim)
    mla_rope_interleave: bool = True     # MLA: RoPE on interleaved pairs (x0, x1), (x2, x3), ... (rope_interleave)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"TransformerConfig.{name} must be a positive integer, got {value!r}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        self._validate_mla()
        if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            raise ValueError(f"TransformerConfig: n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"TransformerConfig: d_model ({self.d_model}) must be divisible by n_heads "
                                 f"({self.n_heads})")
            self.head_dim = self.d_model // self.n_heads
        if self.head_dim <= 0:
            raise ValueError(f"TransformerConfig.head_dim must be positive, got {self.head_dim}")
        if self.positions not in POSITIONS:
            raise ValueError(f"TransformerConfig.positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.positions == "rope" and self.head_dim % 2 and self.attention == "mha":
            raise ValueError(f"TransformerConfig: RoPE needs an even head_dim, got {self.head_dim}")
        if "sinusoidal" in self.positions and self.d_model % 2:
            raise ValueError(f"TransformerConfig: sinusoidal positions need an even d_model, got {self.d_model}")
        if self.norm not in NORMS:
            raise ValueError(f"TransformerConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.mlp not in MLPS:
            raise ValueError(f"TransformerConfig.mlp must be one of {MLPS}, got {self.mlp!r}")
        if self.gelu_approximate not in ("none", "tanh"):
            raise ValueError(f"TransformerConfig.gelu_approximate must be 'none' or 'tanh', got {self.gelu_approximate!r}")
        if self.gelu_approximate != "none" and self.mlp != "gelu":
            raise ValueError(f"TransformerConfig.gelu_approximate={self.gelu_approximate!r} is only read with "
                             f"mlp='gelu', got mlp={self.mlp!r}")
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.d_model if self.mlp == "gelu" else 64 * math.ceil(8 * self.d_model / 3 / 64)
        if self.mlp_hidden <= 0:
            raise ValueError(f"TransformerConfig.mlp_hidden must be positive, got {self.mlp_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig.dropout must be in [0, 1), got {self.dropout}")
        for name in ("qkv_bias", "o_bias", "mlp_bias"):
            if getattr(self, name) is None:
                setattr(self, name, self.bias)
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"TransformerConfig.{name} must be a bool or None, got {getattr(self, name)!r}")
        self._validate_rope_scaling()
        self._validate_step_attention()
        self._validate_moe()

    def _refuse_unread(self, prefix: str, read_with: str, keep: str = "") -> None:
        """A field starting with `prefix` (but `keep`) set away from its default while the option that
        reads them is off is a mistake, not something to ignore."""
        for f in dataclasses.fields(self):
            if f.name.startswith(prefix) and f.name != keep and getattr(self, f.name) != f.default:
                raise ValueError(f"TransformerConfig.{f.name}={getattr(self, f.name)!r} is only read with {read_with}")

    def _validate_moe(self) -> None:
        if not isinstance(self.moe_experts, (int, np.integer)) or isinstance(self.moe_experts, bool) \
                or self.moe_experts < 0:
            raise ValueError(f"TransformerConfig.moe_experts must be a non-negative integer, got {self.moe_experts!r}")
        if isinstance(self.moe_dense_layers, (list, tuple)):      # a config read back from JSON has a list
            self.moe_dense_layers = tuple(self.moe_dense_layers)
        if self.moe_experts == 0:
            return self._refuse_unread("moe_", "moe_experts > 0, got moe_experts=0", keep="moe_experts")
        for name in ("moe_top_k", "moe_every"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TransformerConfig.{name} must be a positive integer, got {value!r}")
        if self.moe_top_k > self.moe_experts:
            raise ValueError(f"TransformerConfig.moe_top_k ({self.moe_top_k}) must be at most moe_experts "
                             f"({self.moe_experts})")
        if self.moe_hidden is None:
            self.moe_hidden = self.mlp_hidden
        if not isinstance(self.moe_hidden, (int, np.integer)) or self.moe_hidden <= 0:
            raise ValueError(f"TransformerConfig.moe_hidden must be a positive integer, got {self.moe_hidden!r}")
        if not isinstance(self.moe_shared_experts, (int, np.integer)) or self.moe_shared_experts < 0:
            raise ValueError(f"TransformerConfig.moe_shared_experts must be a non-negative integer, "
                             f"got {self.moe_shared_experts!r}")
        if self.moe_router not in ROUTERS:
            raise ValueError(f"TransformerConfig.moe_router must be one of {ROUTERS}, got {self.moe_router!r}")
        if not isinstance(self.moe_norm_topk, (bool, np.bool_)):
            raise ValueError(f"TransformerConfig.moe_norm_topk must be a bool, got {self.moe_norm_topk!r}")
        for name in ("moe_aux_coef", "moe_z_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
                raise ValueError(f"TransformerConfig.{name} must be a non-negative number, got {value!r}")
        bad = [i for i in self.moe_dense_layers if not isinstance(i, (int, np.integer)) or not 0 <= i < self.n_layers]
        if not isinstance(self.moe_dense_layers, tuple) or bad:
            raise ValueError(f"TransformerConfig.moe_dense_layers must be layer indices in [0, {self.n_layers}), "
                             f"got {self.moe_dense_layers!r}")
        if not any(self.is_moe_layer(i) for i in range(self.n_layers)):
            raise ValueError(f"TransformerConfig: moe_experts={self.moe_experts} but no layer is MoE (moe_every="
                             f"{self.moe_every}, moe_dense_layers={self.moe_dense_layers}, n_layers={self.n_layers})")

    def _validate_mla(self) -> None:
        """MLA's fields (before head_dim is derived: with MLA it is the query / key width, nope + rope)."""
        if self.attention not in ATTENTIONS:
            raise ValueError(f"TransformerConfig.attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.attention == "mha":
            return self._refuse_unread("mla_", "attention='mla', got attention='mha'")
        for name in ("mla_kv_rank", "mla_rope_dim", "mla_nope_dim", "mla_v_dim", "mla_q_rank"):
            value = getattr(self, name)
            if name == "mla_q_rank" and value is None:
                continue
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TransformerConfig.{name} must be a positive integer with attention='mla'"
                                 f"{' (or None)' if name == 'mla_q_rank' else ''}, got {value!r}")
        if self.mla_rope_dim % 2:
            raise ValueError(f"TransformerConfig.mla_rope_dim must be even (RoPE rotates pairs), "
                             f"got {self.mla_rope_dim}")
        if not isinstance(self.mla_rope_interleave, (bool, np.bool_)):
            raise ValueError(f"TransformerConfig.mla_rope_interleave must be a bool, "
                             f"got {self.mla_rope_interleave!r}")
        if self.positions != "rope":
            raise ValueError(f"TransformerConfig: attention='mla' needs positions='rope' (its shared key is rotary), "
                             f"got positions={self.positions!r}")
        if self.rope_scaling != "none":
            raise ValueError(f"TransformerConfig: attention='mla' does not support rope_scaling (DeepSeek's yarn "
                             f"scaling also rescales the softmax, not implemented), got {self.rope_scaling!r}")
        if self.n_kv_heads != self.n_heads:
            raise ValueError(f"TransformerConfig: with attention='mla' every head has its own key and value from the "
                             f"latent: n_kv_heads must be None or n_heads ({self.n_heads}), got {self.n_kv_heads}")
        if self.qk_norm:
            raise ValueError("TransformerConfig: qk_norm is not supported with attention='mla'")
        if self.step_attention != "none":
            raise ValueError(f"TransformerConfig: step_attention={self.step_attention!r} is not supported with "
                             f"attention='mla'")
        qk = self.mla_nope_dim + self.mla_rope_dim
        if self.head_dim is None:
            self.head_dim = qk
        if self.head_dim != qk:
            raise ValueError(f"TransformerConfig.head_dim must be None or mla_nope_dim + mla_rope_dim ({qk}) with "
                             f"attention='mla', got {self.head_dim}")

    @property
    def rope_dim(self) -> int:
        """The width RoPE rotates: the head (mha) or MLA's rope part."""
        return self.mla_rope_dim if self.attention == "mla" else self.head_dim

    def is_moe_layer(self, i: int) -> bool:
        """Whether layer i has the mixture-of-experts MLP (Qwen3-MoE's rule)."""
        return self.moe_experts > 0 and i not in self.moe_dense_layers and (i + 1) % self.moe_every == 0

    def _validate_step_attention(self) -> None:
        if self.step_attention not in STEP_MODES:
            raise ValueError(f"TransformerConfig.step_attention must be one of {STEP_MODES}, "
                             f"got {self.step_attention!r}")
        if self.step_attention == "none":
            if self.step_ids is not None:
                raise ValueError(f"TransformerConfig.step_ids is only read with step_attention in {STEP_MODES[1:]}, "
                                 f"got step_attention='none'")
            return
        if self.step_ids is None:
            raise ValueError(f"TransformerConfig.step_attention={self.step_attention!r} needs step_ids, the special "
                             "token ids of the reasoning format: nn.step_attention.step_ids_from_tokenizer(tok)")
        self.step_ids = check_step_ids(self.step_ids, self.vocab_size)

    def _validate_rope_scaling(self) -> None:
        if self.rope_scaling not in ROPE_SCALINGS:
            raise ValueError(f"TransformerConfig.rope_scaling must be one of {ROPE_SCALINGS}, "
                             f"got {self.rope_scaling!r}")
        if self.rope_scaling != "none" and self.positions != "rope":
            raise ValueError(f"TransformerConfig.rope_scaling={self.rope_scaling!r} needs positions='rope', "
                             f"got {self.positions!r}")
        # a scaling parameter that the chosen scaling does not read is a mistake, not something to ignore
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, readers in (("rope_scaling_factor", ("linear", "llama3")), ("rope_low_freq_factor", ("llama3",)),
                              ("rope_high_freq_factor", ("llama3",)), ("rope_original_context", ("llama3",))):
            if self.rope_scaling not in readers and getattr(self, name) != defaults[name]:
                raise ValueError(f"TransformerConfig.{name}={getattr(self, name)!r} is only read with rope_scaling "
                                 f"in {readers}, got rope_scaling={self.rope_scaling!r}")
        if not isinstance(self.rope_scaling_factor, (int, float, np.number)) or not self.rope_scaling_factor > 0:
            raise ValueError(f"TransformerConfig.rope_scaling_factor must be positive, got {self.rope_scaling_factor}")
        if not 0 < self.rope_low_freq_factor < self.rope_high_freq_factor:
            raise ValueError(f"TransformerConfig: rope_low_freq_factor ({self.rope_low_freq_factor}) must be positive "
                             f"and below rope_high_freq_factor ({self.rope_high_freq_factor})")
        if not isinstance(self.rope_original_context, (int, np.integer)) or self.rope_original_context <= 0:
            raise ValueError(f"TransformerConfig.rope_original_context must be a positive integer, "
                             f"got {self.rope_original_context!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["moe_dense_layers"] = list(self.moe_dense_layers)    # JSON's form: a saved config reads back equal
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TransformerConfig: unknown fields {unknown}")
        return cls(**d)

    @classmethod
    def gpt(cls, **kw) -> "TransformerConfig":
        """The seed GPT: learned + sinusoidal positions, pre-norm LayerNorm, GELU MLP 4x, biases."""
        base = dict(positions="learned+sinusoidal", norm="layernorm", mlp="gelu", bias=True, norm_eps=1e-5)
        return cls(**{**base, **kw})

    @classmethod
    def llama(cls, **kw) -> "TransformerConfig":
        """Llama / Qwen style: RoPE, RMSNorm, SwiGLU, no biases (pass n_kv_heads for GQA, qk_norm for Qwen3)."""
        base = dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, norm_eps=1e-6)
        return cls(**{**base, **kw})

    @classmethod
    def qwen2(cls, **kw) -> "TransformerConfig":
        """Qwen2 / Qwen2.5: the Llama block with biases on q, k and v only."""
        return cls.llama(**{**dict(qkv_bias=True, o_bias=False, mlp_bias=False), **kw})

    @classmethod
    def qwen3(cls, **kw) -> "TransformerConfig":
        """Qwen3: the Llama block with RMSNorm on each query and key head (pass head_dim: Qwen3 sets it)."""
        return cls.llama(**{**dict(qk_norm=True), **kw})

    def rope_scaling_kwargs(self) -> dict:
        """The scaling keywords of ops.rope.rope_tables for this config."""
        return dict(scaling=self.rope_scaling, factor=self.rope_scaling_factor,
                    low_freq_factor=self.rope_low_freq_factor, high_freq_factor=self.rope_high_freq_factor,
                    original_context=self.rope_original_context)


def sinusoidal_table(n_positions: int, dim: int, dtype=np.float32) -> np.ndarray:
    """The fixed encodings of "Attention is all you need": sin on even, cos on odd features."""
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    freq = 1.0 / 10000.0 ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((n_positions, dim))
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)
    return table.astype(dtype)


class Block(Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); the MLP of an MoE layer
    (layer index `layer`) is nn/moe.py's MoE."""

    def __init__(self, cfg: TransformerConfig, dtype=np.float32, layer: int = 0):
        norm = (lambda: LayerNorm(cfg.d_model, cfg.norm_eps, cfg.bias, dtype)) if cfg.norm == "layernorm" \
            else (lambda: RMSNorm(cfg.d_model, cfg.norm_eps, dtype))
        self.attn_norm = norm()
        if cfg.attention == "mla":
            self.attn = MultiHeadLatentAttention(cfg.d_model, cfg.n_heads, cfg.mla_kv_rank, cfg.mla_rope_dim,
                                                 cfg.mla_nope_dim, cfg.mla_v_dim, cfg.mla_q_rank, cfg.qkv_bias,
                                                 cfg.o_bias, cfg.dropout, cfg.mla_rope_interleave, dtype)
        else:
            self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.qkv_bias,
                                            cfg.o_bias, cfg.qk_norm, cfg.dropout, cfg.norm_eps, dtype,
                                            cfg.step_attention)
        self.mlp_norm = norm()
        if cfg.is_moe_layer(layer):
            self.mlp = MoE(cfg.d_model, cfg.moe_experts, cfg.moe_top_k, cfg.moe_hidden, cfg.mlp,
                           cfg.moe_shared_experts, cfg.moe_router, cfg.moe_norm_topk, cfg.mlp_bias, cfg.dropout,
                           dtype, cfg.gelu_approximate)
        elif cfg.mlp == "gelu":
            self.mlp = MLP(cfg.d_model, cfg.mlp_hidden, cfg.mlp_bias, cfg.dropout, dtype, cfg.gelu_approximate)
        else:
            self.mlp = SwiGLU(cfg.d_model, cfg.mlp_hidden, cfg.mlp_bias, cfg.dropout, dtype)

    def forward(self, x, rope=None, pad_mask=None, cache=None, layer=0, start=0, step=None, router_logits=None):
        x = x + self.attn(self.attn_norm(x), rope, pad_mask, cache, layer, start, step)
        h = self.mlp_norm(x)
        return x + (self.mlp(h, router_logits) if isinstance(self.mlp, MoE) else self.mlp(h))


class Transformer(Module):
    def __init__(self, cfg: TransformerConfig, dtype=np.float32):
        self.cfg = cfg
        self.tok_emb = Embedding(cfg.vocab_size, cfg.d_model, dtype)
        self.pos_emb = Embedding(cfg.context_length, cfg.d_model, dtype) if "learned" in cfg.positions else None
        self.drop = Dropout(cfg.dropout)
        self.blocks = ModuleList(Block(cfg, dtype, i) for i in range(cfg.n_layers))
        self.norm = LayerNorm(cfg.d_model, cfg.norm_eps, cfg.bias, dtype) if cfg.norm == "layernorm" \
            else RMSNorm(cfg.d_model, cfg.norm_eps, dtype)
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.d_model, cfg.vocab_size, False, dtype)
        self._sinusoidal = sinusoidal_table(cfg.context_length, cfg.d_model, dtype) \
            if "sinusoidal" in cfg.positions else None
        self._rope = rope_tables(cfg.context_length, cfg.rope_dim, cfg.rope_base, dtype,
                                 **cfg.rope_scaling_kwargs()) if cfg.positions == "rope" else None
        self.init_weights()

    def init_weights(self) -> None:
        """N(0, init_std) for matrices and embeddings, zero biases; residual output projections (those
        of the experts too) scaled by 1/sqrt(2 n_layers) (GPT-2)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                zeros_(p)
            elif p.ndim == 2:
                scaled = name.endswith("o_proj.weight") or (".mlp." in name and name.endswith((".proj.weight",
                                                                                            ".down.weight")))
                normal_(p, std / math.sqrt(2 * self.cfg.n_layers) if scaled else std)

    def to(self, device: str) -> "Transformer":
        super().to(device)
        move = lambda a: None if a is None else backend.to_device(a, device)  # noqa: E731
        self._sinusoidal = move(self._sinusoidal)
        self._rope = None if self._rope is None else tuple(move(a) for a in self._rope)
        return self

    def astype(self, dtype) -> "Transformer":
        super().astype(dtype)
        # rebuilt in the new dtype, not cast: float32 tables cast to float64 keep float32 error
        cfg, device = self.cfg, self.device
        if self._sinusoidal is not None:
            self._sinusoidal = backend.to_device(sinusoidal_table(cfg.context_length, cfg.d_model, dtype), device)
        if self._rope is not None:
            self._rope = rope_tables(cfg.context_length, cfg.rope_dim, cfg.rope_base, dtype, device,
                                     **cfg.rope_scaling_kwargs())
        return self

    @property
    def device(self) -> str:
        return self.tok_emb.weight.device

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """A KV cache for `batch` rows of up to max_len positions (default the context); with step
        attention it carries the StepStructure of the positions fed."""
        cfg = self.cfg
        if cfg.attention == "mla":      # the compressed latent and the rope key of each position (nn/mla.py)
            return LatentCache(cfg.n_layers, batch, max_len or cfg.context_length,
                               cfg.mla_kv_rank + cfg.mla_rope_dim, self.tok_emb.weight.dtype, self.device)
        cache = KVCache(cfg.n_layers, batch, cfg.n_kv_heads, max_len or cfg.context_length, cfg.head_dim,
                        self.tok_emb.weight.dtype, self.device)
        if cfg.step_attention != "none":
            cache.structure = StepStructure(batch, cache.max_len, cfg.step_ids)
        return cache

    def _step_inputs(self, ids, cache: KVCache | None, start: int):
        """The step attention inputs of a forward over ids at slots [start, start + T): None when step
        attention is off. Without a cache, ids are whole sequences; with one, its StepStructure reads
        them after the positions it holds and relates them to every position so far."""
        cfg = self.cfg
        if cfg.step_attention == "none":
            return None
        host = np.asarray(backend.to_device(ids, "cpu"))
        b, t = host.shape
        if cache is None:
            structure, start = StepStructure(b, t, cfg.step_ids), 0
        else:
            if cache.structure is None:
                if start:
                    raise ValueError("Transformer: step attention needs the step structure of the cached positions: "
                                     "use a cache from Transformer.new_cache")
                cache.structure = StepStructure(cache.batch, cache.max_len, cfg.step_ids)
            structure = cache.structure
        structure.advance(host, start)
        return step_inputs(structure.relations(start, t), cfg.step_attention, self.tok_emb.weight.dtype, self.device)

    def _check_ids(self, ids, start: int):
        arr = ids.data if isinstance(ids, Tensor) else self.tok_emb.weight.xp.asarray(ids)
        if arr.ndim != 2:
            raise ValueError(f"Transformer: token ids must have shape (batch, seq), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"Transformer: token ids must be integers, got {arr.dtype}")
        if start + arr.shape[1] > self.cfg.context_length:
            raise ValueError(f"Transformer: positions {start}..{start + arr.shape[1] - 1} exceed the context "
                             f"length {self.cfg.context_length}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= self.cfg.vocab_size):
            bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
            raise ValueError(f"Transformer: token id {bad} is outside the vocabulary [0, {self.cfg.vocab_size})")
        return arr

    def hidden_states(self, ids, pad_mask=None, cache: KVCache | None = None, start: int = 0,
                      positions=None, router_logits: list | None = None) -> Tensor:
        """The last layer's normalized states, (batch, seq, d_model).

        start: the cache slot of the first token (causality and the KV cache use it).
        positions: optional (batch, seq) integer positions for the position embeddings / RoPE,
        e.g. to count from each row's first real token when rows are left-padded; default
        start, start+1, ... for every row.
        router_logits: a list that collects each MoE layer's router logits (batch * seq, experts).
        """
        ids = self._check_ids(ids, start)
        t = ids.shape[1]
        xp = self.tok_emb.weight.xp
        step = self._step_inputs(ids, cache, start)
        if positions is None:
            positions = xp.arange(start, start + t)
        else:
            positions = positions.data if isinstance(positions, Tensor) else xp.asarray(positions)
            if positions.shape != ids.shape or not np.issubdtype(positions.dtype, np.integer):
                raise ValueError(f"Transformer: positions must be integers of shape {ids.shape}, got "
                                 f"{positions.dtype} {positions.shape}")
            if positions.size and (int(positions.min()) < 0 or int(positions.max()) >= self.cfg.context_length):
                raise ValueError(f"Transformer: positions must lie in [0, {self.cfg.context_length})")
        x = self.tok_emb(ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        if self._sinusoidal is not None:
            x = x + Tensor._wrap(self._sinusoidal[positions])
        x = self.drop(x)
        rope = None
        if self._rope is not None:
            cos, sin = self._rope[0][positions], self._rope[1][positions]
            rope = (cos, sin) if positions.ndim == 1 else (cos[:, None], sin[:, None])   # (B, 1, T, hd)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, pad_mask, cache, i, start, step, router_logits)
        return self.norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight)

    def forward(self, ids, pad_mask=None, cache: KVCache | None = None, start: int = 0, positions=None) -> Tensor:
        """Logits (batch, seq, vocab)."""
        return self.logits(self.hidden_states(ids, pad_mask, cache, start, positions))

    def loss(self, ids, targets, pad_mask=None, ignore_index: int = -100) -> Tensor:
        """Mean next-token cross-entropy; targets equal to ignore_index (e.g. prompt, padding) add nothing.
        With MoE layers: + moe_aux_coef * load_balancing + moe_z_coef * router_z (see loss_terms)."""
        if not self.cfg.moe_experts:
            return F.cross_entropy(self(ids, pad_mask), targets, ignore_index=ignore_index)
        terms = self.loss_terms(ids, targets, pad_mask, ignore_index)
        total = terms["cross_entropy"]
        for name, coef in (("load_balancing", self.cfg.moe_aux_coef), ("router_z", self.cfg.moe_z_coef)):
            if coef:
                total = total + terms[name] * float(coef)
        return total

    def loss_terms(self, ids, targets, pad_mask=None, ignore_index: int = -100) -> dict:
        """The loss's parts, unweighted: cross_entropy, and with MoE layers load_balancing and router_z,
        both over the router logits of all MoE layers with the padding (pad_mask False) left out."""
        router_logits = [] if self.cfg.moe_experts else None
        hidden = self.hidden_states(ids, pad_mask, router_logits=router_logits)
        terms = {"cross_entropy": F.cross_entropy(self.logits(hidden), targets, ignore_index=ignore_index)}
        if router_logits is not None:
            terms["load_balancing"] = load_balancing_loss(router_logits, self.cfg.moe_experts, self.cfg.moe_top_k,
                                                          pad_mask)
            terms["router_z"] = router_z_loss(router_logits, pad_mask)
        return terms
