"""Our Transformer against Hugging Face's LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM,
through the library's mapping (tinygrad_reason/models/hf.py).

Tiny random configs are built in the test (nothing is downloaded): Llama (GQA), Llama with Llama 3.1
and with linear RoPE scaling, Llama with every bias, Qwen2 (q/k/v biases, none on o), Qwen3 (QK-norm,
explicit head_dim) and tied embeddings. For each, config_from_hf(config.to_dict()) must give the
expected TransformerConfig; HF's weights are re-drawn at O(1) scale (norm gains ~1 +- 0.2, biases
~0.5) and copied into ours by load_hf_weights; then the logits (and, in float32, the loss and every
gradient) must agree.

Tolerances, relative to the largest magnitude of the compared array:
  float32: 1e-5 for logits, 1e-4 for gradients.
  float64: 1e-6. A float64 HF model still computes in float32 in two places: LlamaRMSNorm (and
           Qwen's) casts its input to float32 (and back), and the rotary embedding computes the
           inverse frequencies, the RoPE angles and cos/sin in float32, scaled or not. So it is
           float32-accurate (observed ~4e-7 relative on the logits); ours is float64 throughout.
Skipped only when `transformers` is not installed (it is pinned in the `test` extra).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
rope_utils = pytest.importorskip("transformers.modeling_rope_utils")

from tinygrad_reason.models import config_from_hf, hf_name, load_hf_weights, our_name  # noqa: E402
from tinygrad_reason.nn import Transformer, TransformerConfig  # noqa: E402
from tinygrad_reason.ops.rope import rope_inverse_frequencies, rope_tables  # noqa: E402

torch.set_num_threads(1)   # tiny ops: extra intra-op threads only contend

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, CTX = 64, 32, 2, 4, 2, 96, 32
SIZES = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
             num_key_value_heads=KV_HEADS, intermediate_size=INTER, max_position_embeddings=CTX,
             rms_norm_eps=1e-6, hidden_act="silu")
OUR_SIZES = dict(vocab_size=VOCAB, context_length=CTX, d_model=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                 n_kv_heads=KV_HEADS, mlp_hidden=INTER, norm_eps=1e-6)
# Llama 3.1's scheme at toy size: head_dim 8 and theta 100 give wavelengths 6.3, 20, 63, 199; with
# original context 16 and factors 0.5 / 2 the bands are < 8 (kept), 8..32 (blended), > 32 (stretched),
# so each band holds a frequency (test_the_tiny_llama3_config_exercises_every_band)
LLAMA3 = dict(rope_type="llama3", factor=4.0, low_freq_factor=0.5, high_freq_factor=2.0,
              original_max_position_embeddings=16, rope_theta=100.0)
LINEAR = dict(rope_type="linear", factor=2.0, rope_theta=10000.0)

# kind: (transformers config class, its arguments beyond SIZES, the TransformerConfig we expect)
KINDS = {
    "llama": ("LlamaConfig", dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
              lambda: TransformerConfig.llama(**OUR_SIZES, rope_base=10000.0)),
    "llama_rope_llama3": ("LlamaConfig", dict(rope_parameters=LLAMA3),
                          lambda: TransformerConfig.llama(**OUR_SIZES, rope_base=100.0, rope_scaling="llama3",
                                                          rope_scaling_factor=4.0, rope_low_freq_factor=0.5,
                                                          rope_high_freq_factor=2.0, rope_original_context=16)),
    "llama_rope_linear": ("LlamaConfig", dict(rope_parameters=LINEAR),
                          lambda: TransformerConfig.llama(**OUR_SIZES, rope_scaling="linear",
                                                          rope_scaling_factor=2.0)),
    "llama_biases": ("LlamaConfig", dict(attention_bias=True, mlp_bias=True),
                     lambda: TransformerConfig.llama(**OUR_SIZES, qkv_bias=True, o_bias=True, mlp_bias=True)),
    "llama_tied": ("LlamaConfig", dict(tie_word_embeddings=True),
                   lambda: TransformerConfig.llama(**OUR_SIZES, tie_embeddings=True)),
    "qwen2": ("Qwen2Config", dict(rope_parameters=dict(rope_type="default", rope_theta=1e6), use_sliding_window=False),
              lambda: TransformerConfig.qwen2(**OUR_SIZES, rope_base=1e6)),
    "qwen3": ("Qwen3Config", dict(head_dim=12, attention_bias=False, use_sliding_window=False),
              lambda: TransformerConfig.qwen3(**OUR_SIZES, head_dim=12)),
}


def hf_config(kind: str):
    cls, extra, _ = KINDS[kind]
    cfg = getattr(transformers, cls)(**SIZES, **{"tie_word_embeddings": False, **extra})
    cfg._attn_implementation = "eager"
    return cfg


def hf_tensors(hf) -> dict:
    return {n: p.detach().numpy() for n, p in hf.named_parameters()}


def build(kind: str, dtype):
    """HF's model at O(1)-scale random weights and ours built from its config.json and loaded with its
    weights (test_sampling's greedy-decoding parity uses this too)."""
    torch.manual_seed(0)
    cfg = hf_config(kind)
    ours_cfg = config_from_hf(cfg.to_dict())
    hf = getattr(transformers, KINDS[kind][0].replace("Config", "ForCausalLM"))(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():   # O(1)-scale weights so every parameter visibly moves the logits
        for n, p in hf.named_parameters():
            if p.ndim == 2:
                scale = 0.5 if "embed" in n else p.shape[1] ** -0.5
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif n.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
    hf = hf.to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    ours = Transformer(ours_cfg).astype(dtype)
    load_hf_weights(ours, hf_tensors(hf))
    return hf, ours


def close(ours, ref, tol, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: {ours.shape} vs {ref.shape}"
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * np.abs(ref).max(), err_msg=what)


def ids_batch(b=2, t=20, seed=2):
    return np.random.default_rng(seed).integers(0, VOCAB, (b, t))


# ---------------------------------------------------------------- the model families
@pytest.mark.parametrize("kind", list(KINDS))
def test_config_from_hf_gives_the_expected_config(kind):
    assert config_from_hf(hf_config(kind).to_dict()) == KINDS[kind][2]()


@pytest.mark.parametrize("kind", list(KINDS))
def test_logits_match_hf_float32(kind):
    hf, ours = build(kind, np.float32)
    ids = ids_batch()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids)).logits.numpy()
    got = ours(ids).numpy()
    assert np.abs(ref).max() > 1.0          # O(1) logits: the comparison is not of near-zeros
    close(got, ref, 1e-5, f"{kind} float32 logits")


