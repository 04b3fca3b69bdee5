"""nn/mla.py, multi-head latent attention (DeepSeek-V2/V3), and the Transformer with attention="mla".

- gradcheck (float64) of the MLA module w.r.t. its input and every weight: with and without q
  compression, interleaved RoPE or not, biases, a padding mask; the expanded and the absorbed form.
- property (hypothesis): the absorbed attention (queries times kv_b_proj's key half, one shared key
  [c | kr], values c) equals the expanded one, value and every gradient, for random sizes; and
  decoding with the latent cache over random prefill / chunk splits equals the full forward.
- transformers' DeepseekV3ForCausalLM on tiny random configs with every layer dense
  (first_k_dense_replace = num_hidden_layers), eager attention, read by models/hf.py (config_from_hf,
  load_hf_weights): logits, the causal-LM loss and every parameter gradient, float32 and float64;
  greedy tokens of the project's cached decode path (generate: left padding, per-row positions,
  shared prompts, a row ending early) equal HF's.
- the cache holds r + dr numbers per token and layer; config validation and round trips.

Tolerances against transformers, relative to the largest magnitude of the compared array: float32
1e-5 (logits, loss), 1e-4 (gradients); float64 1e-6, because transformers computes its RMSNorms
(DeepseekV3RMSNorm casts to float32), the RoPE tables, the eager softmax and the loss
(logits.float()) in float32. With those parts patched to float64 (hf_in_float64) the float64 models
agree to 1e-12 (measured about 5e-15 on the logits, 4e-16 on the gradients).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import tinygrad_reason as tg
from tinygrad_reason.generate import SamplingConfig, generate
from tinygrad_reason.gradcheck import gradcheck
from tinygrad_reason.models import config_from_hf, our_name
from tinygrad_reason.models.hf import checkpoint_layout
from tinygrad_reason.nn import (KVCache, LatentCache, MultiHeadLatentAttention, Transformer,
                                TransformerConfig)
from tinygrad_reason.nn.attention import CausalSelfAttention
from tinygrad_reason.ops.rope import rope_tables
from tinygrad_reason.tensor import Tensor, grad

from test_hf_parity import close
from test_moe import data, fill, randomized_pair, tensor_slots

torch.set_num_threads(1)


def as_function(module, **kw):
    """module(x, **kw) as a function of (x, *its parameters), for gradcheck."""
    slots = tensor_slots(module)

    def fn(x, *weights):
        for (owner, attr), w in zip(slots, weights):
            setattr(owner, attr, w)
        return module(x, **kw)
    return fn


def small_mla(q_rank, interleave=True, bias=False, d=6, h=2, r=4, dr=2, dn=3, dv=2, seed=1):
    return fill(MultiHeadLatentAttention(d, h, r, dr, dn, dv, q_rank, bias, bias, 0.0, interleave, np.float64),
                np.random.default_rng(seed))


# ---------------------------------------------------------------- gradcheck
GRADCHECK_CASES = {
    "q_proj": dict(q_rank=None),
    "q_compressed": dict(q_rank=3),
    "q_compressed_biases_no_interleave": dict(q_rank=3, bias=True, interleave=False),
    "q_proj_wide_values": dict(q_rank=None, dv=7),          # v wider than q / k: the padding goes the other way
}


@pytest.mark.parametrize("absorbed", [False, True], ids=["expanded", "absorbed"])
@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_input_and_every_weight(case, absorbed):
    mla = small_mla(**GRADCHECK_CASES[case])
    rng = np.random.default_rng(2)
    b, t = 2, 4
    pad = np.ones((b, t), dtype=bool)
    pad[1, 3:] = False                                   # right padding: each query keeps a key
    x = Tensor(rng.standard_normal((b, t, 6)), requires_grad=True)
    params = [Tensor(p.numpy().copy(), requires_grad=True) for p in mla.parameters()]
    names = [n for n, _ in mla.named_parameters()]
    assert ("q_proj.weight" in names) == (GRADCHECK_CASES[case]["q_rank"] is None)
    tables = rope_tables(8, 2, dtype=np.float64)
    positions = np.array([[0, 1, 2, 3], [2, 3, 4, 5]])                # per-row positions (B, 1, T, dr)
    rope = (tables[0][positions][:, None], tables[1][positions][:, None])
    assert gradcheck(as_function(mla, rope_tables=rope, pad_mask=pad, absorbed=absorbed), [x, *params])


# ---------------------------------------------------------------- absorbed == expanded
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 2), t=st.integers(1, 6), h=st.integers(1, 3), r=st.integers(1, 5),
       dr=st.sampled_from([2, 4]), dn=st.integers(1, 4), dv=st.integers(1, 6),
       q_rank=st.sampled_from([None, 1, 3]), interleave=st.booleans(), bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_absorbed_attention_equals_the_expanded_one(b, t, h, r, dr, dn, dv, q_rank, interleave, bias, seed):
    mla = small_mla(q_rank, interleave, bias, d=5, h=h, r=r, dr=dr, dn=dn, dv=dv, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = Tensor(rng.standard_normal((b, t, 5)), requires_grad=True)
    rope = rope_tables(t, dr, dtype=np.float64)
    v = Tensor(rng.standard_normal((b, t, 5)))
    params = mla.parameters()
    outs = {}
    for absorbed in (False, True):
        out = mla(x, rope, absorbed=absorbed)
        outs[absorbed] = (out.numpy(), grad((out * v).sum(), [x, *params]))
    np.testing.assert_allclose(outs[True][0], outs[False][0], rtol=1e-11, atol=1e-12)
    for i, (a, e) in enumerate(zip(outs[True][1], outs[False][1])):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-10, atol=1e-11, err_msg=f"gradient {i}")


# ---------------------------------------------------------------- the latent cache == the full forward
def mla_config(**kw):
    base = dict(vocab_size=64, context_length=32, d_model=32, n_layers=2, n_heads=4, attention="mla",
                mla_kv_rank=16, mla_rope_dim=4, mla_nope_dim=8, mla_v_dim=6, mla_q_rank=12, mlp_hidden=48)
    return TransformerConfig.llama(**{**base, **kw})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(1, 15), min_size=0, max_size=4, unique=True), q_rank=st.sampled_from([None, 12]),
       interleave=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_cached_decoding_over_random_splits_equals_the_full_forward(cuts, q_rank, interleave, seed):
    """Prefill the first chunk, then the rest in chunks (single tokens among them) on the latent cache."""
    model = fill(Transformer(mla_config(mla_q_rank=q_rank, mla_rope_interleave=interleave)).astype(np.float64),
                 np.random.default_rng(seed))
    ids = np.random.default_rng(seed + 1).integers(0, 64, (2, 16))
    with tg.no_grad():
        full = model(ids).numpy()
        cache = model.new_cache(2, 16)
        assert isinstance(cache, LatentCache)
        bounds = [0, *sorted(cuts), 16]
        got = np.concatenate([model(ids[:, a:e], cache=cache, start=a).numpy()
                              for a, e in zip(bounds[:-1], bounds[1:])], axis=1)
    np.testing.assert_allclose(got, full, rtol=1e-10, atol=1e-10 * np.abs(full).max())


def test_the_cache_holds_the_latent_and_the_rope_key_only():
    """r + dr numbers per token and layer (here 16 + 4 = 20: 80 bytes in float32), against 2 H hd for
    MHA's KVCache (2 * 4 * 12 = 96: 384 bytes) and 2 Hkv hd for GQA with 2 key/value heads (192 bytes)."""
    cfg = mla_config()
    model = Transformer(cfg)
    cache = model.new_cache(3, 10)
    assert [a.shape for a in cache.k] == [(3, 1, 10, 20)] * 2 and cache.v == []
    per_token = sum(a.nbytes for a in cache.k) / (3 * 10)
    assert per_token == cache.bytes_per_token() == 2 * 20 * 4
    for kv_heads, expected in ((4, 2 * 4 * 12 * 4), (2, 2 * 2 * 12 * 4)):
        mha = TransformerConfig.llama(vocab_size=64, context_length=32, d_model=32, n_layers=2, n_heads=4,
                                      n_kv_heads=kv_heads, head_dim=12)
        kv = Transformer(mha).new_cache(3, 10)
        assert isinstance(kv, KVCache) and not isinstance(kv, LatentCache)
        assert sum(a.nbytes for a in kv.k + kv.v) / (3 * 10) == 2 * expected
    with pytest.raises(ValueError, match="exceed the cache length 10"):
        model(np.zeros((3, 11), dtype=np.int64), cache=cache)


