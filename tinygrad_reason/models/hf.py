"""Hugging Face Llama, Qwen2 and Qwen3 checkpoints as our Transformer.

config_from_hf reads a `config.json` dict (either transformers 5's `rope_parameters` form or the older
top-level `rope_theta` / `rope_scaling`) and refuses, naming the field, anything our transformer would
compute differently: another activation, sliding-window layers, partial or unsupported RoPE, attention
dropout, quantized weights. A key the dict leaves out takes the default of transformers' config class
for that model type, as from_pretrained would, except the sizes, which must be given.

hf_name / our_name translate parameter names, and load_hf_weights copies a HF state dict (name ->
array) into a model, all or nothing.
"""
from __future__ import annotations

import re

import numpy as np

from ..nn import Transformer, TransformerConfig

MODEL_TYPES = ("llama", "qwen2", "qwen3")

# transformers' class defaults (LlamaConfig, Qwen2Config, Qwen3Config) for the keys that change the math
_DEFAULTS = {
    "llama": dict(num_key_value_heads=None, head_dim=None, attention_bias=False, mlp_bias=False),
    "qwen2": dict(num_key_value_heads=32, head_dim=None),
    "qwen3": dict(num_key_value_heads=32, head_dim=128, attention_bias=False),
}
_COMMON_DEFAULTS = dict(hidden_act="silu", rms_norm_eps=1e-6, tie_word_embeddings=False, attention_dropout=0.0,
                        rope_theta=10000.0, use_sliding_window=False, sliding_window=4096, max_window_layers=28)
_REQUIRED = ("vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size")


def _fail(field: str, value, why: str):
    raise ValueError(f"config_from_hf: {field}={value!r}: {why}")