@pytest.mark.parametrize("kind", list(KINDS))
def test_logits_match_hf_float64(kind):
    hf, ours = build(kind, np.float64)
    ids = ids_batch()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids)).logits
    assert ref.dtype == torch.float64
    close(ours(ids).numpy(), ref.numpy(), 1e-6, f"{kind} float64 logits")


@pytest.mark.parametrize("kind", list(KINDS))
def test_loss_and_gradients_match_hf(kind):
    hf, ours = build(kind, np.float32)
    ids = ids_batch(seed=3)
    targets = np.random.default_rng(4).integers(0, VOCAB, ids.shape)
    logits = hf(input_ids=torch.from_numpy(ids)).logits
    ref_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.from_numpy(targets).reshape(-1))
    ref_loss.backward()
    loss = ours.loss(ids, targets)
    loss.backward()
    close(loss.item(), ref_loss.item(), 1e-5, "loss")
    ours_params = dict(ours.named_parameters())
    assert len(ours_params) == len(list(hf.parameters()))     # every parameter compared, a tied one once
    scale = max(float(p.grad.abs().max()) for p in hf.parameters())
    for n, p in hf.named_parameters():
        mine = ours_params[our_name(n)].grad.numpy()
        np.testing.assert_allclose(mine, p.grad.numpy(), rtol=1e-4, atol=1e-4 * scale, err_msg=f"grad of {n}")


def test_the_scaled_rope_changes_the_logits():
    """The scaled kinds are not the unscaled model in disguise: the same weights with rope_scaling
    switched off give other logits."""
    ids = ids_batch()
    for kind in ("llama_rope_llama3", "llama_rope_linear"):
        _, ours = build(kind, np.float64)
        plain = Transformer(TransformerConfig.llama(**OUR_SIZES, rope_base=ours.cfg.rope_base)).astype(np.float64)
        plain.load_state_dict(ours.state_dict())
        assert np.abs(ours(ids).numpy() - plain(ids).numpy()).max() > 1e-2, kind