# ---------------------------------------------------------------- transformers' DeepseekV3
try:
    import transformers
except ImportError:
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")

VOCAB, CTX = 64, 32
SIZES = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, first_k_dense_replace=2, n_routed_experts=4, num_experts_per_tok=2,
             n_shared_experts=1, moe_intermediate_size=16, n_group=1, topk_group=1, kv_lora_rank=16,
             qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=6, max_position_embeddings=CTX, rms_norm_eps=1e-5,
             tie_word_embeddings=False, rope_parameters=dict(rope_type="default", rope_theta=10000.0))
KINDS = {
    "q_compressed": dict(q_lora_rank=12),
    "q_proj": dict(q_lora_rank=None),
    "no_interleave_biases": dict(q_lora_rank=12, rope_interleave=False, attention_bias=True),
}


def build(kind: str, dtype):
    torch.manual_seed(0)
    cfg = transformers.DeepseekV3Config(**{**SIZES, **KINDS[kind]})
    cfg._attn_implementation = "eager"
    hf = transformers.DeepseekV3ForCausalLM(cfg)
    assert not any(isinstance(m.mlp, transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3MoE)
                   for m in hf.model.layers)                  # every layer dense: MLA is what is compared
    return randomized_pair(hf, cfg, dtype)


@needs_transformers
def test_config_from_hf_reads_the_mla_fields_and_refuses_deepseeks_moe():
    hf = transformers.DeepseekV3Config(**{**SIZES, **KINDS["no_interleave_biases"]}).to_dict()
    assert config_from_hf(hf) == mla_config(norm_eps=1e-5, bias=True, mlp_bias=False, mla_rope_interleave=False)
    assert config_from_hf({**hf, "q_lora_rank": None}).mla_q_rank is None
    with pytest.raises(ValueError, match="first_k_dense_replace=1: layers from it on .* mixture of experts"):
        config_from_hf({**hf, "first_k_dense_replace": 1})
    with pytest.raises(ValueError, match="rope_type='yarn'"):
        config_from_hf({**hf, "rope_parameters": dict(rope_type="yarn", rope_theta=1e4, factor=4.0)})
    with pytest.raises(ValueError, match="DeepSeek-V3 checkpoints are read with every layer dense only"):
        checkpoint_layout(Transformer(mla_config(moe_experts=2, moe_top_k=1)))
    assert our_name("model.layers.1.self_attn.kv_b_proj.weight") == "blocks.1.attn.kv_b_proj.weight"


