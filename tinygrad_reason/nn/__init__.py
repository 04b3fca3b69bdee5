"""Modules, layers, attention with its KV cache, and the transformer, written on our Tensor."""
from .attention import CausalSelfAttention, KVCache, causal_mask  # noqa: F401
from .heads import ValueHead, Verifier  # noqa: F401
from .layers import (GELU, MLP, Dropout, Embedding, LayerNorm, Linear, RMSNorm, SiLU, SwiGLU,  # noqa: F401
                     normal_, zeros_)
from .mla import LatentCache, MultiHeadLatentAttention  # noqa: F401
from .module import Module, ModuleList, Parameter  # noqa: F401
from .moe import MoE, load_balancing_loss, route, router_z_loss, top_k_experts  # noqa: F401
from .transformer import Block, Transformer, TransformerConfig, sinusoidal_table  # noqa: F401