def test_tied_embeddings_load_with_or_without_lm_head():
    """A tied HF state dict lists lm_head.weight as well (the same tensor); named_parameters does not."""
    hf, ours = build("llama_tied", np.float32)
    assert ours.lm_head is None and "lm_head.weight" in hf.state_dict()
    fresh = Transformer(ours.cfg)
    load_hf_weights(fresh, {n: t.numpy() for n, t in hf.state_dict().items()})
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value, err_msg=name)
    other = {n: t.numpy().copy() for n, t in hf.state_dict().items()}
    other["lm_head.weight"] += 1.0
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        load_hf_weights(fresh, other)


def test_left_padded_batch_matches_hf_attention_mask():
    """With an attention mask (and HF's default positions 0..T-1), the real positions agree.
    float32: HF's float64 eager path turns the all-padding query rows into NaN, which then leak
    into the real positions through zero attention weights (0 * NaN)."""
    hf, ours = build("qwen2", np.float32)
    ids = ids_batch(t=12, seed=5)
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    got = ours(ids, pad_mask=mask.astype(bool)).numpy()
    real = mask.astype(bool)
    assert np.all(np.isfinite(got))
    close(got[real], ref[real], 1e-5, "masked logits on real positions")


# ---------------------------------------------------------------- config_from_hf's refusals
def base_dict(kind="llama", **changes) -> dict:
    return {**hf_config(kind).to_dict(), **changes}


@pytest.mark.parametrize("changes, field", [
    (dict(model_type="mistral"), "model_type"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(attention_dropout=0.1), "attention_dropout"),
    (dict(rope_parameters=dict(rope_type="yarn", factor=2.0, rope_theta=10000.0)), "rope_type"),
    (dict(rope_parameters=dict(rope_type="dynamic", factor=2.0, rope_theta=10000.0)), "rope_type"),
    (dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0)), "rope_parameters"),
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor"),
    (dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    (dict(vocab_size=None), "vocab_size"),
])
def test_config_from_hf_refuses_what_we_cannot_express(changes, field):
    with pytest.raises(ValueError, match=field):
        config_from_hf(base_dict(**changes))


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_config_from_hf_refuses_sliding_window_layers(kind):
    cls = getattr(transformers, KINDS[kind][0])
    on = cls(**SIZES, use_sliding_window=True, sliding_window=8, max_window_layers=1).to_dict()
    assert "sliding_attention" in on["layer_types"]
    with pytest.raises(ValueError, match="layer_types.*sliding_attention"):
        config_from_hf(on)
    # an older config.json without layer_types: derived from use_sliding_window as transformers does
    legacy = {k: v for k, v in on.items() if k != "layer_types"}
    with pytest.raises(ValueError, match="use_sliding_window"):
        config_from_hf(legacy)
    # switched on but reaching no layer (max_window_layers >= layers): every layer is full attention
    config_from_hf({**legacy, "max_window_layers": LAYERS})
    config_from_hf(base_dict(kind))


def test_config_from_hf_reads_the_older_top_level_rope_fields():
    """Llama 3.1's config.json as published: rope_theta and rope_scaling at the top level."""
    legacy = dict(model_type="llama", **SIZES, rope_theta=500000.0, tie_word_embeddings=False,
                  rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=8192, rope_type="llama3"))
    want = TransformerConfig.llama(**OUR_SIZES, rope_base=500000.0, rope_scaling="llama3", rope_scaling_factor=8.0,
                                   rope_original_context=8192)
    assert config_from_hf(legacy) == want
    # transformers reads it the same way (into its rope_parameters form)
    assert config_from_hf(transformers.LlamaConfig(**{k: v for k, v in legacy.items() if k != "model_type"})
                          .to_dict()) == want


# ---------------------------------------------------------------- names and loading
def test_names_map_both_ways_for_every_parameter():
    hf = transformers.LlamaForCausalLM(hf_config("llama_biases"))
    qwen3 = transformers.Qwen3ForCausalLM(hf_config("qwen3"))
    names = [n for n, _ in hf.named_parameters()] + [n for n, _ in qwen3.named_parameters()]
    assert any("q_norm" in n for n in names) and any("mlp.up_proj.bias" in n for n in names)
    for n in names:
        assert hf_name(our_name(n)) == n
    assert our_name("model.layers.1.self_attn.q_proj.bias") == "blocks.1.attn.q_proj.bias"
    assert our_name("model.layers.0.post_attention_layernorm.weight") == "blocks.0.mlp_norm.weight"
    assert hf_name("blocks.0.mlp.gate.weight") == "model.layers.0.mlp.gate_proj.weight"
    for bad in ("model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.x.mlp.up_proj.weight", "score.weight"):
        with pytest.raises(ValueError, match="no tinygrad_reason name"):
            our_name(bad)
    with pytest.raises(ValueError, match="no Hugging Face name"):
        hf_name("pos_emb.weight")