@needs_transformers
@pytest.mark.parametrize("dtype, tol, gtol", [(np.float32, 1e-5, 1e-4), (np.float64, 1e-6, 1e-6)],
                         ids=["f32", "f64"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_logits_loss_and_every_gradient_match_hf(kind, dtype, tol, gtol):
    hf, ours = build(kind, dtype)
    ids, labels, targets = data()
    mask = np.ones_like(ids)
    mask[1, 15:] = 0                                     # right padding in the second row
    out = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), labels=torch.from_numpy(labels))
    out.loss.backward()
    pad = mask.astype(bool)
    got = ours(ids, pad_mask=pad)
    assert got.dtype == dtype and np.abs(out.logits.detach().numpy()).max() > 1.0
    close(got.numpy(), out.logits.detach().numpy(), tol, f"{kind} logits")
    loss = ours.loss(ids, targets, pad_mask=pad)
    close(loss.item(), out.loss.item(), tol, "loss")
    loss.backward()
    own = dict(ours.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in hf.parameters())
    assert {our_name(n) for n, _ in hf.named_parameters()} == set(own)         # every parameter compared
    for n, p in hf.named_parameters():
        mine = own[our_name(n)].grad
        assert mine is not None, n
        np.testing.assert_allclose(mine.numpy(), p.grad.numpy(), rtol=gtol, atol=gtol * scale, err_msg=f"grad of {n}")


