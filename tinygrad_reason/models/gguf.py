"""llama.cpp GGUF models (Llama, Qwen2, Qwen3 architectures) as our Transformer.

config_from_gguf maps the `{arch}.*` metadata to a TransformerConfig and refuses, naming the key,
what our transformer would compute differently (partial RoPE, RoPE scaling we do not have, sliding
windows). load_gguf_weights dequantizes every tensor to float32 (io/ggml_quants.py), renames it to
the Hugging Face name and copies the set into the model through load_hf_weights, all or nothing.

llama.cpp's converter stores a Llama model's q and k rows permuted, so that its RoPE can rotate
adjacent pairs (x0, x1), (x2, x3), ...; ours, like transformers', rotates the two halves of each
head (x_i, x_{i+d/2}). _unpermute undoes it. The Qwen architectures are converted unpermuted (their
GGUF RoPE type is already the half-split one).
"""
from __future__ import annotations

import re

import numpy as np

from ..io.gguf import GGUFError, GGUFFile
from ..nn import Transformer, TransformerConfig
from .hf import load_hf_weights

ARCHITECTURES = ("llama", "qwen2", "qwen3")

# GGUF tensor names -> Hugging Face names (models/hf.py maps those to ours)
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_BLOCK = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
          "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
          **{f"attn_{g}.{kind}": f"self_attn.{h}_proj.{kind}" for g, h in
             (("q", "q"), ("k", "k"), ("v", "v"), ("output", "o")) for kind in ("weight", "bias")},
          **{f"ffn_{g}.{kind}": f"mlp.{g}_proj.{kind}" for g in ("gate", "up", "down") for kind in ("weight", "bias")}}


def _fail(source: str, key: str, value, why: str):
    raise GGUFError(f"GGUF file {source!r}: metadata {key!r} = {value!r}: {why}")


def config_from_gguf(meta: dict, source: str = "<metadata>", tied: bool = True,
                     embedding_rows: int | None = None) -> TransformerConfig:
    """Our TransformerConfig for a GGUF metadata dict; `tied`: the file has no output.weight;
    `embedding_rows`: the vocabulary size when the metadata does not give it."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        _fail(source, "general.architecture", arch, f"supported are {ARCHITECTURES}")

    def get(key, default=None, required=False):
        full = f"{arch}.{key}"
        if full not in meta:
            if required:
                raise GGUFError(f"GGUF file {source!r}: metadata {full!r} is missing")
            return default
        return meta[full]

    d_model, n_heads = get("embedding_length", required=True), get("attention.head_count", required=True)
    n_kv = get("attention.head_count_kv", n_heads)
    for key, value in (("attention.head_count", n_heads), ("attention.head_count_kv", n_kv)):
        if not isinstance(value, int):      # llama.cpp allows a per-layer array; we have one count
            _fail(source, f"{arch}.{key}", value, "a different head count per layer is not supported")
    head_dim = get("attention.key_length", d_model // n_heads)
    if get("attention.value_length", head_dim) != head_dim:
        _fail(source, f"{arch}.attention.value_length", get("attention.value_length"),
              f"must equal the key length {head_dim}")
    rope_dims = get("rope.dimension_count", head_dim)
    if rope_dims != head_dim:
        _fail(source, f"{arch}.rope.dimension_count", rope_dims, f"RoPE on part of each head (of {head_dim}) "
              "is not supported")
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        _fail(source, f"{arch}.rope.scaling.type", scaling, "supported are none and linear")
    rope = dict(rope_base=float(get("rope.freq_base", 10000.0)))
    if scaling == "linear":
        rope.update(rope_scaling="linear", rope_scaling_factor=float(get("rope.scaling.factor", required=True)))
    if get("attention.sliding_window") is not None:
        _fail(source, f"{arch}.attention.sliding_window", get("attention.sliding_window"),
              "sliding-window attention is not supported")
    vocab = get("vocab_size") or len(meta.get("tokenizer.ggml.tokens", ())) or embedding_rows
    if not vocab:
        raise GGUFError(f"GGUF file {source!r}: neither {arch}.vocab_size, tokenizer.ggml.tokens nor "
                        "token_embd.weight gives the vocabulary size")
    try:
        return TransformerConfig.llama(
            vocab_size=vocab, context_length=get("context_length", required=True), d_model=d_model,
            n_layers=get("block_count", required=True), n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
            mlp_hidden=get("feed_forward_length", required=True), qkv_bias=arch == "qwen2", o_bias=False,
            mlp_bias=False, qk_norm=arch == "qwen3", tie_embeddings=tied,
            norm_eps=float(get("attention.layer_norm_rms_epsilon", required=True)), **rope)
    except ValueError as e:
        raise GGUFError(f"GGUF file {source!r}: the metadata gives an invalid config: {e}") from None


def hf_name_of(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor name (None for one we do not know)."""
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}"
    return None


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of each head from llama.cpp's interleaved-pair order back to the half-split order:
    the converter did reshape(heads, 2, d/2, in).swapaxes(1, 2); this is its inverse."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_state_dict(f: GGUFFile, cfg: TransformerConfig, arch: str) -> dict:
    """{Hugging Face name: float32 array} of every tensor in the file; an unknown tensor name is an error."""
    unknown = [n for n in f.tensors if hf_name_of(n) is None]   # e.g. rope_freqs (llama3 RoPE factors)
    if unknown:
        raise GGUFError(f"GGUF file {f.path!r}: tensors not understood for {arch}: {unknown[:8]}"
                        f"{' ...' if len(unknown) > 8 else ''}")
    state = {}
    for name in f.tensors:
        hf = hf_name_of(name)
        w = f.load(name)
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight", "attn_q.bias", "attn_k.bias")):
            w = _unpermute(w, cfg.n_heads if ".attn_q." in name else cfg.n_kv_heads)
        state[hf] = w
    return state


def load_gguf(path, dtype=np.float32) -> tuple:
    """(Transformer, TransformerConfig, metadata) from a GGUF file, weights dequantized to `dtype`."""
    with GGUFFile(path) as f:
        arch = f.metadata.get("general.architecture")
        emb = f.tensors.get("token_embd.weight")
        cfg = config_from_gguf(f.metadata, f.path, tied="output.weight" not in f.tensors,
                               embedding_rows=emb.shape[0] if emb is not None else None)
        state = gguf_state_dict(f, cfg, arch)
        meta = dict(f.metadata)
    model = Transformer(cfg, dtype=dtype)
    try:
        load_hf_weights(model, state)
    except ValueError as e:
        raise GGUFError(f"GGUF file {path!r}: {e}") from None
    return model, cfg, meta
