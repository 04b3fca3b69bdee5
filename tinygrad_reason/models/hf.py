"""Hugging Face Llama, Qwen2, Qwen3, Qwen3-MoE, dense DeepSeek-V3 and GPT-2 checkpoints as our Transformer.

config_from_hf reads a `config.json` dict (for the Llama family either transformers 5's
`rope_parameters` form or the older top-level `rope_theta` / `rope_scaling`) and refuses, naming the
field, anything our transformer would compute differently: another activation, sliding-window layers,
partial or unsupported RoPE, attention dropout, quantized weights; for GPT-2 also attention scaled by
layer index or not at all, cross-attention, unequal dropouts. A key the dict leaves out takes the
default of transformers' config class for that model type, as from_pretrained would, except the
sizes, which must be given.

Qwen3-MoE is Qwen3 with nn/moe.py's MoE MLP (softmax router, no shared experts): num_experts,
num_experts_per_tok, moe_intermediate_size, norm_topk_prob, router_aux_loss_coef, decoder_sparse_step
and mlp_only_layers become the moe_* fields. Its experts are stored stacked, mlp.experts.gate_up_proj
(E, 2 hidden, d: each expert's gate then up) and mlp.experts.down_proj (E, d, hidden): split here.

DeepSeek-V3 is the Llama block with nn/mla.py's multi-head latent attention (attention="mla": q_lora_rank,
kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim, v_head_dim, rope_interleave become the mla_* fields;
its attention parameter names are transformers'). Only configs whose every layer is dense
(first_k_dense_replace >= num_hidden_layers): DeepSeek's MoE (sigmoid scores with a correction bias,
group-limited top-k, routed_scaling_factor) is not nn/moe.py's; yarn RoPE (and its softmax mscale) is
refused too.

GPT-2's GELU is the tanh approximation (gelu_new): TransformerConfig.gelu_approximate="tanh".

checkpoint_layout says which tensors a checkpoint for a model holds (HF names, shapes in the file) and
which of our parameters each fills: one to one for the Llama family (hf_name / our_name translate the
names), while GPT-2 stores its projections as Conv1D weights (in, out), transposed here, and q, k, v
fused in one c_attn tensor, split here. load_hf_weights copies a HF state dict (name -> array) into a
model, all or nothing; models/hf_folder.py loads a checkpoint folder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..nn import Transformer, TransformerConfig

MODEL_TYPES = ("llama", "qwen2", "qwen3", "qwen3_moe", "deepseek_v3", "gpt2")

# transformers' class defaults (LlamaConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig) for the keys that
# change the math
_DEFAULTS = {
    "llama": dict(num_key_value_heads=None, head_dim=None, attention_bias=False, mlp_bias=False),
    "qwen2": dict(num_key_value_heads=32, head_dim=None),
    "qwen3": dict(num_key_value_heads=32, head_dim=128, attention_bias=False),
    # Qwen3MoeConfig has no head_dim field: hidden_size // num_attention_heads unless config.json gives one
    "qwen3_moe": dict(num_key_value_heads=4, head_dim=None, attention_bias=False, num_experts=128,
                      num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=False,
                      router_aux_loss_coef=0.001, decoder_sparse_step=1, mlp_only_layers=None),
    "deepseek_v3": dict(num_key_value_heads=None, attention_bias=False, q_lora_rank=1536, kv_lora_rank=512,
                        qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, rope_interleave=True,
                        n_routed_experts=256, first_k_dense_replace=3),
}
_COMMON_DEFAULTS = dict(hidden_act="silu", rms_norm_eps=1e-6, tie_word_embeddings=False, attention_dropout=0.0,
                        rope_theta=10000.0, use_sliding_window=False, sliding_window=4096, max_window_layers=28)
_REQUIRED = ("vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size")


def _fail(field: str, value, why: str):
    raise ValueError(f"config_from_hf: {field}={value!r}: {why}")


def config_from_hf(hf: dict) -> TransformerConfig:
    """Our TransformerConfig for a Hugging Face config.json dict of model_type llama, qwen2, qwen3, qwen3_moe,
    deepseek_v3 (every layer dense) or gpt2."""
    if not isinstance(hf, dict):
        raise ValueError(f"config_from_hf: a config.json dict is needed, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        _fail("model_type", model_type, f"supported are {MODEL_TYPES}")
    if hf.get("quantization_config") is not None:
        _fail("quantization_config", hf["quantization_config"], "quantized checkpoints are not supported")
    if model_type == "deepseek_v3":
        return _deepseek_v3_config(hf)
    return _gpt2_config(hf) if model_type == "gpt2" else _llama_config(hf, model_type)


def model_from_hf(hf: dict, dtype=np.float32) -> Transformer:
    """A Transformer (random weights) of the Hugging Face config."""
    return Transformer(config_from_hf(hf), dtype)


# GPT2Config's defaults for the keys that change the math, and the aliases it accepts (attribute_map)
_GPT2_DEFAULTS = dict(n_inner=None, activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                      layer_norm_epsilon=1e-5, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                      reorder_and_upcast_attn=False, add_cross_attention=False, tie_word_embeddings=True)
_GPT2_ALIASES = dict(n_embd="hidden_size", n_positions="max_position_embeddings", n_head="num_attention_heads",
                     n_layer="num_hidden_layers")
# transformers' ACT2FN names for the two GELUs we compute: erf (exact) and the tanh approximation
_GPT2_GELUS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def _gpt2_config(hf: dict) -> TransformerConfig:
    """GPT-2: learned positions, pre-norm LayerNorm with biases, GELU MLP, biases everywhere, attention
    scaled by 1/sqrt(head_dim), lm_head tied by default. reorder_and_upcast_attn is accepted: it only
    moves the scaling before the product and upcasts to float32, the same function in float32."""
    hf = dict(hf)
    for name, alias in _GPT2_ALIASES.items():
        if hf.get(name) is None and hf.get(alias) is not None:
            hf[name] = hf[alias]
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if hf.get(k) is None]
    if missing:
        raise ValueError(f"config_from_hf: the gpt2 config has no {missing}")
    get = {**_GPT2_DEFAULTS, **hf}.get
    act = get("activation_function")
    if act not in _GPT2_GELUS:
        _fail("activation_function", act, f"supported are {sorted(_GPT2_GELUS)}")
    if not get("scale_attn_weights"):
        _fail("scale_attn_weights", get("scale_attn_weights"), "unscaled attention scores are not supported")
    if get("scale_attn_by_inverse_layer_idx"):
        _fail("scale_attn_by_inverse_layer_idx", True, "attention scaled by 1 / (layer + 1) is not supported")
    if get("add_cross_attention"):
        _fail("add_cross_attention", True, "cross-attention layers are not supported")
    drops = {k: float(get(k)) for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop")}
    if len(set(drops.values())) > 1:
        _fail("attn_pdrop", drops, "TransformerConfig.dropout is one rate for the embeddings, the attention "
              "weights and the residual branches; these differ")
    d, heads = get("n_embd"), get("n_head")
    if d % heads:
        _fail("n_head", heads, f"must divide n_embd ({d})")
    cfg = TransformerConfig.gpt(vocab_size=get("vocab_size"), context_length=get("n_positions"), d_model=d,
                                n_layers=get("n_layer"), n_heads=heads, positions="learned",
                                mlp_hidden=get("n_inner") or 4 * d, tie_embeddings=bool(get("tie_word_embeddings")),
                                norm_eps=float(get("layer_norm_epsilon")), dropout=drops["attn_pdrop"],
                                gelu_approximate=_GPT2_GELUS[act])
    return cfg


def _swiglu_family_get(hf: dict, model_type: str):
    """The config's lookup with transformers' defaults, after the checks every SwiGLU family shares:
    the sizes are given, silu gates the MLP, no attention-only dropout."""
    missing = [k for k in _REQUIRED if hf.get(k) is None]
    if missing:
        raise ValueError(f"config_from_hf: the {model_type} config has no {missing}")
    get = {**_COMMON_DEFAULTS, **_DEFAULTS[model_type], **hf}.get
    if get("hidden_act") != "silu":
        _fail("hidden_act", get("hidden_act"), "the SwiGLU MLP here gates with silu only")
    if get("attention_dropout"):
        _fail("attention_dropout", get("attention_dropout"), "dropout on the attention weights alone is not "
              "expressible (TransformerConfig.dropout also drops the residual branches)")
    return get


def _llama_config(hf: dict, model_type: str) -> TransformerConfig:
    """Llama, Qwen2, Qwen3 and Qwen3-MoE: RoPE, RMSNorm, SwiGLU."""
    get = _swiglu_family_get(hf, model_type)
    if model_type == "qwen3_moe":      # Qwen3MoeModel's sliding-window mask, when on, covers every layer
        if get("use_sliding_window"):
            _fail("use_sliding_window", True, "sliding-window attention is not supported, only full causal attention")
    elif model_type != "llama":        # LlamaModel has no sliding window; the Qwen models read these
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
        qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias, qk_norm=model_type in ("qwen3", "qwen3_moe"),
        tie_embeddings=bool(get("tie_word_embeddings")), norm_eps=float(get("rms_norm_eps")), **_rope(hf, get),
        **(_moe(hf, get) if model_type == "qwen3_moe" else {}))


def _deepseek_v3_config(hf: dict) -> TransformerConfig:
    """DeepSeek-V3 with every layer dense: the Llama block with multi-head latent attention."""
    get = _swiglu_family_get(hf, "deepseek_v3")
    layers = get("num_hidden_layers")
    if get("n_routed_experts") and get("first_k_dense_replace") < layers:
        _fail("first_k_dense_replace", get("first_k_dense_replace"),
              f"layers from it on ({layers} layers) are DeepSeek's mixture of experts (sigmoid scores with a "
              "correction bias, group-limited top-k, routed_scaling_factor), which is not supported: only "
              "every layer dense (first_k_dense_replace >= num_hidden_layers)")
    n_heads = get("num_attention_heads")
    return TransformerConfig.llama(
        vocab_size=get("vocab_size"), context_length=get("max_position_embeddings"), d_model=get("hidden_size"),
        n_layers=layers, n_heads=n_heads, n_kv_heads=get("num_key_value_heads") or n_heads,
        mlp_hidden=get("intermediate_size"), bias=bool(get("attention_bias")), mlp_bias=False,
        tie_embeddings=bool(get("tie_word_embeddings")), norm_eps=float(get("rms_norm_eps")), **_rope(hf, get),
        attention="mla", mla_q_rank=get("q_lora_rank"), mla_kv_rank=get("kv_lora_rank"),
        mla_rope_dim=get("qk_rope_head_dim"), mla_nope_dim=get("qk_nope_head_dim"), mla_v_dim=get("v_head_dim"),
        mla_rope_interleave=bool(get("rope_interleave")))


def _moe(hf: dict, get) -> dict:
    """Our moe_* fields of a Qwen3-MoE config (none with num_experts 0: every layer is dense there)."""
    experts = hf.get("num_experts", hf.get("num_local_experts", get("num_experts")))   # the config's alias
    if not experts:
        return {}
    return dict(moe_experts=int(experts), moe_top_k=int(get("num_experts_per_tok")),
                moe_hidden=int(get("moe_intermediate_size")), moe_norm_topk=bool(get("norm_topk_prob")),
                moe_aux_coef=float(get("router_aux_loss_coef")), moe_every=int(get("decoder_sparse_step")),
                moe_dense_layers=tuple(int(i) for i in get("mlp_only_layers") or ()))


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
    **{f"attn.{p}.{kind}": f"self_attn.{p}.{kind}" for p in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa",
                                                              "kv_b_proj") for kind in ("weight", "bias")},
    "attn.q_a_layernorm.weight": "self_attn.q_a_layernorm.weight",       # DeepSeek's latent attention (nn/mla.py)
    "attn.kv_a_layernorm.weight": "self_attn.kv_a_layernorm.weight",
    "attn.q_norm.weight": "self_attn.q_norm.weight", "attn.k_norm.weight": "self_attn.k_norm.weight",
    "attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.router.weight": "mlp.gate.weight",        # Qwen3-MoE's router (its experts: checkpoint_layout)
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


# ------------------------------------------------------------------ checkpoint layouts
@dataclass(frozen=True)
class HFTensor:
    """One tensor of a Hugging Face checkpoint: its shape in the file and the parameters of ours it
    fills. With several targets the (transposed) tensor is split along its first axis into them, in
    order (GPT-2's fused c_attn -> q, k, v); transpose: a Conv1D weight, stored (in, out). stacked:
    a 3-d tensor of one matrix per target (Qwen3-MoE's experts; gate_up_proj holds two per expert,
    gate then up, split in halves along its second axis)."""
    shape: tuple
    targets: tuple
    transpose: bool = False
    stacked: bool = False


@dataclass(frozen=True)
class Layout:
    """What a checkpoint for one model holds. tensors: HF name -> HFTensor, every one required.
    tied_head: (head name, embedding name) when the model ties its embeddings: the file may also hold
    the head, which must then equal the embedding. prefix: GPT2Model's own files (the original GPT-2
    checkpoint among them) name the tensors without GPT2LMHeadModel's "transformer." prefix; canonical()
    adds it. ignored: buffers older files hold that are no parameters (GPT-2's constant causal mask)."""
    tensors: dict
    tied_head: tuple | None = None
    prefix: str = ""
    ignored: str | None = None          # a regex over canonical names

    def canonical(self, name: str) -> str:
        if self.prefix and not name.startswith(self.prefix) and name != "lm_head.weight":
            return self.prefix + name
        return name

    def is_ignored(self, name: str) -> bool:
        return self.ignored is not None and re.fullmatch(self.ignored, self.canonical(name)) is not None

    def convert(self, name: str, array) -> list:
        """[(our name, array)] for the file's tensor `name` (canonical), views where possible."""
        spec = self.tensors[name]
        arr = np.asarray(array)
        if spec.transpose:
            arr = arr.T
        if spec.stacked:                  # (E, m * rows, cols) -> E * m matrices (rows, cols), in order
            return list(zip(spec.targets, arr.reshape(len(spec.targets), -1, arr.shape[-1])))
        if len(spec.targets) == 1:
            return [(spec.targets[0], arr)]
        parts = np.split(arr, len(spec.targets), axis=0)      # equal sizes: GPT-2 has no GQA
        return list(zip(spec.targets, parts))


def checkpoint_layout(model: Transformer) -> Layout:
    """The Hugging Face layout of a checkpoint for `model`, found from its config: the Llama family
    (RoPE, RMSNorm, SwiGLU) or GPT-2 (learned positions, LayerNorm, GELU, biases, plain multi-head)."""
    cfg, own = model.cfg, model.state_dict()
    if (cfg.positions, cfg.norm, cfg.mlp) == ("rope", "rmsnorm", "swiglu"):
        if cfg.moe_experts and cfg.attention == "mla":
            raise ValueError("checkpoint_layout: DeepSeek-V3 checkpoints are read with every layer dense only "
                             "(its mixture of experts is not nn/moe.py's)")
        if cfg.moe_experts and (cfg.moe_router, cfg.moe_shared_experts, cfg.mlp_bias) != ("softmax", 0, False):
            raise ValueError("checkpoint_layout: a mixture-of-experts config matches Qwen3-MoE only with "
                             "moe_router='softmax', no shared experts and no MLP biases")
        experts = re.compile(r"blocks\.\d+\.mlp\.experts\.")
        tensors = {hf_name(k): HFTensor(tuple(v.shape), (k,)) for k, v in own.items() if not experts.match(k)}
        tensors.update(_qwen3_moe_experts(cfg))
        tied = ("lm_head.weight", "model.embed_tokens.weight") if model.lm_head is None else None
        return Layout(tensors, tied)
    gpt2 = (cfg.positions == "learned" and cfg.norm == "layernorm" and cfg.mlp == "gelu" and cfg.bias
            and cfg.qkv_bias and cfg.o_bias and cfg.mlp_bias and cfg.n_kv_heads == cfg.n_heads
            and cfg.head_dim * cfg.n_heads == cfg.d_model and not cfg.qk_norm and not cfg.moe_experts)
    if not gpt2:
        raise ValueError("checkpoint_layout: this TransformerConfig matches no Hugging Face family here (Llama / "
                         "Qwen: rope + rmsnorm + swiglu; GPT-2: learned positions + layernorm + gelu with biases)")
    return Layout(_gpt2_tensors(cfg, own), ("lm_head.weight", "transformer.wte.weight")
                  if model.lm_head is None else None, prefix="transformer.",
                  ignored=r"transformer\.h\.\d+\.attn\.(bias|masked_bias)")


def _qwen3_moe_experts(cfg: TransformerConfig) -> dict:
    """Each MoE layer's stacked expert tensors as Qwen3MoeExperts stores them."""
    out, e, h, d = {}, cfg.moe_experts, cfg.moe_hidden, cfg.d_model
    for i in range(cfg.n_layers):
        if cfg.is_moe_layer(i):
            ours, theirs = f"blocks.{i}.mlp.experts.", f"model.layers.{i}.mlp.experts."
            out[theirs + "gate_up_proj"] = HFTensor((e, 2 * h, d), tuple(f"{ours}{j}.{part}.weight" for j in range(e)
                                                                        for part in ("gate", "up")), stacked=True)
            out[theirs + "down_proj"] = HFTensor((e, d, h), tuple(f"{ours}{j}.down.weight" for j in range(e)),
                                                 stacked=True)
    return out


def _gpt2_tensors(cfg: TransformerConfig, own: dict) -> dict:
    d, inner = cfg.d_model, cfg.mlp_hidden
    out = {"transformer.wte.weight": HFTensor((cfg.vocab_size, d), ("tok_emb.weight",)),
           "transformer.wpe.weight": HFTensor((cfg.context_length, d), ("pos_emb.weight",)),
           "transformer.ln_f.weight": HFTensor((d,), ("norm.weight",)),
           "transformer.ln_f.bias": HFTensor((d,), ("norm.bias",))}
    for i in range(cfg.n_layers):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        qkv = tuple(f"{b}attn.{p}_proj" for p in "qkv")
        out.update({
            h + "ln_1.weight": HFTensor((d,), (b + "attn_norm.weight",)),
            h + "ln_1.bias": HFTensor((d,), (b + "attn_norm.bias",)),
            h + "attn.c_attn.weight": HFTensor((d, 3 * d), tuple(f"{p}.weight" for p in qkv), True),
            h + "attn.c_attn.bias": HFTensor((3 * d,), tuple(f"{p}.bias" for p in qkv)),
            h + "attn.c_proj.weight": HFTensor((d, d), (b + "attn.o_proj.weight",), True),
            h + "attn.c_proj.bias": HFTensor((d,), (b + "attn.o_proj.bias",)),
            h + "ln_2.weight": HFTensor((d,), (b + "mlp_norm.weight",)),
            h + "ln_2.bias": HFTensor((d,), (b + "mlp_norm.bias",)),
            h + "mlp.c_fc.weight": HFTensor((d, inner), (b + "mlp.fc.weight",), True),
            h + "mlp.c_fc.bias": HFTensor((inner,), (b + "mlp.fc.bias",)),
            h + "mlp.c_proj.weight": HFTensor((inner, d), (b + "mlp.proj.weight",), True),
            h + "mlp.c_proj.bias": HFTensor((d,), (b + "mlp.proj.bias",)),
        })
    if "lm_head.weight" in own:
        out["lm_head.weight"] = HFTensor((cfg.vocab_size, d), ("lm_head.weight",))
    targets = sorted(t for spec in out.values() for t in spec.targets)
    if targets != sorted(own):          # the layout must fill exactly the model's parameters
        raise AssertionError(f"GPT-2 layout vs model: {sorted(set(own) ^ set(targets))}")
    return out


def load_hf_weights(model: Transformer, tensors: dict) -> None:
    """Copy a Hugging Face state dict (name -> array) into `model`, cast to its dtype.

    With tied embeddings the file may also hold lm_head.weight; it must then equal the embedding.
    GPT-2's names may come with or without the "transformer." prefix; its attn.bias / masked_bias
    buffers are skipped. Any missing, unexpected or wrongly shaped tensor is an error naming them all
    (in HF names), and then nothing is copied."""
    layout = checkpoint_layout(model)
    given, twice = {}, []
    for name, value in tensors.items():
        if layout.is_ignored(name):
            continue
        key = layout.canonical(name)
        if key in given:                  # e.g. GPT-2's h.0.ln_1.weight beside transformer.h.0.ln_1.weight
            twice.append(f"{given[key][0]} and {name}")
        given[key] = (name, value)
    if layout.tied_head is not None and layout.tied_head[0] in given:
        head, emb = given.pop(layout.tied_head[0])[1], given.get(layout.tied_head[1])
        if emb is not None and not np.array_equal(np.asarray(head), np.asarray(emb[1])):
            raise ValueError(f"load_hf_weights: the model ties its embeddings, but {layout.tied_head[0]} differs "
                             f"from {layout.tied_head[1]}")
    unexpected = [orig for key, (orig, _) in given.items() if key not in layout.tensors]
    missing = [key for key in layout.tensors if key not in given]
    wrong = [f"{orig}: file {tuple(np.shape(v))} vs model {layout.tensors[key].shape}"
             for key, (orig, v) in given.items()
             if key in layout.tensors and tuple(np.shape(v)) != layout.tensors[key].shape]
    if missing or unexpected or wrong or twice:
        parts = [f"{label}: {names}" for label, names in (("missing", missing), ("unexpected", unexpected),
                                                          ("wrong shapes", wrong), ("given twice", twice)) if names]
        raise ValueError("load_hf_weights: " + "; ".join(parts))
    state = dict(pair for key, (_, v) in given.items() for pair in layout.convert(key, v))
    model.load_state_dict(state)          # checks again and copies everything, or nothing