def hf_in_float64(monkeypatch):
    """transformers' DeepseekV3 with its float32 islands (RMSNorm, the RoPE tables, the eager softmax)
    computed in the model's dtype: the same formulas, so a float64 model should agree to rounding."""
    m = transformers.models.deepseek_v3.modeling_deepseek_v3

    def rms_norm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rotary(self, x, position_ids):
        d, base = self.config.qk_rope_head_dim, self.config.rope_parameters["rope_theta"]
        freqs = position_ids[..., None].double() / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = torch.softmax(scores, dim=-1)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    monkeypatch.setattr(m.DeepseekV3RMSNorm, "forward", rms_norm)
    monkeypatch.setattr(m.DeepseekV3RotaryEmbedding, "forward", rotary)
    monkeypatch.setattr(m, "eager_attention_forward", eager)


@needs_transformers
@pytest.mark.parametrize("kind", list(KINDS))
def test_float64_matches_hf_to_rounding_without_its_float32_parts(kind, monkeypatch):
    """1e-12 (measured ~1e-15): the latent norms' eps (1e-6, not the model's 1e-5), the softmax
    scale, the RoPE layout and the padding mask are all exactly transformers'."""
    hf_in_float64(monkeypatch)
    hf, ours = build(kind, np.float64)
    ids, labels, targets = data(seed=5)
    mask = np.ones_like(ids)
    mask[0, 12:] = 0
    logits = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
    shifted = torch.from_numpy(labels[:, 1:])
    valid = shifted != -100                              # HF's loss casts the logits to float32: written out here
    picked = torch.log_softmax(logits[:, :-1], -1).gather(-1, shifted.clamp(min=0)[..., None])[..., 0]
    loss = -(picked * valid).sum() / valid.sum()
    loss.backward()
    pad = mask.astype(bool)
    close(ours(ids, pad_mask=pad).numpy(), logits.detach().numpy(), 1e-12, f"{kind} logits")
    mine = ours.loss(ids, targets, pad_mask=pad)
    close(mine.item(), loss.item(), 1e-12, "loss")
    mine.backward()
    own = dict(ours.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in hf.parameters())
    for n, p in hf.named_parameters():
        np.testing.assert_allclose(own[our_name(n)].grad.numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-12 * scale,
                                   err_msg=f"grad of {n}")