def test_load_hf_weights_refuses_a_bad_state_dict_and_changes_nothing():
    hf, ours = build("qwen2", np.float32)
    before = {k: v.copy() for k, v in ours.state_dict().items()}
    tensors = {n: v + 1.0 for n, v in hf_tensors(hf).items()}     # any copy would show
    del tensors["model.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(ValueError, match=r"missing: \['model.layers.1.self_attn.k_proj.bias'\]"):
        load_hf_weights(ours, tensors)
    tensors["model.layers.1.self_attn.k_proj.bias"] = np.zeros(3, np.float32)
    tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(HIDDEN, np.float32)   # Qwen2 has none
    with pytest.raises(ValueError) as err:
        load_hf_weights(ours, tensors)
    assert "unexpected: ['model.layers.0.self_attn.o_proj.bias']" in str(err.value)
    assert "model.layers.1.self_attn.k_proj.bias: file (3,) vs model (16,)" in str(err.value)
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"{name} changed")


# ---------------------------------------------------------------- RoPE scaling against transformers
def hf_inverse_frequencies(rope_parameters: dict, head_dim: int, ctx: int = 131072) -> np.ndarray:
    cfg = transformers.LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                                   max_position_embeddings=ctx, rope_parameters=dict(rope_parameters))
    fn = rope_utils.ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]]
    inv_freq, attention_factor = fn(cfg)
    assert attention_factor == 1.0        # these two scalings leave cos / sin unscaled
    return inv_freq.double().numpy()


def ours_inverse_frequencies(p: dict, head_dim: int) -> np.ndarray:
    kw = dict(low_freq_factor=p["low_freq_factor"], high_freq_factor=p["high_freq_factor"],
              original_context=p["original_max_position_embeddings"]) if p["rope_type"] == "llama3" else {}
    return rope_inverse_frequencies(head_dim, p["rope_theta"], scaling=p["rope_type"], factor=p["factor"], **kw)


LLAMA31 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=8192, rope_theta=500000.0)


@pytest.mark.parametrize("params, head_dim", [
    (LLAMA31, 128), (LLAMA3, 8), (LINEAR, 64), (dict(LINEAR, factor=4.0, rope_theta=1e6), 128),
    (dict(LLAMA31, factor=32.0, rope_theta=10000.0, original_max_position_embeddings=4096), 64),
])
def test_rope_scaling_equals_transformers(params, head_dim):
    """transformers computes in float32 (torch.float): equal to float32 rounding."""
    want = hf_inverse_frequencies(params, head_dim)
    got = ours_inverse_frequencies(params, head_dim)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)
    unscaled = rope_inverse_frequencies(head_dim, params["rope_theta"])
    assert not np.allclose(got, unscaled)


@pytest.mark.parametrize("params, head_dim", [(LLAMA31, 128), (LLAMA3, 8)])
def test_the_llama3_configs_exercise_every_band(params, head_dim):
    """Kept (ratio 1), stretched (1 / factor) and blended (in between) frequencies all occur, so the
    comparison above checks each branch."""
    ratio = ours_inverse_frequencies(params, head_dim) / rope_inverse_frequencies(head_dim, params["rope_theta"])
    kept, stretched = np.isclose(ratio, 1.0), np.isclose(ratio, 1 / params["factor"])
    assert kept.any() and stretched.any() and (~kept & ~stretched).any()
    assert np.all(np.diff(ratio) <= 1e-12)         # slower frequencies are stretched more, never less