def config_from_hf(hf: dict) -> TransformerConfig:
    """Our TransformerConfig for a Hugging Face config.json dict of model_type llama, qwen2 or qwen3."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        _fail("model_type", model_type, f"supported are {MODEL_TYPES}")
    missing = [k for k in _REQUIRED if hf.get(k) is None]
    if missing:
        raise ValueError(f"config_from_hf: the {model_type} config has no {missing}")
    get = {**_COMMON_DEFAULTS, **_DEFAULTS[model_type], **hf}.get

    if get("hidden_act") != "silu":
        _fail("hidden_act", get("hidden_act"), "the SwiGLU MLP here gates with silu only")
    if get("attention_dropout"):
        _fail("attention_dropout", get("attention_dropout"), "dropout on the attention weights alone is not "
              "expressible (TransformerConfig.dropout also drops the residual branches)")
    if hf.get("quantization_config") is not None:
        _fail("quantization_config", hf["quantization_config"], "quantized checkpoints are not supported")
    if model_type != "llama":          # LlamaModel has no sliding window; the Qwen models read these
        _check_full_attention(get)

    n_heads = get("num_attention_heads")
    if model_type == "qwen2":          # Qwen2Attention: biases on q, k, v and none on o, whatever the config says
        qkv_bias, o_bias, mlp_bias = True, False, False
    else:
        qkv_bias = o_bias = bool(get("attention_bias"))
        mlp_bias = bool(get("mlp_bias")) if model_type == "llama" else False
    return TransformerConfig.llama(
        vocab_size=get("vocab_size"), context_length=get("max_position_embeddings"), d_model=get("hidden_size"),
        n_layers=get("num_hidden_layers"), n_heads=n_heads, n_kv_heads=get("num_key_value_heads") or n_heads,
        head_dim=get("head_dim") or get("hidden_size") // n_heads, mlp_hidden=get("intermediate_size"),
        qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias, qk_norm=model_type == "qwen3",
        tie_embeddings=bool(get("tie_word_embeddings")), norm_eps=float(get("rms_norm_eps")), **_rope(hf, get))


def _check_full_attention(get) -> None:
    layer_types = get("layer_types")
    if layer_types is None:            # derived as Qwen2Config / Qwen3Config do
        window = get("sliding_window") if get("use_sliding_window") else None
        layer_types = ["sliding_attention" if window is not None and i >= get("max_window_layers")
                       else "full_attention" for i in range(get("num_hidden_layers"))]
        field, value = "use_sliding_window", get("use_sliding_window")
    else:
        field, value = "layer_types", layer_types
    other = sorted({t for t in layer_types if t != "full_attention"})
    if other:
        _fail(field, value, f"layers of type {other} are not supported, only full causal attention")


def _rope(hf: dict, get) -> dict:
    """Our rope_* fields from the config's RoPE parameters, with transformers' precedence: rope_scaling
    (the older key) over rope_parameters, a value inside the dict over one at the top level."""
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if "rope_type" not in params and "type" not in params and any(isinstance(v, dict) for v in params.values()):
        _fail("rope_parameters", params, "different RoPE per layer type is not supported")
    rope_type = params.get("rope_type", params.get("type", "default"))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor"))
    if partial not in (None, 1, 1.0):
        _fail("partial_rotary_factor", partial, "RoPE on part of each head is not supported")
    out = dict(rope_base=float(params.get("rope_theta", get("rope_theta"))))
    if rope_type == "default":
        return out
    if rope_type not in ("linear", "llama3"):
        _fail("rope_type", rope_type, "supported are 'default', 'linear' and 'llama3'")
    need = ["factor"] + (["low_freq_factor", "high_freq_factor"] if rope_type == "llama3" else [])
    absent = [k for k in need if params.get(k) is None]
    if absent:
        _fail("rope_parameters", params, f"{rope_type} RoPE needs {absent}")
    out.update(rope_scaling=rope_type, rope_scaling_factor=float(params["factor"]))
    if rope_type == "llama3":
        # a top-level original_max_position_embeddings wins (transformers' standardize_rope_params)
        original = hf.get("original_max_position_embeddings") or params.get("original_max_position_embeddings") \
            or get("max_position_embeddings")
        out.update(rope_low_freq_factor=float(params["low_freq_factor"]),
                   rope_high_freq_factor=float(params["high_freq_factor"]), rope_original_context=int(original))
    return out


# ------------------------------------------------------------------ weight names
_TOP_NAMES = {"tok_emb.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"}
_BLOCK_NAMES = {   # ours under blocks.{i}. -> HF's under model.layers.{i}.
    **{f"attn.{p}.{kind}": f"self_attn.{p}.{kind}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")
       for kind in ("weight", "bias")},
    "attn.q_norm.weight": "self_attn.q_norm.weight", "attn.k_norm.weight": "self_attn.k_norm.weight",
    "attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
    **{f"mlp.{ours}.{kind}": f"mlp.{theirs}.{kind}" for ours, theirs in
       (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")) for kind in ("weight", "bias")},
}
_TOP_OURS = {v: k for k, v in _TOP_NAMES.items()}
_BLOCK_OURS = {v: k for k, v in _BLOCK_NAMES.items()}


def _translate(name: str, top: dict, block: dict, prefix: str, other_prefix: str, what: str) -> str:
    if name in top:
        return top[name]
    m = re.fullmatch(rf"{re.escape(prefix)}(\d+)\.(.+)", name)
    if m is None or m.group(2) not in block:
        raise ValueError(f"no {what} name for {name!r}")
    return f"{other_prefix}{m.group(1)}.{block[m.group(2)]}"


def hf_name(our_name: str) -> str:
    """Our state_dict key -> the Hugging Face Llama / Qwen2 / Qwen3 parameter name."""
    return _translate(our_name, _TOP_NAMES, _BLOCK_NAMES, "blocks.", "model.layers.", "Hugging Face")


def our_name(hf_name: str) -> str:
    """A Hugging Face Llama / Qwen2 / Qwen3 parameter name -> our state_dict key."""
    return _translate(hf_name, _TOP_OURS, _BLOCK_OURS, "model.layers.", "blocks.", "tinygrad_reason")


def load_hf_weights(model: Transformer, tensors: dict) -> None:
    """Copy a Hugging Face state dict (name -> array) into `model`, cast to its dtype.

    With tied embeddings the file may also hold lm_head.weight; it must then equal the embedding. Any
    missing, unexpected or wrongly shaped tensor is an error naming them all (in HF names), and then
    nothing is copied."""
    tensors = dict(tensors)
    if model.lm_head is None and "lm_head.weight" in tensors:
        head, emb = tensors.pop("lm_head.weight"), tensors.get("model.embed_tokens.weight")
        if emb is not None and not np.array_equal(np.asarray(head), np.asarray(emb)):
            raise ValueError("load_hf_weights: the model ties its embeddings, but lm_head.weight differs from "
                             "model.embed_tokens.weight")
    own = model.state_dict()
    state, unexpected = {}, []
    for name, value in tensors.items():
        try:
            key = our_name(name)
        except ValueError:
            key = None
        if key in own:
            state[key] = value
        else:
            unexpected.append(name)
    missing = [hf_name(k) for k in own if k not in state]
    wrong = [f"{hf_name(k)}: file {tuple(np.shape(v))} vs model {tuple(own[k].shape)}"
             for k, v in state.items() if tuple(np.shape(v)) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{label}: {names}" for label, names in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong)) if names]
        raise ValueError("load_hf_weights: " + "; ".join(parts))
    model.load_state_dict(state)          # checks again and copies everything, or nothing