@needs_transformers
@pytest.mark.parametrize("kind", ["q_compressed", "q_proj"])
def test_cached_greedy_decoding_matches_hf(kind):
    """The project's decode path (generate: one latent cache for the batch, left-padded prompts with
    their own positions, two rows of one prompt sharing its forward) gives HF's greedy tokens; then
    again with a stop id that ends one row early, so the batch and its cache are cut to the rows left
    (LatentCache.select_rows)."""
    hf, ours = build(kind, np.float64)
    rng = np.random.default_rng(9)
    prompts = [rng.integers(0, VOCAB, 5).tolist(), rng.integers(0, VOCAB, 3).tolist()]
    prompts.append(prompts[0])
    ref = []
    with torch.no_grad():
        for prompt in prompts:
            seq = list(prompt)
            for _ in range(8):
                seq.append(int(hf(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
            ref.append(seq[len(prompt):])
    res = generate(ours, prompts, SamplingConfig(temperature=0, max_new_tokens=8))
    assert res.tokens == ref
    assert len({t for row in ref for t in row}) > 2                  # not one token repeated
    stop = next(t for t in ref[1][:6] if t not in ref[0])             # ends row 1 only
    res = generate(ours, prompts, SamplingConfig(temperature=0, max_new_tokens=8, stop_ids=(stop,)))
    assert res.tokens == [row[:row.index(stop) + 1] if stop in row else row for row in ref]
    assert len(res.tokens[1]) < 8 and len(res.tokens[0]) == 8


# ---------------------------------------------------------------- the config
def test_mha_configs_are_unchanged_and_mla_configs_round_trip():
    dense = TransformerConfig.llama(vocab_size=16, context_length=8, d_model=8, n_layers=2, n_heads=2)
    assert dense.attention == "mha" and dense.mla_kv_rank is None
    assert all(isinstance(b.attn, CausalSelfAttention) for b in Transformer(dense).blocks)
    for q_rank in (None, 12):
        cfg = mla_config(mla_q_rank=q_rank)
        assert cfg.head_dim == 12 and cfg.rope_dim == 4
        assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
        assert TransformerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        names = set(Transformer(cfg).state_dict())
        q = {"blocks.0.attn.q_proj.weight"} if q_rank is None else \
            {"blocks.0.attn.q_a_proj.weight", "blocks.0.attn.q_a_layernorm.weight", "blocks.0.attn.q_b_proj.weight"}
        assert {n for n in names if n.startswith("blocks.0.attn.")} == q | {
            "blocks.0.attn.kv_a_proj_with_mqa.weight", "blocks.0.attn.kv_a_layernorm.weight",
            "blocks.0.attn.kv_b_proj.weight", "blocks.0.attn.o_proj.weight"}
    assert mla_config(d_model=30).head_dim == 12                  # d_model need not divide by n_heads


@pytest.mark.parametrize("changes, message", [
    (dict(attention="gqa"), "attention must be one of"),
    (dict(attention="mha"), r"mla_q_rank=12 is only read with attention='mla'"),
    (dict(attention="mha", mla_q_rank=None, mla_kv_rank=None, mla_rope_dim=None, mla_nope_dim=None, mla_v_dim=None,
          mla_rope_interleave=False), "mla_rope_interleave=False is only read with attention='mla'"),
    (dict(mla_kv_rank=None), "mla_kv_rank must be a positive integer"),
    (dict(mla_v_dim=0), "mla_v_dim must be a positive integer"),
    (dict(mla_nope_dim=2.0), "mla_nope_dim must be a positive integer"),
    (dict(mla_q_rank=0), r"mla_q_rank must be a positive integer with attention='mla' \(or None\)"),
    (dict(mla_rope_dim=3), "mla_rope_dim must be even"),
    (dict(mla_rope_interleave=1), "mla_rope_interleave must be a bool"),
    (dict(positions="learned"), "attention='mla' needs positions='rope'"),
    (dict(rope_scaling="linear", rope_scaling_factor=2.0), "attention='mla' does not support rope_scaling"),
    (dict(n_kv_heads=2), "n_kv_heads must be None or n_heads"),
    (dict(qk_norm=True), "qk_norm is not supported with attention='mla'"),
    (dict(head_dim=8), r"head_dim must be None or mla_nope_dim \+ mla_rope_dim \(12\)"),
])
def test_bad_mla_configs_fail_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        mla_config(**changes)


def test_step_attention_is_refused_with_mla():
    with pytest.raises(ValueError, match="step_attention='mask' is not supported with attention='mla'"):
        mla_config(step_attention="mask", step_ids=dict())