def test_rope_tables_default_is_unchanged_and_scaling_reaches_the_model():
    angles = np.outer(np.arange(CTX), 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8))
    angles = np.concatenate([angles, angles], axis=1)
    cos, sin = rope_tables(CTX, 8, dtype=np.float64)
    np.testing.assert_allclose(cos, np.cos(angles), rtol=0, atol=1e-15)
    np.testing.assert_allclose(sin, np.sin(angles), rtol=0, atol=1e-15)
    cfg = KINDS["llama_rope_llama3"][2]()
    want = rope_tables(CTX, 8, 100.0, np.float64, **cfg.rope_scaling_kwargs())
    assert not np.allclose(want[0], rope_tables(CTX, 8, 100.0, np.float64)[0])
    model = Transformer(cfg).astype(np.float64)     # astype rebuilds the tables: with the scaling too
    for got, table in zip(model._rope, want):
        np.testing.assert_array_equal(got, table)
    with pytest.raises(ValueError, match="scaling must be one of"):
        rope_tables(CTX, 8, scaling="yarn")
    with pytest.raises(ValueError, match="low_freq_factor < high_freq_factor"):
        rope_tables(CTX, 8, scaling="llama3", factor=8.0, low_freq_factor=4.0, high_freq_factor=4.0)


# ---------------------------------------------------------------- the config fields themselves
def test_old_config_dicts_build_the_same_models():
    """Dicts saved before the per-kind bias and RoPE-scaling fields existed load unchanged: the
    biases follow `bias` and there is no scaling."""
    gpt = dict(vocab_size=20, context_length=8, d_model=16, n_layers=1, n_heads=2, positions="learned+sinusoidal",
               bias=True)
    cfg = TransformerConfig.from_dict(gpt)
    assert (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias, cfg.rope_scaling) == (True, True, True, "none")
    names = set(Transformer(cfg).state_dict())
    assert {"blocks.0.attn.q_proj.bias", "blocks.0.attn.o_proj.bias", "blocks.0.mlp.fc.bias",
            "blocks.0.mlp.proj.bias", "blocks.0.attn_norm.bias"} <= names
    llama = TransformerConfig.from_dict(dict(vocab_size=20, context_length=8, d_model=16, n_layers=1, n_heads=2,
                                             positions="rope", norm="rmsnorm", mlp="swiglu", bias=False))
    assert not any(n.endswith("bias") for n in Transformer(llama).state_dict())
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg


def test_bias_flags_place_the_biases():
    cfg = TransformerConfig.gpt(vocab_size=20, context_length=8, d_model=16, n_layers=1, n_heads=2,
                                qkv_bias=False, mlp_bias=False)
    biases = {n for n in Transformer(cfg).state_dict() if n.endswith("bias")}
    # LayerNorm's bias follows `bias`
    assert biases == {"blocks.0.attn.o_proj.bias", "blocks.0.attn_norm.bias", "blocks.0.mlp_norm.bias", "norm.bias"}
    qwen2 = TransformerConfig.qwen2(vocab_size=20, context_length=8, d_model=16, n_layers=1, n_heads=2)
    biases = {n for n in Transformer(qwen2).state_dict() if n.endswith("bias")}
    assert biases == {f"blocks.0.attn.{p}.bias" for p in ("q_proj", "k_proj", "v_proj")}


def test_packed_qkv_path_with_qkv_bias_only_matches_the_per_head_path():
    """The classic GPT's one-product q/k/v path concatenates the biases: with q/k/v biases but no
    output bias it must equal the separate projections (here forced by a KV cache)."""
    cfg = TransformerConfig.gpt(vocab_size=20, context_length=8, d_model=16, n_layers=1, n_heads=2, o_bias=False)
    model = Transformer(cfg).astype(np.float64)
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    ids = rng.integers(0, 20, (2, 8))
    np.testing.assert_allclose(model(ids).numpy(), model(ids, cache=model.new_cache(2)).numpy(), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("changes, field", [
    (dict(rope_scaling="yarn"), "rope_scaling"),
    (dict(rope_scaling="linear", rope_scaling_factor=0.0), "rope_scaling_factor"),
    (dict(rope_scaling_factor=2.0), "rope_scaling_factor"),
    (dict(rope_scaling="linear", rope_scaling_factor=2.0, rope_original_context=4096), "rope_original_context"),
    (dict(rope_scaling="llama3", rope_scaling_factor=8.0, rope_low_freq_factor=4.0), "rope_low_freq_factor"),
    (dict(rope_scaling="llama3", rope_scaling_factor=8.0, rope_original_context=0), "rope_original_context"),
    (dict(rope_scaling="linear", rope_scaling_factor=2.0, positions="learned"), "rope_scaling"),
    (dict(qkv_bias="yes"), "qkv_bias"),
])
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        TransformerConfig.llama(vocab_size=20, context_length=8, d_model=16, n_layers=1, n_heads=2, **changes)
